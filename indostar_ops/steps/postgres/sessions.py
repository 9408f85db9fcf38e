"""Runbook "Database Connection Pool Exhausted" / "High Error Rate": end idle or long-running sessions.

The runbook's queries terminate every idle (or long-active) session on the server,
including other applications', replication and superusers'. Here only client
sessions of the application's own role (database.user) in its own database
(database.name) qualify; never this tool's sessions, never a superuser's or a
replication role's. Each session is a target of its own, pinned by pid *and*
backend start, and is terminated only if it is still in the very idle period (or
query) we planned to end: a session that woke up in between is left alone.

On a production tier the list is shown and nothing is terminated without --yes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ...connectors.postgres import APPLICATION_NAME
from ...errors import ConfirmationRequired, StepError, UsageError
from ...poll import wait_until
from ...step import Change, Outcome, Plan, Step
from . import queries
from .activity import age
from .common import Backend, Nothing, admin, server, settings, shorten, survey

if TYPE_CHECKING:
    from ...context import Context

__all__ = ["KillIdle", "KillLong"]

Kind = Literal["idle", "long"]


@dataclass(frozen=True)
class Session(Backend):
    """A session to end; `spare` says why it is listed but left alone (over the --max cap)."""

    spare: str = ""


@dataclass
class SessionState:
    target: Session
    row: dict[str, Any] | None
    minutes: float


def _describe(row: dict[str, Any], kind: Kind) -> str:
    what = row["state"] if kind == "idle" else "running"
    who = f"{row['user']}@{row['client'] or 'local'}" + (f" ({row['application']})" if row["application"] else "")
    text = f"pid {row['pid']} {who}: {what} for {age(row['age_s'])}"
    return text + (f": {shorten(row['query'], 60)}" if row["query"] else "")


class _Terminate(Step[SessionState | Nothing]):
    kind: Kind
    scope = "env"
    destructive = True
    idempotent = True

    def __init__(self, minutes: float | None = None) -> None:
        if minutes is not None and minutes <= 0:
            raise UsageError(f"--minutes must be positive, not {minutes}")
        self.minutes = minutes

    def _minutes(self, ctx: Context) -> float:
        if self.minutes is not None:
            return self.minutes
        s = settings(ctx)
        return s.idle_minutes if self.kind == "idle" else s.long_query_minutes

    def _params(self, ctx: Context, **extra: Any) -> dict[str, Any]:
        s = settings(ctx)
        return {"database": s.name, "role": s.user, "ours": APPLICATION_NAME,
                "seconds": self._minutes(ctx) * 60, **extra}

    def _cap(self, ctx: Context) -> int | None:
        return None

    def targets(self, ctx: Context) -> list[Session | Nothing]:
        db = admin(ctx)
        rows = survey(ctx, "listing sessions", lambda: db.fetch(queries.sessions_sql(self.kind), self._params(ctx)))
        s = settings(ctx)
        minutes = self._minutes(ctx)
        if not rows:
            role = survey(ctx, "reading the application role", lambda: db.fetch(queries.ROLE, self._params(ctx)))
            if not role:
                return [Nothing(s.name, reason=f"role {s.user} (database.user) does not exist on this server")]
            if role[0]["rolsuper"] or role[0]["rolreplication"]:
                kind = "a superuser" if role[0]["rolsuper"] else "a replication role"
                return [Nothing(s.name, reason=f"role {s.user} (database.user) is {kind}: {self.name} never "
                                               "terminates such sessions (they may be replication, migrations or "
                                               "an operator's); end them by hand if you must")]
            if role[0]["hidden"]:
                raise StepError(f"{ctx.env.name}: {role[0]['hidden']} session(s) of role {s.user} in {s.name} are "
                                f"hidden from role {role[0]['me']}, so whether they are idle cannot be seen",
                                hint=f"read as a role granted pg_monitor and pg_signal_backend (or a member of "
                                     f"{s.user}): set database.admin_user")
            what = "idle" if self.kind == "idle" else "running a query"
            return [Nothing(s.name, reason=f"no session of role {s.user} in database {s.name} {what} for more "
                                           f"than {minutes:g} min")]
        cap = self._cap(ctx)
        if ctx.env.is_production and not ctx.check and not ctx.assume_yes:
            listing = "\n".join(f"  {_describe(r, self.kind)}" for r in rows[:cap])
            raise ConfirmationRequired(f"{self.name} would terminate {len(rows[:cap])} session(s) on production "
                                       f"{ctx.env.name}:\n{listing}",
                                       hint=f"re-run with --yes to terminate them: invoke {self.name} "
                                            f"--env {ctx.env.name} --yes")
        out: list[Session | Nothing] = []
        for i, row in enumerate(rows):
            spare = f"over the --max {cap} cap: left running" if cap is not None and i >= cap else ""
            out.append(Session(f"pid {row['pid']}", pid=row["pid"], backend_start=row["backend_start"], spare=spare))
        return out

    def check(self, ctx: Context, target: Session | Nothing) -> SessionState | Nothing:
        if isinstance(target, Nothing):
            return target
        rows = admin(ctx).fetch(queries.sessions_sql(self.kind, one=True),
                                self._params(ctx, pid=target.pid, backend_start=target.backend_start))
        return SessionState(target, rows[0] if rows else None, self._minutes(ctx))

    def plan(self, state: SessionState | Nothing) -> Plan:
        if isinstance(state, Nothing):
            return Plan.nothing(state.reason)
        row, target = state.row, state.target
        if row is None:
            return Plan.nothing(f"pid {target.pid} has ended or is no longer "
                                + ("idle" if self.kind == "idle" else "running the same query")
                                + f" past {state.minutes:g} min")
        if target.spare:
            return Plan.nothing(f"{_describe(row, self.kind)}; {target.spare}")
        since = row["state_change"] if self.kind == "idle" else row["query_start"]
        return Plan([Change(f"terminate {_describe(row, self.kind)}", destructive=True,
                            before={"pid": row["pid"], "user": row["user"], "application": row["application"],
                                    "client": row["client"], "state": row["state"], "age_s": round(row["age_s"], 1),
                                    "query": row["query"]})],
                    data={"pid": row["pid"], "since": since.isoformat(),
                          "backend_start": row["backend_start"].isoformat()})

    def apply(self, ctx: Context, target: Session, plan: Plan) -> Outcome:
        db = admin(ctx)
        params = {"pid": plan.data["pid"], "backend_start": datetime.fromisoformat(plan.data["backend_start"]),
                  "since": datetime.fromisoformat(plan.data["since"])}
        params |= {"role": settings(ctx).user}
        status = db.execute(queries.terminate_sql(self.kind, server(db).version), params,
                            summary=plan.changes[0].summary)
        if status.strip() == "SELECT 0":
            # not terminated: the session left the planned idle period / query, or the server refused
            if db.fetch(queries.still_planned_sql(self.kind), params):
                raise StepError(f"pid {target.pid}: pg_terminate_backend refused or did not finish for a session "
                                f"still {'idle' if self.kind == 'idle' else 'running that query'}",
                                hint="database.admin_user needs pg_signal_backend (or membership in "
                                     f"{settings(ctx).user}); the session was left running")
            return Outcome(reason=f"left pid {target.pid} alone: it "
                                  + ("woke up" if self.kind == "idle" else "finished that query")
                                  + " before it could be terminated",
                           changes=(replace(plan.changes[0], summary=f"left pid {target.pid} alone: it "
                                            + ("woke up" if self.kind == "idle" else "finished that query")
                                            + " before it could be terminated", after="kept"),),
                           data={"terminated": False})
        wait_until(ctx, f"pid {target.pid} to exit", lambda: db.fetch(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %(pid)s AND backend_start = %(backend_start)s", params),
            lambda rows: not rows, timeout=5, every=0.05, describe=lambda rows: "still listed" if rows else "gone")
        return Outcome(changes=(replace(plan.changes[0], after="terminated"),), data={"terminated": True})


class KillIdle(_Terminate):
    """Terminate the application's own sessions idle longer than N minutes (runbook: 10)."""

    name = "db.kill-idle"
    needs = ("database",)
    kind = "idle"


class KillLong(_Terminate):
    """Terminate the application's own queries running longer than N minutes (runbook: 5), at most --max."""

    name = "db.kill-long"
    needs = ("database",)
    kind = "long"

    def __init__(self, minutes: float | None = None, max: int | None = None) -> None:
        super().__init__(minutes)
        if max is not None and max < 1:
            raise UsageError(f"--max must be at least 1, not {max}")
        self.max = max

    def _cap(self, ctx: Context) -> int | None:
        return self.max if self.max is not None else settings(ctx).kill_long_max
