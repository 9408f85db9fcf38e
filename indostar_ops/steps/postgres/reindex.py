"""Runbook "Database Maintenance", reindex: rebuild only bloated indexes, without blocking writes.

The runbook's `REINDEX DATABASE` locks every table against writes for as long as
each of its indexes takes to rebuild, and rebuilds the healthy ones too. Here each
index whose estimated bloat is over `database.reindex_bloat_pct` (and that is at
least `reindex_min_mb`) is rebuilt with REINDEX INDEX CONCURRENTLY, one at a time,
reporting its size before and after. An INVALID index left by an interrupted
concurrent rebuild (`<index>_ccnew`) is dropped and its index rebuilt; a `_ccold`
leftover (the rebuild itself finished) is just dropped. There is deliberately no
database-wide mode.

Cost: with pgstattuple every candidate index (>= reindex_min_mb) is read once to measure
it, again just before its rebuild and once to verify; on a very large database narrow the
run with --table/--index. The statistics estimate reads only the catalogs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from psycopg import sql

from ...errors import StepError, UsageError, VerificationFailed
from ...step import Change, Outcome, Plan, Step
from . import queries
from .common import (
    Nothing,
    Relation,
    admin,
    display_name,
    human_bytes,
    missing_names,
    relation_filter,
    server,
    settings,
    survey,
)
from .estimate import MIN_TRUSTED_PAGES, Bloat, Estimator, index_rows

if TYPE_CHECKING:
    from ...context import Context, DatabaseSession

__all__ = ["Reindex"]

_LEFTOVER = re.compile(r"_cc(new|old)[0-9]*$")


@dataclass(frozen=True)
class ReindexRules:
    bloat_pct: float
    min_bytes: float


@dataclass
class IndexState:
    target: Relation
    row: dict[str, Any] | None
    bloat: Bloat | None
    leftovers: list[dict[str, Any]] = field(default_factory=list)
    rules: ReindexRules | None = None


def _size(db: DatabaseSession, schema: str, name: str) -> int | None:
    rows = db.fetch("SELECT pg_relation_size(c.oid) AS bytes FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s", (schema, name))
    return int(rows[0]["bytes"]) if rows else None


def _bloated(row: dict[str, Any], bloat: Bloat | None, rules: ReindexRules) -> bool:
    """Over the limit on a trusted estimate (never under the size floor, never by noise alone)."""
    return bloat is not None and bloat.over(rules.bloat_pct) and row["bytes"] >= rules.min_bytes


class Reindex(Step[IndexState | Nothing]):
    """REINDEX INDEX CONCURRENTLY the bloated (or invalid) indexes, one at a time, sizes before/after."""

    name = "db.reindex"
    needs = ("database",)
    scope = "env"
    max_parallel = 1

    def __init__(self, all_bloated: bool = False, tables: list[str] | None = None,
                 indexes: list[str] | None = None, bloat_pct: float | None = None) -> None:
        if not (all_bloated or tables or indexes):
            raise UsageError("say which indexes db.reindex may rebuild: --all-bloated (every bloated or invalid "
                             "index of the database), --table NAME or --index NAME",
                             hint="db.bloat lists the indexes and their bloat first")
        self.tables = tables
        self.indexes = indexes
        self.bloat_pct = bloat_pct

    def rules(self, ctx: Context) -> ReindexRules:
        s = settings(ctx)
        return ReindexRules(self.bloat_pct if self.bloat_pct is not None else s.reindex_bloat_pct,
                            s.reindex_min_mb * 1024 * 1024)

    def _rows(self, db: DatabaseSession) -> list[dict[str, Any]]:
        table_cond, table_params = relation_filter(self.tables, column="t.relname", param="tables")
        index_cond, index_params = relation_filter(self.indexes, param="indexes")
        return index_rows(db, sql.SQL("{} AND {}").format(table_cond, index_cond), table_params | index_params)

    def targets(self, ctx: Context) -> list[Relation | Nothing]:
        db = admin(ctx)
        if survey(ctx, "reading the server version", lambda: server(db)).version < 120000:
            raise StepError(f"{ctx.env.name}: REINDEX CONCURRENTLY needs PostgreSQL 12 or later",
                            hint="rebuild in the maintenance window instead (it blocks writes)")
        rules = self.rules(ctx)
        rows = survey(ctx, "reading the indexes", lambda: self._rows(db))
        if self.indexes:
            missing_names(self.indexes, rows, "index")
        estimator = survey(ctx, "choosing the bloat method", lambda: Estimator(db))
        chosen: dict[tuple[str, str], dict[str, Any]] = {}
        valid = {(r["schema"], r["table_name"], r["shape"]): r for r in rows if r["valid"]}
        for row in rows:
            if not row["valid"]:
                parent = valid.get((row["schema"], row["table_name"], row["shape"]))
                if _LEFTOVER.search(row["relname"]) and parent is not None:
                    row = parent
                chosen[(row["schema"], row["relname"])] = row
            elif row["bytes"] >= rules.min_bytes and _bloated(row, survey(
                    ctx, f"estimating bloat of {row['relname']}", partial(estimator.index, row)), rules):
                chosen[(row["schema"], row["relname"])] = row
        if not chosen:
            floor = human_bytes(MIN_TRUSTED_PAGES * estimator.block)
            return [Nothing(settings(ctx).name,
                            reason=f"no index to rebuild: {len(rows)} index(es) checked ({estimator.method}), none "
                                   f"invalid or over {rules.bloat_pct:g}% bloat (min {human_bytes(rules.min_bytes)}; "
                                   f"estimates for indexes under {floor} are not trusted)")]
        return [Relation(display_name(r["schema"], r["relname"]), schema=r["schema"], relname=r["relname"],
                         table=r["table_name"]) for r in chosen.values()]

    def check(self, ctx: Context, target: Relation | Nothing) -> IndexState | Nothing:
        if isinstance(target, Nothing):
            return target
        db = admin(ctx)
        rows = index_rows(db, sql.SQL("n.nspname = %(schema)s AND c.relname = %(relname)s"),
                          {"schema": target.schema, "relname": target.relname})
        if not rows:
            return IndexState(target, None, None, rules=self.rules(ctx))
        row = rows[0]
        leftovers = []
        if not _LEFTOVER.search(row["relname"]) or row["valid"]:
            leftovers = db.fetch(queries.INVALID_LEFTOVERS, {"schema": target.schema, "table": row["table_name"],
                                                              "shape": row["shape"]})
        bloat = Estimator(db).index(row) if row["valid"] else None
        return IndexState(target, row, bloat, leftovers, self.rules(ctx))

    def plan(self, state: IndexState | Nothing) -> Plan:
        if isinstance(state, Nothing):
            return Plan.nothing(state.reason)
        target, row, rules = state.target, state.row, state.rules
        assert rules is not None
        if row is None:
            return Plan.nothing(f"{target} no longer exists")
        name = display_name(row["schema"], row["relname"])
        size = human_bytes(row["bytes"])
        if not row["valid"] and _LEFTOVER.search(row["relname"]):
            # a leftover whose original index is gone (or it is the finished rebuild's old copy): just drop it
            return Plan([Change(f"DROP INDEX CONCURRENTLY {name}: invalid leftover of an interrupted "
                                "REINDEX CONCURRENTLY", before={"bytes": row["bytes"], "valid": False},
                                after=None, destructive=True)],
                        data={"drop": [row["relname"]], "rebuild": False})
        changes = [Change(f"DROP INDEX CONCURRENTLY {display_name(left['schema'], left['relname'])}: invalid "
                          "leftover of an interrupted REINDEX CONCURRENTLY", before={"bytes": left["bytes"]},
                          destructive=True) for left in state.leftovers]
        bloat = state.bloat
        if row["is_exclusion"]:
            shown = f"{bloat.pct:.0f}%" if bloat and bloat.pct is not None else "?"
            return Plan.nothing(f"{name} ({size}, bloat {shown}) backs an exclusion "
                                "constraint, which PostgreSQL cannot rebuild concurrently; REINDEX INDEX it in "
                                "the maintenance window (it blocks writes to the table)")
        drops = {"drop": [left["relname"] for left in state.leftovers]}
        if not row["valid"]:
            why = "INVALID (a failed concurrent build)"
        elif any("_ccnew" in left["relname"] for left in state.leftovers):
            why = "its concurrent rebuild was interrupted"
        elif _bloated(row, bloat, rules):
            assert bloat is not None and bloat.pct is not None
            why = f"{bloat.pct:.0f}% bloat by {bloat.method}, ~{human_bytes(bloat.wasted_bytes)} reclaimable"
        elif changes:  # only `_ccold` copies: the rebuild itself had finished
            return Plan(changes, data={**drops, "rebuild": False})
        else:
            pct = f"{bloat.pct:.0f}%" if bloat and bloat.pct is not None else "unknown"
            if bloat is not None and bloat.wasted_bytes is not None and not bloat.trusted:
                return Plan.nothing(f"{name} ({size}) is left alone: under {human_bytes(bloat.floor_bytes)} a bloat "
                                    f"estimate ({pct}) is mostly its last partial page, not bloat")
            return Plan.nothing(f"{name} ({size}) is not bloated: {pct} (limit {rules.bloat_pct:g}%, "
                                f"min {human_bytes(rules.min_bytes)})")
        changes.append(Change(f"REINDEX INDEX CONCURRENTLY {name} ({size}): {why}",
                              before={"bytes": row["bytes"], **(bloat.as_dict() if bloat else {"valid": False})}))
        return Plan(changes, data={**drops, "rebuild": True, "table": display_name(row["schema"], row["table_name"]),
                                   "relfilenode": row["relfilenode"]})

    def apply(self, ctx: Context, target: Relation, plan: Plan) -> Outcome | None:
        import psycopg

        db = admin(ctx)
        drops = list(plan.data["drop"])
        try:
            with db.connector.statement_timeout(settings(ctx).maintenance_timeout):
                for name in drops:
                    db.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                        sql.Identifier(target.schema, name)),
                        summary=f"DROP INDEX CONCURRENTLY {display_name(target.schema, name)}")
                if plan.data["rebuild"]:
                    db.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(
                        sql.Identifier(target.schema, target.relname)),
                        summary=f"REINDEX INDEX CONCURRENTLY {target}")
        except psycopg.Error as exc:
            raise self._failed(ctx, target, exc) from None
        if plan.data["rebuild"]:
            last = plan.changes[-1]
            after = _size(db, target.schema, target.relname)
            before = int(last.before["bytes"])
            shrink = f", -{100 * (before - after) / before:.0f}%" if after is not None and before else ""
            return Outcome(changes=(*plan.changes[:-1], replace(
                last, summary=f"{last.summary}; {human_bytes(before)} -> {human_bytes(after)}{shrink}",
                after={"bytes": after})))
        return None

    def verify(self, ctx: Context, target: Relation, plan: Plan, outcome: Outcome) -> None:
        """The leftovers are gone and the index was rebuilt (new relfilenode) and is valid.

        Not a re-estimate of its bloat: a freshly built index is as dense as a build makes it, and an
        estimate still over the limit right after a rebuild is the estimate's noise (see estimate.py),
        not a failed rebuild. The next run's plan judges it again, above the size floor only.
        """
        db = admin(ctx)
        present = {row["relname"] for row in db.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = ANY(%s)", (target.schema, list(plan.data["drop"])))}
        if present:
            raise VerificationFailed(f"{target}: invalid leftover(s) {', '.join(sorted(present))} still exist after "
                                     "DROP INDEX CONCURRENTLY", hint="db.locks; then re-run db.reindex")
        if not plan.data["rebuild"]:
            return
        rows = index_rows(db, sql.SQL("n.nspname = %(schema)s AND c.relname = %(relname)s"),
                          {"schema": target.schema, "relname": target.relname})
        if not rows:
            raise VerificationFailed(f"{target}: the index is gone after REINDEX INDEX CONCURRENTLY")
        row = rows[0]
        if not row["valid"] or row["relfilenode"] == plan.data["relfilenode"]:
            raise VerificationFailed(f"{target}: REINDEX INDEX CONCURRENTLY returned but the index was not replaced "
                                     f"(valid={row['valid']}, same relfilenode {row['relfilenode']})",
                                     hint="db.bloat shows it; re-run db.reindex for this index")

    def _failed(self, ctx: Context, target: Relation, exc: Exception) -> StepError:
        """Drop what our own interrupted rebuild left behind, then report; never leave an invalid copy silently."""
        import psycopg

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        detail = getattr(getattr(exc, "diag", None), "message_detail", None)
        first += f" ({detail})" if detail else ""
        db = admin(ctx)
        left: list[str] = []
        try:
            rows = index_rows(db, sql.SQL("n.nspname = %(schema)s AND c.relname = %(relname)s"),
                              {"schema": target.schema, "relname": target.relname})
            leftovers = db.fetch(queries.INVALID_LEFTOVERS, {"schema": target.schema, "table": rows[0]["table_name"],
                                                              "shape": rows[0]["shape"]}) if rows else []
            for item in leftovers:
                left.append(item["relname"])
                db.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                    sql.Identifier(target.schema, item["relname"])),
                    summary=f"drop {item['relname']} left by the failed rebuild")
                left.remove(item["relname"])
        except psycopg.Error:
            pass  # reported below: the next db.reindex run drops it
        tail = (f"; invalid leftover {', '.join(left)} remains (the next db.reindex run drops it)" if left else "")
        if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
            hint = "db.locks / db.activity show the long transaction it waited for; re-run when it has ended"
        elif isinstance(exc, psycopg.errors.InsufficientPrivilege):
            hint = "database.admin_user must own the table (or be a superuser)"
        elif isinstance(exc, psycopg.errors.UniqueViolation):
            hint = "the table holds duplicate keys for this unique index: remove them, then re-run db.reindex"
        else:
            hint = "fix the cause above, then re-run db.reindex"
        return StepError(f"{target}: REINDEX INDEX CONCURRENTLY failed: {first}{tail}", hint=hint)
