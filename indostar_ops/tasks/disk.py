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


@task(help=common(changes=False, groups="comma-separated host groups (default: all)",
                  roots="comma-separated directories (default: the inventory's disk_report_roots)",
                  top="entries per list (default 10)", depth="directory depth for du (default 2)",
                  budget="seconds per host before du/find are stopped (default 20)"))
def report(c, env=None, check=False, json=False, groups="", roots="", top=10, depth=2, budget=20.0):
    """Largest directories and files under the configured roots (du | sort) within a time budget."""
    from ..cli import run_steps
    from ..steps.disk_report import DiskReport

    run_steps("disk.report", env=env, check=check, json=json,
              build=lambda _env: [DiskReport([g for g in groups.split(",") if g] or None,
                                             roots=[r for r in roots.split(",") if r] or None,
                                             top=int(top), depth=int(depth), budget_s=float(budget))])
