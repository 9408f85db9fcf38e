"""Runbook "Out of Disk Space": diagnosis."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(changes=False, groups="comma-separated host groups (default: all)"))
def check(c, env=None, check=False, json=False, groups=""):
    """Disk use on every host vs the thresholds; exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN."""
    from ..cli import run_steps
    from ..steps.disk import DiskCheck

    run_steps("disk.check", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [DiskCheck(groups=[g for g in groups.split(",") if g] or None)])
