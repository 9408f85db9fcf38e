"""Runbook "Out of Disk Space": log rotation and cleanup."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(groups="comma-separated host groups, each must exist (default: the web and workers groups "
                         "the environment has)"))
def install_rotation(c, env=None, check=False, json=False, yes=False, groups=""):
    """Install the runbook's logrotate policy on web and worker hosts (validated, backed up, only if different)."""
    from ..cli import run_steps
    from ..steps.logrotate import InstallLogrotate

    named = [g for g in groups.split(",") if g] or None
    run_steps("logs.install-rotation", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [InstallLogrotate(groups=named)])


@task(help=common(older_than="delete rotated logs older than this: 7d, 12h, 90m (default 7d)",
                  groups="comma-separated host groups (default: all)"))
def cleanup(c, env=None, check=False, json=False, yes=False, older_than="7d", groups=""):
    """Delete rotated logs (never active ones) older than --older-than under log_dirs only; preview with --check."""
    from ..cli import run_steps
    from ..steps.cleanup import CleanupRotatedLogs, parse_age

    run_steps("logs.cleanup", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [CleanupRotatedLogs(parse_age(older_than),
                                                     groups=[g for g in groups.split(",") if g] or None)])
