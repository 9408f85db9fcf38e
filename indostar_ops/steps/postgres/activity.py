"""Runbook "Database Connection Pool Exhausted" / "High Error Rate" diagnosis: sessions and lock waits.

Read-only. `db.activity` answers the runbook's three queries at once (count, limit,
by state) plus who holds the connections and who is waiting; `db.locks` turns
`SELECT * FROM pg_locks WHERE NOT granted` into blocked/blocking pairs with the
blocking query and how long it has been running. Both read as database.admin_user,
because other roles' query texts are hidden from an ordinary role.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...severity import Severity
from ...step import Plan, Step
from . import queries
from .common import Server, admin, server, settings, shorten, text_table

if TYPE_CHECKING:
    from ...context import Context
    from ...inventory import Threshold
    from ...step import EnvTarget

__all__ = ["Activity", "Locks", "age"]


def age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


@dataclass
class ActivityState:
    server: Server
    sessions: list[dict[str, Any]]
    threshold: Threshold


class Activity(Step[ActivityState]):
    """Client sessions by state, by user/application and database, the waiting ones, vs max_connections."""

    name = "db.activity"
    scope = "env"
    read_only = True

    def check(self, ctx: Context, target: EnvTarget) -> ActivityState:
        db = admin(ctx)
        return ActivityState(server(db), db.fetch(queries.ACTIVITY), ctx.env.thresholds.db_connections_pct)

    def plan(self, state: ActivityState) -> Plan:
        srv, sessions = state.server, state.sessions
        total = len(sessions)
        used_pct = 100.0 * total / srv.max_connections
        by_state = dict(Counter(s["state"] or "unknown" for s in sessions).most_common())
        groups: dict[tuple[str, str, str], Counter[str]] = {}
        for s in sessions:
            key = (s["database"] or "", s["user"] or "", s["application"] or "")
            groups.setdefault(key, Counter())[s["state"] or "unknown"] += 1
        by_user: list[dict[str, Any]] = sorted(
            ({"database": d, "user": u, "application": a, "count": sum(c.values()), "states": dict(c)}
             for (d, u, a), c in groups.items()), key=lambda g: (-g["count"], g["user"]))
        waiting = [{"pid": s["pid"], "user": s["user"], "application": s["application"], "database": s["database"],
                    "wait_event": s["wait_event"], "waiting_s": round(s["state_age_s"] or 0, 1),
                    "query": s["query"]} for s in sessions if s["wait_event_type"] == "Lock"]
        data = {"total": total, "max_connections": srv.max_connections, "reserved": srv.reserved,
                "available": srv.max_connections - srv.reserved - total, "used_pct": round(used_pct, 1),
                "by_state": by_state, "by_user": by_user, "waiting": waiting,
                "warning_pct": state.threshold.warning, "critical_pct": state.threshold.critical}
        severity = state.threshold.evaluate(used_pct)
        head = (f"{total}/{srv.max_connections} connections ({used_pct:.0f}%, {srv.reserved} reserved for "
                f"superusers): " + ", ".join(f"{k} {v}" for k, v in by_state.items())
                + (f"; {len(waiting)} waiting on a lock (db.locks)" if waiting else ""))
        table = text_table([(g["database"], g["user"], g["application"], g["count"],
                             ", ".join(f"{k} {v}" for k, v in g["states"].items())) for g in by_user],
                           ("database", "user", "application", "sessions", "states"))
        return Plan.nothing(head + ("\n" + table if by_user else ""), severity=severity, data=data)


@dataclass
class LocksState:
    pairs: list[dict[str, Any]]
    critical_s: float


class Locks(Step[LocksState]):
    """Blocked/blocking session pairs, with the blocking query and its age."""

    name = "db.locks"
    scope = "env"
    read_only = True

    def check(self, ctx: Context, target: EnvTarget) -> LocksState:
        db = admin(ctx)
        return LocksState(db.fetch(queries.locks_sql(server(db).version)), settings(ctx).lock_wait_critical_s)

    def plan(self, state: LocksState) -> Plan:
        pairs: list[dict[str, Any]] = [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in p.items()}
                                       for p in state.pairs]
        if not pairs:
            return Plan.nothing("no session is waiting for a lock held by another", severity=Severity.OK,
                                data={"pairs": []})
        longest = max(p["waiting_s"] or 0 for p in pairs)
        severity = Severity.CRITICAL if longest >= state.critical_s else Severity.WARNING
        blocked = {p["blocked_pid"] for p in pairs}
        roots = sorted({p["blocking_pid"] for p in pairs} - blocked)
        head = (f"{len(blocked)} session(s) blocked, longest for {age(longest)}; blocking at the root: "
                + (", ".join(f"pid {pid}" for pid in roots) or "a cycle (deadlock in progress)"))
        table = text_table([(p["blocked_pid"], age(p["waiting_s"]), shorten(p["wanted"], 40), p["blocking_pid"],
                             p["blocking_state"], age(p["blocking_xact_age_s"]), shorten(p["blocking_query"], 50))
                            for p in pairs],
                           ("blocked", "waiting", "wants", "blocker", "state", "xact age", "blocking query"))
        return Plan.nothing(f"{head}\n{table}", severity=severity,
                            data={"pairs": pairs, "roots": roots, "critical_s": state.critical_s})
