"""Runbook "Out of Disk Space": temp-file cleanup, without the runbook's `rm -rf` of everything under /tmp."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(older_than="delete files older than this: 7d, 12h, 90m (default 7d)",
                  groups="comma-separated host groups (default: all)"))
def cleanup(c, env=None, check=False, json=False, yes=False, older_than="7d", groups=""):
    """Delete files older than --older-than under the inventory's tmp_dirs only; preview with --check."""
    from ..cli import run_steps
    from ..steps.cleanup import CleanupTempFiles, parse_age

    run_steps("tmp.cleanup", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [CleanupTempFiles(parse_age(older_than),
                                                   groups=[g for g in groups.split(",") if g] or None)])
