"""Runbook "Database Maintenance": VACUUM (ANALYZE) and ANALYZE, only on the tables that need it.

The runbook's `VACUUM ANALYZE;` treats every table of the database; here each table
is a target of its own (progress per table, one failure does not stop the rest) and
only the tables that need it are treated: dead rows over `database.vacuum_dead_pct`,
or never vacuumed/analyzed; stale statistics for ANALYZE. One table at a time, with a
maintenance-sized statement_timeout. A second run right after finds nothing to do.

VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock (reads and writes wait):
only with `full=True`, and on a production tier only inside the maintenance window (refused
in preflight, and again at apply if the window closed meanwhile). What it is for is giving a
table's empty space back, so it is chosen by *heap bloat* (pgstattuple, else the statistics
estimate; see estimate.py, tables under its size floor are never chosen on an estimate) over
`database.vacuum_full_bloat_pct`, or by dead rows over the VACUUM limit; never merely for
"never vacuumed". A table can be 60 % empty with no dead rows at all (after a VACUUM).
Cost: with pgstattuple, --full measures every table it may treat (pgstattuple_approx, which skips
all-visible pages); narrow a run on a large database with --table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from psycopg import sql

from ...errors import StepError, UsageError, VerificationFailed
from ...step import Change, Outcome, Plan, Step
from . import queries
from .common import (
    Nothing,
    Relation,
    Server,
    admin,
    display_name,
    human_bytes,
    missing_names,
    pct,
    relation_filter,
    server,
    settings,
    survey,
)
from .estimate import MIN_TRUSTED_PAGES, Bloat, Estimator, table_rows

if TYPE_CHECKING:
    from ...context import Context
    from ...inventory import Environment

__all__ = ["Analyze", "Vacuum", "full_vacuum_refusal"]


def full_vacuum_refusal(env: Environment, now: datetime | None = None) -> str | None:
    """Why VACUUM FULL may not start now (production tier, outside the window), or None."""
    if not env.is_production:
        return None
    moment = now or datetime.now(env.zone)
    window = env.maintenance.window
    if window.contains(moment):
        return None
    return (f"VACUUM FULL locks each table against reads and writes; on production ({env.name}) it runs only inside "
            f"the maintenance window {window.start}-{window.end} {env.timezone} "
            f"(now {moment.astimezone(env.zone):%H:%M})")


def _stamp(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _dead_pct(row: dict[str, Any]) -> float:
    rows = row["live"] + row["dead"]
    return 100.0 * row["dead"] / rows if rows else 0.0


def _fresh(ctx: Context, target: Relation) -> dict[str, Any] | None:
    rows = table_rows(admin(ctx), sql.SQL("n.nspname = %(schema)s AND c.relname = %(relname)s"),
                      {"schema": target.schema, "relname": target.relname})
    return rows[0] if rows else None


def _maintenance_error(target: Relation, what: str, exc: Exception) -> StepError:
    import psycopg

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return StepError(f"{target}: {what} could not get its lock within database.lock_timeout: {first}",
                         hint="db.locks shows who holds it; re-run when it is released")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return StepError(f"{target}: {what} was cancelled: {first}",
                         hint="raise database.maintenance_timeout in the inventory if the table is that large")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return StepError(f"{target}: {what} failed: {first}",
                         hint="database.admin_user must own the table (or be a superuser)")
    return StepError(f"{target}: {what} failed: {first}", hint=f"fix the cause above, then re-run db.{what.lower()}")


@dataclass(frozen=True)
class VacuumRules:
    dead_pct: float
    min_dead_rows: int
    everything: bool = False
    full: bool = False
    parallel: int | None = None
    full_bloat_pct: float = 30


@dataclass
class TableState:
    target: Relation
    row: dict[str, Any] | None
    rules: VacuumRules
    server: Server
    now: datetime
    horizon: dict[str, Any] | None = None
    bloat: Bloat | None = None  # heap bloat, measured for VACUUM FULL only


def vacuum_reasons(row: dict[str, Any], rules: VacuumRules, bloat: Bloat | None = None) -> list[str]:
    """Why this table needs VACUUM (ANALYZE), or with `full` VACUUM FULL; empty if it does not."""
    reasons = []
    if rules.full and bloat is not None and bloat.over(rules.full_bloat_pct):
        reasons.append(f"{bloat.pct:.0f}% heap bloat by {bloat.method}, ~{human_bytes(bloat.wasted_bytes)} "
                       "reclaimable")
    dead = _dead_pct(row)
    if dead > rules.dead_pct and row["dead"] >= rules.min_dead_rows:
        reasons.append(f"{dead:.0f}% dead rows ({row['dead']:,} of {row['live'] + row['dead']:,})")
    if not rules.full:  # a never-vacuumed table needs a VACUUM, not a rewrite
        if _stamp(row["last_vacuum"], row["last_autovacuum"]) is None:
            reasons.append("never vacuumed")
        if _stamp(row["last_analyze"], row["last_autoanalyze"]) is None:
            reasons.append("never analyzed")
    if not reasons and rules.everything:
        reasons.append("--all")
    return reasons


class Vacuum(Step[TableState | Nothing]):
    """VACUUM (ANALYZE) the tables with too many dead rows or never vacuumed/analyzed, one at a time."""

    name = "db.vacuum"
    needs = ("database",)
    scope = "env"
    max_parallel = 1

    def __init__(self, tables: list[str] | None = None, all: bool = False, full: bool = False,
                 parallel: int | None = None, dead_pct: float | None = None) -> None:
        if full and parallel:
            raise UsageError("VACUUM FULL cannot run in parallel", hint="drop --parallel or --full")
        if parallel is not None and parallel < 0:
            raise UsageError(f"--parallel must be 0 or more, not {parallel}")
        self.tables = tables
        self.everything = all
        self.full = full
        self.parallel = parallel
        self.dead_pct = dead_pct

    def rules(self, ctx: Context) -> VacuumRules:
        s = settings(ctx)
        return VacuumRules(self.dead_pct if self.dead_pct is not None else s.vacuum_dead_pct,
                           s.vacuum_min_dead_rows, self.everything, self.full, self.parallel, s.vacuum_full_bloat_pct)

    def preflight(self, ctx: Context) -> None:
        """No I/O: VACUUM FULL on production outside the window is refused before anything connects."""
        super().preflight(ctx)
        if self.full and not ctx.check and (refusal := full_vacuum_refusal(ctx.env)):
            raise UsageError(refusal, hint="run it inside the window, or use plain db.vacuum (no --full) now")

    def targets(self, ctx: Context) -> list[Relation | Nothing]:
        rules = self.rules(ctx)
        condition, params = relation_filter(self.tables)
        db = admin(ctx)
        rows = survey(ctx, "reading table statistics", lambda: table_rows(db, condition, params))
        missing_names(self.tables, rows, "table")
        if self.full:
            estimator = survey(ctx, "choosing the bloat method", lambda: Estimator(db))
            todo = [r for r in rows if vacuum_reasons(r, rules, survey(
                ctx, f"estimating heap bloat of {r['relname']}", partial(estimator.table, r)))]
        else:
            todo = [r for r in rows if vacuum_reasons(r, rules)]
        if not todo:
            where = settings(ctx).name
            if self.full:
                floor = human_bytes(MIN_TRUSTED_PAGES * estimator.block)
                return [Nothing(where, reason=f"no table needs VACUUM FULL: {len(rows)} table(s) checked "
                                              f"({estimator.method}), none over {rules.full_bloat_pct:g}% heap bloat "
                                              f"(tables under {floor} are left alone) or {rules.dead_pct:g}% dead "
                                              f"rows (min {rules.min_dead_rows})")]
            return [Nothing(where, reason=f"no table needs VACUUM: {len(rows)} table(s) checked, none over "
                                          f"{rules.dead_pct:g}% dead rows (min {rules.min_dead_rows}) or never "
                                          "vacuumed/analyzed")]
        return [Relation(display_name(r["schema"], r["relname"]), schema=r["schema"], relname=r["relname"])
                for r in todo]

    def check(self, ctx: Context, target: Relation | Nothing) -> TableState | Nothing:
        if isinstance(target, Nothing):
            return target
        db = admin(ctx)
        now = db.fetch("SELECT clock_timestamp() AS now")[0]["now"]
        horizon = db.fetch(queries.HORIZON)
        row = _fresh(ctx, target)
        bloat = Estimator(db).table(row) if self.full and row is not None else None
        return TableState(target, row, self.rules(ctx), server(db), now, horizon[0] if horizon else None, bloat)

    def plan(self, state: TableState | Nothing) -> Plan:
        if isinstance(state, Nothing):
            return Plan.nothing(state.reason)
        target, row, rules = state.target, state.row, state.rules
        if row is None:
            return Plan.nothing(f"{target} no longer exists")
        reasons = vacuum_reasons(row, rules, state.bloat)
        if not reasons:
            if rules.full and state.bloat is not None:
                return Plan.nothing(f"{target} does not need VACUUM FULL: heap bloat {pct(state.bloat.pct)} by "
                                    f"{state.bloat.method}"
                                    + ("" if state.bloat.trusted else
                                       f" (under {human_bytes(state.bloat.floor_bytes)}: not trusted)")
                                    + f", {_dead_pct(row):.0f}% dead rows")
            return Plan.nothing(f"{target} no longer needs VACUUM ({_dead_pct(row):.0f}% dead rows)")
        last = _stamp(row["last_vacuum"], row["last_autovacuum"])
        holder = state.horizon
        if (len(reasons) == 1 and "dead rows" in reasons[0] and holder and holder["since"] and last
                and last > holder["since"]):
            return Plan.nothing(
                f"{target}: {reasons[0]}, which VACUUM cannot remove yet: pid {holder['pid']} ({holder['user']}, "
                f"{holder['state']}) has held back the cleanup horizon since {holder['since']:%H:%M:%S %Z}, "
                f"before the last VACUUM ({last:%H:%M:%S %Z}); end that session (db.kill-long / db.kill-idle) "
                "and re-run", data={"horizon_pid": holder["pid"]})
        options = ["FULL", "ANALYZE"] if rules.full else ["ANALYZE"]
        note = ""
        if rules.parallel is not None:
            if state.server.version >= 130000:
                options.append(f"PARALLEL {int(rules.parallel)}")
            else:
                note = f" (PARALLEL ignored: PostgreSQL {state.server.major} has no parallel VACUUM)"
        before = {"live_rows": row["live"], "dead_rows": row["dead"], "dead_pct": round(_dead_pct(row), 1),
                  "heap_bytes": row["heap_bytes"],
                  "last_vacuum": str(last) if last else None}
        if state.bloat is not None:
            before["heap_bloat"] = state.bloat.as_dict()
        change = Change(f"VACUUM ({', '.join(options)}) {target}: {', '.join(reasons)}{note}", before=before)
        return Plan([change], data={"options": options, "checked_at": state.now.isoformat()})

    def apply(self, ctx: Context, target: Relation, plan: Plan) -> Outcome:
        import psycopg

        if self.full and (refusal := full_vacuum_refusal(ctx.env)):
            raise StepError(f"{target}: not started: {refusal}", hint="re-run in the next maintenance window")
        db = admin(ctx)
        options = sql.SQL(", ").join(sql.SQL(o) for o in plan.data["options"])  # fixed words built by plan()
        statement = sql.SQL("VACUUM ({}) {}").format(options, sql.Identifier(target.schema, target.relname))
        try:
            with db.connector.statement_timeout(settings(ctx).maintenance_timeout):
                db.execute(statement, summary=f"VACUUM ({', '.join(plan.data['options'])}) {target}")
        except psycopg.Error as exc:
            raise _maintenance_error(target, "VACUUM", exc) from None
        row = _fresh(ctx, target)
        if row is None:
            return Outcome()
        change = plan.changes[0]
        return Outcome(changes=(Change(change.summary, before=change.before, after={
            "live_rows": row["live"], "dead_rows": row["dead"], "heap_bytes": row["heap_bytes"]}),))

    def verify(self, ctx: Context, target: Relation, plan: Plan, outcome: Outcome) -> None:
        """The statistics must show this VACUUM; dead rows left over must not be pinned by an old transaction."""
        row = _fresh(ctx, target)
        if row is None:
            return
        checked_at = datetime.fromisoformat(plan.data["checked_at"])
        stamp = row["last_analyze"] if self.full else row["last_vacuum"]
        if stamp is None or stamp < checked_at:
            raise VerificationFailed(f"{target}: VACUUM returned but the statistics do not record it; PostgreSQL "
                                     "skips tables the role may not vacuum (database.admin_user must own it "
                                     "or be a superuser)")
        rules = self.rules(ctx)
        horizon = admin(ctx).fetch(queries.HORIZON)
        if (_dead_pct(row) > rules.dead_pct and row["dead"] >= rules.min_dead_rows and horizon
                and horizon[0]["since"] and horizon[0]["since"] < checked_at):
            h = horizon[0]
            raise VerificationFailed(f"{target}: {row['dead']:,} dead rows remain after VACUUM: pid {h['pid']} "
                                     f"({h['user']}, {h['state']}) has held back the cleanup horizon since "
                                     f"{h['since']:%H:%M:%S %Z}: {h['query']}")


# ---------------------------------------------------------------- analyze


@dataclass
class AnalyzeState:
    target: Relation
    row: dict[str, Any] | None
    stale_pct: float
    min_rows: int
    everything: bool
    now: datetime


def analyze_reasons(row: dict[str, Any], stale_pct: float, min_rows: int, everything: bool) -> list[str]:
    """Why this table's planner statistics are stale; empty if they are not."""
    if _stamp(row["last_analyze"], row["last_autoanalyze"]) is None:
        return ["never analyzed"]
    limit = min_rows + stale_pct / 100 * row["reltuples"]
    if row["modified"] > limit:
        return [f"{row['modified']:,} rows changed since the last ANALYZE (limit {limit:,.0f})"]
    return ["--all"] if everything else []


