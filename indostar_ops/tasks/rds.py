"""Runbook "Planned Maintenance" step 2 (database snapshot): RDS snapshots, pruning, instance status."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(label="snapshot id suffix instead of the run id (a resumed run passes its run id)",
                  wait="wait until the snapshot is available, then verify (default; --no-wait to skip)",
                  timeout="seconds to wait (default aws.snapshot_wait_s, 3600)"))
def snapshot(c, env=None, check=False, json=False, yes=False, label="", wait=True, timeout=""):
    """Manual snapshot `<prefix>-<env>-<UTC date>-<run or label>`, tagged as ours; exists -> no-op."""
    from ..cli import run_steps
    from ..steps.aws.rds import RdsSnapshot
    from ._help import float_flag as _float

    run_steps("rds.snapshot", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [RdsSnapshot(label or None, wait=bool(wait),
                                              timeout=_float(timeout, "--timeout"))])


@task(help=common(changes=False))
def snapshots(c, env=None, check=False, json=False):
    """The instance's snapshots (ours, other manual ones, automated), newest first."""
    from ..cli import run_steps
    from ..steps.aws.rds import RdsSnapshots

    run_steps("rds.snapshots", env=env, check=check, json=json, build=lambda _env: [RdsSnapshots()])


@task(help=common(keep="how many of our newest snapshots to keep (default aws.snapshot_keep, 7)"))
def prune(c, env=None, check=False, json=False, yes=False, keep=""):
    """Delete our own tagged manual snapshots beyond the newest N; never automated or foreign ones."""
    from ..cli import run_steps
    from ..steps.aws.rds import RdsPrune
    from ._help import int_flag as _int

    run_steps("rds.prune", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [RdsPrune(_int(keep, "--keep"))])


@task(help=common(changes=False))
def status(c, env=None, check=False, json=False):
    """Instance state, storage used (vs thresholds.disk_pct), connections, CPU; exit 0/1/2/3 (Nagios)."""
    from ..cli import run_steps
    from ..steps.aws.rds import RdsStatus

    run_steps("rds.status", env=env, check=check, json=json, monitoring=True, build=lambda _env: [RdsStatus()])
