"""Runbook "Database Connection Pool Exhausted" / "High Error Rate" diagnosis: sessions and lock waits.

Read-only. `db.activity` answers the runbook's three queries at once (count, limit,
by state) plus who holds the connections and who is waiting; `db.locks` turns
`SELECT * FROM pg_locks WHERE NOT granted` into blocked/blocking pairs with the
blocking query and how long it has been running. Both read as database.admin_user,
because other roles' sessions are hidden from an ordinary role: without pg_read_all_stats
(part of pg_monitor) their backend_type, state and query read as NULL. Such rows are still
counted (a hidden row with a database and a role is a client session), reported as
`hidden`, and the result says which grant is missing; a count is never silently low.
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


def _state(session: dict[str, Any]) -> str:
    return "hidden" if session["hidden"] else session["state"] or "unknown"


@dataclass
class ActivityState:
    server: Server
    sessions: list[dict[str, Any]]
    threshold: Threshold


class Activity(Step[ActivityState]):
    """Client sessions by state, by user/application and database, the waiting ones, vs max_connections."""

    name = "db.activity"
    needs = ("database",)
    scope = "env"
    read_only = True

    def check(self, ctx: Context, target: EnvTarget) -> ActivityState:
        db = admin(ctx)
        return ActivityState(server(db), db.fetch(queries.ACTIVITY), ctx.env.thresholds.db_connections_pct)

    def plan(self, state: ActivityState) -> Plan:
        srv, sessions = state.server, state.sessions
        total = len(sessions)
        hidden = sum(1 for s in sessions if s["hidden"])
        used_pct = 100.0 * total / srv.max_connections
        by_state = dict(Counter(_state(s) for s in sessions).most_common())
        groups: dict[tuple[str, str, str], Counter[str]] = {}
        for s in sessions:
            key = (s["database"] or "", s["user"] or "", s["application"] or "")
            groups.setdefault(key, Counter())[_state(s)] += 1
        by_user: list[dict[str, Any]] = sorted(
            ({"database": d, "user": u, "application": a, "count": sum(c.values()), "states": dict(c)}
             for (d, u, a), c in groups.items()), key=lambda g: (-g["count"], g["user"]))
        waiting = [{"pid": s["pid"], "user": s["user"], "application": s["application"], "database": s["database"],
                    "wait_event": s["wait_event"], "waiting_s": round(s["state_age_s"] or 0, 1),
                    "query": s["query"]} for s in sessions if s["wait_event_type"] == "Lock"]
        data = {"total": total, "max_connections": srv.max_connections, "reserved": srv.reserved,
                "available": srv.max_connections - srv.reserved - total, "used_pct": round(used_pct, 1),
                "by_state": by_state, "by_user": by_user, "waiting": waiting,
                "warning_pct": state.threshold.warning, "critical_pct": state.threshold.critical,
                "role": srv.role, "read_all_stats": srv.read_all_stats, "hidden": hidden,
                "complete": srv.read_all_stats or not hidden, "note": None}
        severity = state.threshold.evaluate(used_pct)
        head = (f"{total}/{srv.max_connections} connections ({used_pct:.0f}%, {srv.reserved} reserved for "
                f"superusers): " + ", ".join(f"{k} {v}" for k, v in by_state.items())
                + (f"; {len(waiting)} waiting on a lock (db.locks)" if waiting else ""))
        if not srv.read_all_stats:
            data["note"] = srv.missing_grant(
                f"{hidden} session(s) of other roles show no state, query or lock wait (counted in the total "
                f"as 'hidden'; the waiting list covers only its own sessions)" if hidden else
                "other roles' sessions would show no state, query or lock wait")
            head += "\nINCOMPLETE: " + data["note"]
        table = text_table([(g["database"], g["user"], g["application"], g["count"],
                             ", ".join(f"{k} {v}" for k, v in g["states"].items())) for g in by_user],
                           ("database", "user", "application", "sessions", "states"))
        return Plan.nothing(head + ("\n" + table if by_user else ""), severity=severity, data=data)


@dataclass
class LocksState:
    pairs: list[dict[str, Any]]
    critical_s: float
    server: Server | None = None


class Locks(Step[LocksState]):
    """Blocked/blocking session pairs, with the blocking query and its age."""

    name = "db.locks"
    needs = ("database",)
    scope = "env"
    read_only = True

    def check(self, ctx: Context, target: EnvTarget) -> LocksState:
        db = admin(ctx)
        srv = server(db)
        return LocksState(db.fetch(queries.locks_sql(srv.version)), settings(ctx).lock_wait_critical_s, srv)

    def plan(self, state: LocksState) -> Plan:
        pairs: list[dict[str, Any]] = [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in p.items()}
                                       for p in state.pairs]
        note = None
        if state.server is not None and not state.server.read_all_stats:
            note = state.server.missing_grant("other roles' queries and lock waits show as NULL here")
        if not pairs:
            return Plan.nothing("no session is waiting for a lock held by another"
                                + (f"\nINCOMPLETE: {note}" if note else ""), severity=Severity.OK,
                                data={"pairs": [], "note": note})
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
        return Plan.nothing(f"{head}\n{table}" + (f"\nINCOMPLETE: {note}" if note else ""), severity=severity,
                            data={"pairs": pairs, "roots": roots, "critical_s": state.critical_s, "note": note})
