"""Runbook "Database Connection Pool Exhausted", long-term fix: size the application's pools.

The runbook's fix is "increase pool_size from 10 to 20"; whether that helps or makes
things worse depends on how many instances share the server. Every instance may open
pool_size + max_overflow connections, so the worst case is instances x that, and it
must fit in what the server leaves the application: max_connections, minus the
superuser reserve, minus what other clients were seen using, minus headroom for
operators and a rolling deploy (which briefly runs extra instances).

Read-only. The observed peak is sampled from pg_stat_activity over a few seconds
(or given with `peak=`, e.g. from the RDS DatabaseConnections metric).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...connectors.postgres import APPLICATION_NAME
from ...severity import Severity
from ...step import Plan, Step
from . import queries
from .common import Server, admin, server, settings

if TYPE_CHECKING:
    from ...context import Context
    from ...inventory import Threshold
    from ...step import EnvTarget

__all__ = ["PoolAdvice", "advise"]

SURGE = 0.25  # Kubernetes' default maxSurge: a rolling update runs up to 25 % more instances
HEADROOM = 0.10  # of usable connections, kept free for operators, migrations, monitoring

# Role and application name stay visible on the rows pg_read_all_stats would reveal, so hidden
# sessions (queries.CLIENT) are counted, as the application's or as other clients'.
_COUNT = f"""
SELECT count(*) FILTER (WHERE usename = %(role)s AND application_name <> %(ours)s) AS app, count(*) AS total,
       count(*) FILTER (WHERE backend_type IS NULL) AS hidden
FROM pg_stat_activity WHERE {queries.CLIENT}
"""


@dataclass
class PoolState:
    server: Server
    instances: int | None
    instances_from: str
    pool_size: int
    max_overflow: int
    app_peak: int
    others_peak: int
    samples: int
    threshold: Threshold
    hidden: int = 0


def advise(state: PoolState) -> dict[str, Any]:
    """The arithmetic, separate from the report: every figure the advice rests on."""
    srv, n = state.server, state.instances or 0
    usable = srv.max_connections - srv.reserved
    headroom = max(2, math.ceil(usable * HEADROOM))
    room = usable - state.others_peak  # what the application can actually get right now
    budget = room - headroom
    surge = math.ceil(n * SURGE)
    per_instance = state.pool_size + state.max_overflow
    cap = budget // (n + surge) if n else 0
    peak_per_instance = math.ceil(state.app_peak / n) if n else 0
    pool_size = min(cap, max(2, math.ceil(peak_per_instance * 1.25))) if cap > 0 else 0
    return {
        "instances": n, "instances_from": state.instances_from, "max_connections": srv.max_connections,
        "reserved": srv.reserved, "usable": usable, "others_peak": state.others_peak, "app_peak": state.app_peak,
        "samples": state.samples, "headroom": headroom, "rollout_surge": surge,
        "current": {"pool_size": state.pool_size, "max_overflow": state.max_overflow,
                    "worst_case": n * per_instance, "worst_case_in_rollout": (n + surge) * per_instance},
        "room": room, "exhaustible": n * per_instance > room,
        "exhaustible_in_rollout": (n + surge) * per_instance > room,
        "suggested": {"pool_size": pool_size, "max_overflow": max(cap - pool_size, 0), "per_instance": max(cap, 0),
                      "worst_case": n * max(cap, 0), "worst_case_in_rollout": (n + surge) * max(cap, 0)},
        "peak_pct": round(100.0 * (state.app_peak + state.others_peak) / srv.max_connections, 1),
        "role": srv.role, "read_all_stats": srv.read_all_stats, "hidden_sessions": state.hidden,
    }


class PoolAdvice(Step[PoolState]):
    """Suggest pool_size/max_overflow per instance; say whether the pools can exhaust max_connections."""

    name = "db.pool-advice"
    needs = ("database",)
    scope = "env"
    read_only = True

    def __init__(self, instances: int | None = None, peak: int | None = None, samples: int = 3,
                 interval: float = 1.0) -> None:
        self.instances = instances
        self.peak = peak
        self.samples = max(1, samples)
        self.interval = interval

    def _instances(self, ctx: Context) -> tuple[int | None, str]:
        if self.instances is not None:
            return self.instances, "--instances"
        platform = ctx.env.platform
        components = settings(ctx).pool_components
        if platform is None or not platform.replicas:
            return None, "unknown"
        counted = {c: platform.replicas[c] for c in components if c in platform.replicas}
        return sum(counted.values()), "platform.replicas " + ", ".join(f"{c}={v}" for c, v in counted.items())

    def check(self, ctx: Context, target: EnvTarget) -> PoolState:
        db = admin(ctx)
        s = settings(ctx)
        srv = server(db)
        app_peak = others_peak = hidden = 0
        for i in range(self.samples):
            if i:
                time.sleep(self.interval)  # a sampling interval, not a wait for a condition
            row = db.fetch(_COUNT, {"role": s.user, "ours": APPLICATION_NAME})[0]
            app_peak = max(app_peak, int(row["app"]))
            others_peak = max(others_peak, int(row["total"]) - int(row["app"]))
            hidden = max(hidden, int(row["hidden"]))
        if self.peak is not None:
            app_peak = self.peak
        instances, source = self._instances(ctx)
        return PoolState(srv, instances, source, s.pool_size, s.max_overflow, app_peak, others_peak,
                         self.samples, ctx.env.thresholds.db_connections_pct, hidden)

    def plan(self, state: PoolState) -> Plan:
        if not state.instances:
            return Plan.nothing("how many application instances share the database? set platform.replicas "
                                "(and database.pool_components) in the inventory, or pass --instances N",
                                severity=Severity.UNKNOWN, data={"instances_from": state.instances_from})
        a = advise(state)
        cur, sug = a["current"], a["suggested"]
        lines = [f"{a['instances']} instances ({a['instances_from']}) x (pool_size {cur['pool_size']} + "
                 f"max_overflow {cur['max_overflow']}) = up to {cur['worst_case']} connections; the server leaves "
                 f"the application {a['room']} (max_connections {a['max_connections']} - {a['reserved']} reserved "
                 f"- {a['others_peak']} other clients at peak)"]
        if a["exhaustible"]:
            severity = Severity.CRITICAL
            lines.append(f"the pools CAN exhaust the server at the current replica count "
                         f"({cur['worst_case']} > {a['room']})")
        elif a["exhaustible_in_rollout"]:
            severity = Severity.WARNING
            lines.append(f"the pools can exhaust the server during a rolling update "
                         f"(+{a['rollout_surge']} instance(s): {cur['worst_case_in_rollout']} > {a['room']})")
        else:
            severity = state.threshold.evaluate(a["peak_pct"])
            lines.append(f"the pools cannot exhaust the server, even during a rolling update "
                         f"({cur['worst_case_in_rollout']} <= {a['room']})")
        if sug["per_instance"] < 1:
            severity = Severity.CRITICAL
            lines.append("no room for even one connection per instance: raise max_connections or put PgBouncer "
                         "in front of the database")
        else:
            lines.append(f"suggested per instance: pool_size={sug['pool_size']} (observed peak "
                         f"{a['app_peak']} over {a['instances']} instance(s), +25%), max_overflow="
                         f"{sug['max_overflow']}: worst case {sug['worst_case_in_rollout']} during a rollout, "
                         f"leaving {a['headroom']} connections of headroom")
        if not state.server.read_all_stats:
            lines.append("NOTE: " + state.server.missing_grant(
                f"{state.hidden} session(s) of other roles were counted by role and application name only"))
        return Plan.nothing("\n".join(lines), severity=severity, data=a)
