"""Runbook "Out of Disk Space": log rotation and cleanup."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(groups="comma-separated host groups (default: web,workers)"))
def install_rotation(c, env=None, check=False, json=False, yes=False, groups="web,workers"):
    """Install the runbook's logrotate policy on web and worker hosts (validated, backed up, only if different)."""
    from ..cli import run_steps
    from ..steps.logrotate import InstallLogrotate

    run_steps("logs.install-rotation", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [InstallLogrotate(groups=[g for g in groups.split(",") if g])])
