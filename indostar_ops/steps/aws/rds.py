"""RDS: manual snapshots with deterministic ids, listing, pruning our own, instance status.

Runbook "Planned Maintenance" step 2 ("Create database snapshot"). A snapshot id is
`<prefix>-<env>-<UTC date>-<run or label>`, so a resumed run (the window passes its
run id as `label`) finds the snapshot it already started instead of taking a second
one. Snapshots are tagged as ours; `rds.prune` only ever deletes manual snapshots
carrying our tags for this environment and our id prefix, never automated or foreign ones.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...errors import StepError, UsageError, VerificationFailed
from ...poll import wait_until
from ...severity import Severity
from ...step import Change, EnvTarget, Outcome, Plan
from . import AwsStep, aws_id, our_tags, ours, paginate
from .errors import error_code

if TYPE_CHECKING:
    from ...context import Context

__all__ = ["RdsPrune", "RdsSnapshot", "RdsSnapshots", "RdsStatus", "snapshot_id"]

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,80}$")
POLL_EVERY: float | None = None  # seconds between polls (None: 15 s, 1 s for short waits); tests shorten it
_FAILED = {"failed", "deleted", "deleting", "incompatible-restore", "incompatible-parameters"}


def rds_instance(ctx: Context, step: str) -> str:
    db = ctx.env.database
    if db is None or not db.rds_instance:
        raise UsageError(f"{step}: environment {ctx.env.name!r} has no database.rds_instance",
                         hint=f"set database.rds_instance in inventory/{ctx.env.name}.yaml")
    return db.rds_instance


def snapshot_id(ctx: Context, label: str | None, when: datetime | None = None) -> str:
    """`<prefix>-<env>-<YYYYMMDD>-<label or run id>`, as RDS accepts it (letters, digits, single hyphens)."""
    assert ctx.env.aws is not None
    run = label or (ctx.journal.run_id if ctx.journal is not None else "adhoc")
    day = (when or datetime.now(UTC)).strftime("%Y%m%d")
    if label is None and re.match(r"^\d{8}T", run):  # the run's own date: a resume after midnight UTC finds it
        day = run[:8]
    return aws_id(ctx.env.aws.snapshot_prefix, ctx.env.name, day, run)


def _instance(ctx: Context, instance: str) -> dict[str, Any]:
    return dict(ctx.aws().client("rds").describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0])


def _snapshot(ctx: Context, ident: str) -> dict[str, Any] | None:
    try:
        found = ctx.aws().client("rds").describe_db_snapshots(DBSnapshotIdentifier=ident)["DBSnapshots"]
    except Exception as exc:
        if error_code(exc) in ("DBSnapshotNotFound", "DBSnapshotNotFoundFault"):
            return None
        raise
    return dict(found[0]) if found else None


def _summary(snap: dict[str, Any], env: str) -> dict[str, Any]:
    created = snap.get("SnapshotCreateTime")
    return {"id": snap["DBSnapshotIdentifier"], "type": snap.get("SnapshotType"), "status": snap.get("Status"),
            "created": created.isoformat() if isinstance(created, datetime) else created,
            "size_gib": snap.get("AllocatedStorage"), "ours": ours(snap.get("TagList"), env)}


class _RdsStep(AwsStep[Any]):
    needs = ("aws", "database")

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        rds_instance(ctx, self.name)

    def targets(self, ctx: Context) -> list[EnvTarget]:
        name = rds_instance(ctx, self.name)
        return [EnvTarget(name, kind="rds-instance", id=name)]


@dataclass(frozen=True)
class SnapshotState:
    instance: dict[str, Any]
    snapshot_id: str
    existing: dict[str, Any] | None


class RdsSnapshot(_RdsStep):
    """Manual RDS snapshot with a deterministic id (tagged as ours); waits until `available`."""

    name = "rds.snapshot"
    aws_calls = ("rds:DescribeDBInstances", "rds:DescribeDBSnapshots", "rds:CreateDBSnapshot",
                 "rds:AddTagsToResource")

    def __init__(self, label: str | None = None, wait: bool = True, timeout: float | None = None) -> None:
        self.label = label
        self.wait = wait
        self.timeout = timeout

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        if self.label is not None and not _LABEL.match(self.label):
            raise UsageError(f"rds.snapshot: label {self.label!r} must be letters, digits and hyphens (max 81)",
                             hint="e.g. --label before-upgrade")

    def check(self, ctx: Context, target: EnvTarget) -> SnapshotState:
        instance = _instance(ctx, target.name)
        ident = snapshot_id(ctx, self.label)
        return SnapshotState(instance, ident, _snapshot(ctx, ident))

    def plan(self, state: SnapshotState) -> Plan:
        inst = state.instance
        data = {"snapshot": state.snapshot_id, "instance": inst["DBInstanceIdentifier"],
                "instance_status": inst.get("DBInstanceStatus"), "size_gib": inst.get("AllocatedStorage")}
        if state.existing is not None:
            status = state.existing.get("Status")
            if self.wait and status != "available":  # a resumed run waits for the snapshot it already started
                return Plan([Change(f"wait for snapshot {state.snapshot_id} ({status}) to become available",
                                    before=status, after="available",
                                    params={"id": state.snapshot_id, "wait_only": True})],
                            data={**data, "status": status})
            return Plan.nothing(f"snapshot {state.snapshot_id} already exists ({status})",
                                data={**data, "status": status})
        if inst.get("DBInstanceStatus") not in ("available", "backing-up", "storage-optimization", "modifying"):
            raise StepError(f"RDS {inst['DBInstanceIdentifier']}: instance is {inst.get('DBInstanceStatus')}, "
                            "a snapshot needs it available",
                            hint="wait until it is available (invoke rds.status), then re-run")
        return Plan([Change(f"create snapshot {state.snapshot_id} of {inst['DBInstanceIdentifier']} "
                            f"({inst.get('AllocatedStorage')} GiB)", before=None, after=state.snapshot_id,
                            params={"id": state.snapshot_id})], data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        ident = plan.changes[0].params["id"]
        started = time.monotonic()
        data: dict[str, Any] = {"snapshot": ident, "status": plan.data.get("status")}
        if not plan.changes[0].params.get("wait_only"):
            created = ctx.aws().call("rds", "create_db_snapshot", summary=plan.changes[0].summary,
                                     DBSnapshotIdentifier=ident, DBInstanceIdentifier=target.name,
                                     Tags=our_tags(ctx.env.name))["DBSnapshot"]
            data["status"] = created.get("Status")
        if self.wait:
            assert ctx.env.aws is not None
            snap = wait_snapshot(ctx, ident, self.timeout or ctx.env.aws.snapshot_wait_s)
            data.update(status=snap.get("Status"), size_gib=snap.get("AllocatedStorage"))
        data["duration_s"] = round(time.monotonic() - started, 1)
        return Outcome(reason=f"snapshot {ident} {data['status']} after {data['duration_s']:g} s", data=data)

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        ident = plan.changes[0].params["id"]
        snap = _snapshot(ctx, ident)
        if snap is None:
            raise VerificationFailed(f"RDS {target.name}: snapshot {ident} does not exist after create",
                                     hint="look in the RDS console, then re-run (the id is the same)")
        if self.wait and snap.get("Status") != "available":
            raise VerificationFailed(f"RDS {target.name}: snapshot {ident} is {snap.get('Status')}, not available")


def wait_snapshot(ctx: Context, ident: str, timeout: float) -> dict[str, Any]:
    """Wait until the snapshot is `available` (boto3's db_snapshot_available acceptors, our poller)."""

    def probe() -> dict[str, Any]:
        snap = _snapshot(ctx, ident)
        if snap is None:
            raise StepError(f"RDS snapshot {ident}: disappeared while waiting for it",
                            hint="look at the instance's events in the RDS console")
        if snap.get("Status") in _FAILED:
            raise StepError(f"RDS snapshot {ident}: status {snap.get('Status')} while waiting for available",
                            hint="look at the instance's events in the RDS console, then re-run")
        return snap

    return wait_until(ctx, f"RDS snapshot {ident} available", probe, lambda s: s.get("Status") == "available",
                      timeout=timeout, every=POLL_EVERY or (15 if timeout > 120 else 1),
                      describe=lambda s: f"{s.get('Status')} {s.get('PercentProgress', 0)}%",
                      hint=f"the snapshot keeps going in AWS: re-run with the same label to wait for {ident} "
                      "(it is not taken twice), or look at the RDS console")


def _manual_snapshots(ctx: Context, instance: str) -> list[dict[str, Any]]:
    rds = ctx.aws().client("rds")
    snaps = list(paginate(rds, "describe_db_snapshots", "DBSnapshots", DBInstanceIdentifier=instance,
                          SnapshotType="manual"))
    for snap in snaps:
        if "TagList" not in snap:
            snap["TagList"] = rds.list_tags_for_resource(ResourceName=snap["DBSnapshotArn"])["TagList"]
    return snaps


class RdsSnapshots(_RdsStep):
    """List the instance's snapshots: ours (tagged), other manual ones, automated ones."""

    name = "rds.snapshots"
    read_only = True
    aws_calls = ("rds:DescribeDBSnapshots", "rds:ListTagsForResource")

    def check(self, ctx: Context, target: EnvTarget) -> list[dict[str, Any]]:
        rds = ctx.aws().client("rds")
        manual = _manual_snapshots(ctx, target.name)
        auto = list(paginate(rds, "describe_db_snapshots", "DBSnapshots", DBInstanceIdentifier=target.name,
                             SnapshotType="automated"))
        return [_summary(s, ctx.env.name) for s in manual + auto]

    def plan(self, state: list[dict[str, Any]]) -> Plan:
        state = sorted(state, key=lambda s: str(s["created"] or ""), reverse=True)
        n_ours = sum(1 for s in state if s["ours"])
        newest = ", ".join(f"{s['id']} ({s['type']}{', ours' if s['ours'] else ''}, {s['status']}, "
                           f"{str(s['created'] or '?')[:16]})" for s in state[:5])
        return Plan.nothing(f"{len(state)} snapshot(s), {n_ours} ours" + (f"; newest: {newest}" if newest else ""),
                            severity=Severity.OK, data={"snapshots": state})


@dataclass(frozen=True)
class PruneState:
    instance: str
    prefix: str
    keep: int
    snapshots: list[dict[str, Any]]


class RdsPrune(_RdsStep):
    """Delete our own tagged manual snapshots beyond the newest N (never automated or foreign ones)."""

    name = "rds.prune"
    destructive = True
    irreversible = "a deleted RDS snapshot cannot be recovered"
    aws_calls = ("rds:DescribeDBSnapshots", "rds:ListTagsForResource", "rds:DeleteDBSnapshot")

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        if self.keep is not None and self.keep < 1:
            raise UsageError("rds.prune: --keep must be at least 1 (the newest snapshot is never pruned)")

    def check(self, ctx: Context, target: EnvTarget) -> PruneState:
        assert ctx.env.aws is not None
        prefix = aws_id(ctx.env.aws.snapshot_prefix, ctx.env.name) + "-"
        return PruneState(target.name, prefix, self.keep or ctx.env.aws.snapshot_keep,
                          [_summary(s, ctx.env.name) for s in _manual_snapshots(ctx, target.name)])

    def plan(self, state: PruneState) -> Plan:
        candidates = [s for s in state.snapshots
                      if s["ours"] and s["type"] == "manual" and s["id"].startswith(state.prefix)
                      and s["status"] == "available"]
        keep = state.keep
        candidates.sort(key=lambda s: str(s["created"] or ""), reverse=True)
        kept, gone = candidates[:keep], candidates[keep:]
        others = len(state.snapshots) - len(candidates)
        data = {"kept": [s["id"] for s in kept], "deleted": [s["id"] for s in gone], "not_ours": others}
        if not gone:
            return Plan.nothing(f"{len(kept)} of our snapshots, keeping {keep}: nothing to prune"
                                f" ({others} other manual snapshot(s) never touched)", data=data)
        return Plan([Change(f"delete snapshot {s['id']} (created {s['created']}, {s['size_gib']} GiB)",
                            before=s["id"], after=None, destructive=True, params={"id": s["id"]})
                     for s in gone], data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        for change in plan.changes:
            ctx.aws().call("rds", "delete_db_snapshot", summary=change.summary,
                           DBSnapshotIdentifier=change.params["id"])
        return Outcome(reason=f"deleted {len(plan.changes)} snapshot(s)")

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        left = [c.params["id"] for c in plan.changes
                if (s := _snapshot(ctx, c.params["id"])) is not None and s.get("Status") != "deleting"]
        if left:
            raise VerificationFailed(f"RDS {target.name}: snapshot(s) still present: {', '.join(left)}")


class RdsStatus(_RdsStep):
    """Instance state, storage used vs thresholds.disk_pct, connections and CPU (CloudWatch, last 15 minutes)."""

    name = "rds.status"
    read_only = True
    aws_calls = ("rds:DescribeDBInstances", "cloudwatch:GetMetricStatistics")

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        inst = _instance(ctx, target.name)
        cw = ctx.aws().client("cloudwatch")
        end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)  # whole periods up to now
        metrics: dict[str, float | None] = {}
        for metric, stat in (("DatabaseConnections", "Maximum"), ("FreeStorageSpace", "Minimum"),
                             ("CPUUtilization", "Average")):
            points = cw.get_metric_statistics(
                Namespace="AWS/RDS", MetricName=metric, StartTime=end - timedelta(minutes=15), EndTime=end,
                Period=300, Statistics=[stat],
                Dimensions=[{"Name": "DBInstanceIdentifier", "Value": target.name}])["Datapoints"]
            points.sort(key=lambda p: p["Timestamp"])
            metrics[metric] = points[-1][stat] if points else None
        return {"instance": target.name, "status": inst.get("DBInstanceStatus"), "engine": inst.get("Engine"),
                "disk_threshold": ctx.env.thresholds.disk_pct,
                "engine_version": inst.get("EngineVersion"), "class": inst.get("DBInstanceClass"),
                "storage_gib": inst.get("AllocatedStorage"), "multi_az": inst.get("MultiAZ"),
                "connections": metrics["DatabaseConnections"], "cpu_pct": metrics["CPUUtilization"],
                "free_storage_gib": None if metrics["FreeStorageSpace"] is None
                else round(metrics["FreeStorageSpace"] / 2**30, 1)}

    def plan(self, state: dict[str, Any]) -> Plan:
        state = dict(state)
        threshold = state.pop("disk_threshold")
        severities = [Severity.OK if state["status"] == "available" else Severity.WARNING]
        parts = [f"{state['status']}", f"{state['engine']} {state['engine_version']}", f"{state['class']}",
                 f"{state['storage_gib']} GiB"]
        if state["free_storage_gib"] is not None:
            used = 100.0 * (1 - state["free_storage_gib"] / state["storage_gib"]) if state["storage_gib"] else 0.0
            state["storage_used_pct"] = round(used, 1)
            severities.append(threshold.evaluate(used))
            parts.append(f"{state['free_storage_gib']} GiB free ({used:.0f} % used)")
        parts.append(f"connections {state['connections'] if state['connections'] is not None else 'no data'}")
        if state["cpu_pct"] is not None:
            parts.append(f"CPU {state['cpu_pct']:.0f}%")
        return Plan.nothing(", ".join(parts), severity=Severity.worst(severities), data=state)
