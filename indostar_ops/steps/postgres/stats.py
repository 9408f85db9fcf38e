"""Runbook "Slow Response Times" (pg_stat_statements) and "Database Maintenance" (check for bloat): reports.

Read-only. `db.slow-queries` picks the column names by server version (13 renamed
total_time/mean_time to *_exec_time) and, when the extension is not usable, says
exactly which of its two halves is missing and how to add it. `db.bloat` lists the
largest tables and indexes with their size and bloat (see `estimate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...connectors.postgres import MARK
from ...severity import Severity
from ...step import Plan, Step
from . import queries
from .common import (
    Server,
    admin,
    display_name,
    human_bytes,
    missing_names,
    pct,
    relation_filter,
    server,
    settings,
    shorten,
    text_table,
)
from .estimate import Estimator, index_rows, table_rows

if TYPE_CHECKING:
    from ...context import Context
    from ...inventory import Threshold
    from ...step import EnvTarget

__all__ = ["BloatReport", "SlowQueries", "enable_instructions"]


# ---------------------------------------------------------------- slow queries


@dataclass
class SlowState:
    server: Server
    extension: dict[str, Any]
    rows: list[dict[str, Any]] | None
    threshold: Threshold
    rds_instance: str | None
    error: str | None = None
    denied: str | None = None  # the server refused a read for lack of a grant: its message


def enable_instructions(ext: dict[str, Any], database: str, rds_instance: str | None) -> list[str]:
    """The steps still missing for pg_stat_statements, in order, as an operator would type them."""
    steps: list[str] = []
    if not ext["available"]:
        steps.append("install the PostgreSQL contrib modules on the server (Debian: the postgresql-NN package "
                     "ships them; RHEL: postgresqlNN-contrib)")
    if not ext["loaded"]:
        if rds_instance:
            steps.append(f"add pg_stat_statements to shared_preload_libraries in the DB parameter group of RDS "
                         f"instance {rds_instance}, then reboot the instance")
        elif ext["preload"] is None:  # this role may not read the setting: never suggest a value that drops libs
            steps.append("as a superuser: SHOW shared_preload_libraries; if pg_stat_statements is not listed, "
                         "ALTER SYSTEM SET shared_preload_libraries = <the libraries listed>, 'pg_stat_statements'; "
                         "then restart PostgreSQL (a reload is not enough)")
        else:
            current = [lib.strip() for lib in (ext["preload"] or "").split(",") if lib.strip()]
            value = ", ".join(f"'{lib}'" for lib in [*current, "pg_stat_statements"])
            steps.append(f"as a superuser: ALTER SYSTEM SET shared_preload_libraries = {value}; then restart "
                         "PostgreSQL (a reload is not enough), e.g. pg_ctlcluster <version> main restart")
    if not ext["schema"]:
        steps.append(f"connected to database {database} as a superuser: CREATE EXTENSION pg_stat_statements;")
    return steps


class SlowQueries(Step[SlowState]):
    """Top statements of the database by mean execution time (pg_stat_statements)."""

    name = "db.slow-queries"
    needs = ("database",)
    scope = "env"
    read_only = True

    def __init__(self, limit: int = 10) -> None:
        self.limit = limit

    def check(self, ctx: Context, target: EnvTarget) -> SlowState:
        import psycopg

        db = admin(ctx)
        srv = server(db)
        ext = db.fetch(queries.PG_STAT_STATEMENTS)[0]
        state = SlowState(srv, ext, None, ctx.env.thresholds.response_time_s, settings(ctx).rds_instance)
        # loaded is None when this role may not read shared_preload_libraries: reading the view tells
        if ext["schema"] and ext["loaded"] is not False:
            try:
                state.rows = db.fetch(queries.slow_queries_sql(srv.version, ext["schema"]),
                                      {"limit": self.limit, "mark": MARK.strip()})
            except psycopg.errors.ObjectNotInPrerequisiteState as exc:
                state.error = str(exc).strip().splitlines()[0]
            except psycopg.errors.InsufficientPrivilege as exc:
                state.denied = str(exc).strip().splitlines()[0]
        return state

    def plan(self, state: SlowState) -> Plan:
        srv = state.server
        if state.denied:
            reason = (f"role {srv.role} may not read pg_stat_statements in {srv.database}: {state.denied}; "
                      f"as a superuser (on RDS the master user): GRANT pg_monitor TO {srv.role}, or set "
                      "database.admin_user to a role granted pg_monitor")
            return Plan.nothing(reason, severity=Severity.UNKNOWN,
                                data={"enabled": None, "error": state.denied, "role": srv.role,
                                      "missing_grant": "pg_monitor", "server_version": srv.version})
        if state.rows is None:
            if state.error:
                state.extension = {**state.extension, "loaded": False}
            steps = enable_instructions(state.extension, srv.database, state.rds_instance)
            reason = (f"pg_stat_statements is not enabled for database {srv.database} (PostgreSQL {srv.major}); "
                      "to enable it:\n" + "\n".join(f"  {i}. {s}" for i, s in enumerate(steps, 1)))
            return Plan.nothing(reason, severity=Severity.UNKNOWN,
                                data={"enabled": False, "how_to_enable": steps, "server_version": srv.version})
        rows = [{**r, "mean_ms": round(r["mean_ms"], 3), "total_ms": round(r["total_ms"], 3)} for r in state.rows]
        warn_ms, crit_ms = state.threshold.warning * 1000, state.threshold.critical * 1000
        severity = Severity.worst([state.threshold.evaluate(r["mean_ms"] / 1000) for r in rows])
        columns = "mean_exec_time" if srv.version >= 130000 else "mean_time"
        hidden = sum(1 for r in rows if r["hidden"])
        note = None
        if not srv.read_all_stats:
            note = srv.missing_grant(f"the text of other roles' statements is hidden ({hidden} of these {len(rows)})")
        data = {"enabled": True, "server_version": srv.version, "order_by": columns, "queries": rows,
                "warning_ms": warn_ms, "critical_ms": crit_ms, "role": srv.role, "hidden": hidden, "note": note}
        tail = f"\nINCOMPLETE: {note}" if note else ""
        if not rows:
            return Plan.nothing(f"pg_stat_statements has no statements recorded for {srv.database} yet" + tail,
                                severity=severity, data=data)
        table = text_table([(f"{r['mean_ms']:.1f}", r["calls"], f"{r['total_ms']:.0f}",
                             "(another role's statement: text hidden)" if r["hidden"] else shorten(r["query"], 70))
                            for r in rows], ("mean ms", "calls", "total ms", "query"))
        slow = sum(1 for r in rows if r["mean_ms"] > warn_ms)
        head = (f"top {len(rows)} statements by {columns} (this tool's own left out); {slow} over {warn_ms:.0f} ms"
                if slow else f"top {len(rows)} statements by {columns} (this tool's own left out), none over "
                f"{warn_ms:.0f} ms")
        return Plan.nothing(f"{head}\n{table}{tail}", severity=severity, data=data)


# ---------------------------------------------------------------- bloat


@dataclass
class BloatState:
    method: str
    note: str | None
    tables: list[dict[str, Any]]
    indexes: list[dict[str, Any]]
    rules: dict[str, float] = field(default_factory=dict)


class BloatReport(Step[BloatState]):
    """Largest tables and indexes with their size and estimated bloat (the runbook's size query, and more)."""

    name = "db.bloat"
    needs = ("database",)
    scope = "env"
    read_only = True

    def __init__(self, limit: int = 20, tables: list[str] | None = None) -> None:
        self.limit = limit
        self.tables = tables

    def check(self, ctx: Context, target: EnvTarget) -> BloatState:
        db = admin(ctx)
        s = settings(ctx)
        estimator = Estimator(db)
        condition, params = relation_filter(self.tables)
        tables = []
        rows = table_rows(db, condition, params)
        missing_names(self.tables, rows, "table")
        for row in rows[: self.limit]:
            dead_pct = 100.0 * row["dead"] / (row["live"] + row["dead"]) if row["live"] + row["dead"] else 0.0
            tables.append({"table": display_name(row["schema"], row["relname"]), "total_bytes": row["total_bytes"],
                           "heap": estimator.table(row).as_dict(), "dead_rows": row["dead"],
                           "dead_pct": round(dead_pct, 1)})
        index_condition, params = relation_filter(self.tables, column="t.relname")
        indexes = []
        min_bytes = s.reindex_min_mb * 1024 * 1024
        for row in index_rows(db, index_condition, params)[: self.limit]:
            if row["valid"]:
                estimate = estimator.index(row)
                bloat = {**estimate.as_dict(),
                         "over_limit": estimate.over(s.reindex_bloat_pct) and row["bytes"] >= min_bytes}
            else:
                bloat = {"bytes": row["bytes"], "wasted_bytes": None, "bloat_pct": None, "method": "invalid",
                         "trusted": False, "over_limit": True}
            indexes.append({"index": display_name(row["schema"], row["relname"]),
                            "table": display_name(row["schema"], row["table_name"]), "valid": row["valid"], **bloat})
        rules = {"reindex_bloat_pct": s.reindex_bloat_pct, "reindex_min_bytes": s.reindex_min_mb * 1024 * 1024,
                 "vacuum_dead_pct": s.vacuum_dead_pct}
        return BloatState(estimator.method, estimator.note, tables, indexes, rules)

    def plan(self, state: BloatState) -> Plan:
        rules = state.rules
        bloated = [i for i in state.indexes if i["over_limit"]]  # what db.reindex --all-bloated would rebuild
        dirty = [t for t in state.tables if t["dead_pct"] > rules["vacuum_dead_pct"]]
        severity = Severity.WARNING if bloated or dirty else Severity.OK
        lines = [f"{len(state.tables)} largest tables, {len(state.indexes)} largest indexes; bloat by {state.method}"
                 + (f" ({state.note})" if state.note else "")]
        if bloated:
            lines.append(f"{len(bloated)} index(es) over {rules['reindex_bloat_pct']:.0f}% bloat or invalid: "
                         "db.reindex --all-bloated rebuilds them without blocking writes")
        if dirty:
            lines.append(f"{len(dirty)} table(s) over {rules['vacuum_dead_pct']:.0f}% dead rows: db.vacuum")
        if state.tables:
            lines.append(text_table([(t["table"], human_bytes(t["total_bytes"]), human_bytes(t["heap"]["bytes"]),
                                      pct(t["heap"]["bloat_pct"]), f"{t['dead_pct']:.0f}%") for t in state.tables],
                                    ("table", "total", "heap", "bloat", "dead rows")))
        if state.indexes:
            lines.append(text_table([(i["index"], i["table"], human_bytes(i["bytes"]),
                                      pct(i["bloat_pct"]) if i["valid"] else "INVALID") for i in state.indexes],
                                    ("index", "table", "size", "bloat")))
        data = {"method": state.method, "note": state.note, "tables": state.tables, "indexes": state.indexes,
                "bloated_indexes": [i["index"] for i in bloated], "tables_needing_vacuum": [t["table"] for t in dirty]}
        return Plan.nothing("\n".join(lines), severity=severity, data=data)