class Analyze(Step[AnalyzeState | Nothing]):
    """ANALYZE the tables whose planner statistics are stale or missing, one at a time."""

    name = "db.analyze"
    needs = ("database",)
    scope = "env"
    max_parallel = 1

    def __init__(self, tables: list[str] | None = None, all: bool = False,
                 stale_pct: float | None = None) -> None:
        self.tables = tables
        self.everything = all
        self.stale_pct = stale_pct

    def _limits(self, ctx: Context) -> tuple[float, int]:
        s = settings(ctx)
        return (self.stale_pct if self.stale_pct is not None else s.analyze_stale_pct), s.analyze_min_rows

    def targets(self, ctx: Context) -> list[Relation | Nothing]:
        stale_pct, min_rows = self._limits(ctx)
        condition, params = relation_filter(self.tables)
        rows = survey(ctx, "reading table statistics", lambda: table_rows(admin(ctx), condition, params))
        missing_names(self.tables, rows, "table")
        todo = [r for r in rows if analyze_reasons(r, stale_pct, min_rows, self.everything)]
        if not todo:
            return [Nothing(settings(ctx).name,
                            reason=f"statistics are fresh: {len(rows)} table(s) checked, none with more than "
                                   f"{stale_pct:g}% (+{min_rows}) rows changed since ANALYZE")]
        return [Relation(display_name(r["schema"], r["relname"]), schema=r["schema"], relname=r["relname"])
                for r in todo]

    def check(self, ctx: Context, target: Relation | Nothing) -> AnalyzeState | Nothing:
        if isinstance(target, Nothing):
            return target
        stale_pct, min_rows = self._limits(ctx)
        now = admin(ctx).fetch("SELECT clock_timestamp() AS now")[0]["now"]
        return AnalyzeState(target, _fresh(ctx, target), stale_pct, min_rows, self.everything, now)

    def plan(self, state: AnalyzeState | Nothing) -> Plan:
        if isinstance(state, Nothing):
            return Plan.nothing(state.reason)
        if state.row is None:
            return Plan.nothing(f"{state.target} no longer exists")
        reasons = analyze_reasons(state.row, state.stale_pct, state.min_rows, state.everything)
        if not reasons:
            return Plan.nothing(f"{state.target}: statistics are fresh")
        last = _stamp(state.row["last_analyze"], state.row["last_autoanalyze"])
        before = {"changed_rows": state.row["modified"], "last_analyze": str(last) if last else None}
        return Plan([Change(f"ANALYZE {state.target}: {', '.join(reasons)}", before=before)],
                    data={"checked_at": state.now.isoformat()})

    def apply(self, ctx: Context, target: Relation, plan: Plan) -> None:
        import psycopg

        db = admin(ctx)
        try:
            with db.connector.statement_timeout(settings(ctx).maintenance_timeout):
                db.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(target.schema, target.relname)),
                           summary=f"ANALYZE {target}")
        except psycopg.Error as exc:
            raise _maintenance_error(target, "ANALYZE", exc) from None

    def verify(self, ctx: Context, target: Relation, plan: Plan, outcome: Outcome) -> None:
        """The statistics must record this ANALYZE (writes racing it may already count as new changes)."""
        row = _fresh(ctx, target)
        if row is None:
            return
        if row["last_analyze"] is None or row["last_analyze"] < datetime.fromisoformat(plan.data["checked_at"]):
            raise VerificationFailed(f"{target}: ANALYZE returned but the statistics do not record it; PostgreSQL "
                                     "skips tables the role may not analyze (database.admin_user must own it "
                                     "or be a superuser)")
