"""Runbook database procedures: reports, VACUUM/ANALYZE/REINDEX, ending sessions, pool sizing."""

from __future__ import annotations

from invoke import task

from ._help import common
from ._help import float_flag as _float
from ._help import int_flag as _int

_TABLE = "limit to this table (NAME, SCHEMA.NAME or SCHEMA.\"Quoted\"); repeatable"


@task(help=common(changes=False))
def activity(c, env=None, check=False, json=False):
    """Sessions by state, by user/application and database, the waiting ones, vs max_connections.

    Exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN: WARNING/CRITICAL when connections in use pass
    thresholds.db_connections_pct of max_connections. Read as database.admin_user granted pg_monitor:
    a role without pg_read_all_stats sees other roles' sessions without state; they are counted as
    'hidden' and the result says INCOMPLETE with the grant to add.
    """
    from ..cli import run_steps
    from ..steps.postgres.activity import Activity

    run_steps("db.activity", env=env, check=check, json=json, build=lambda _env: [Activity()], monitoring=True)


@task(help=common(changes=False))
def locks(c, env=None, check=False, json=False):
    """Blocked/blocking session pairs with the blocking query and its age.

    Exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN: WARNING when a session waits for a lock, CRITICAL
    once one has waited database.lock_wait_critical_s (default 60 s).
    """
    from ..cli import run_steps
    from ..steps.postgres.activity import Locks

    run_steps("db.locks", env=env, check=check, json=json, build=lambda _env: [Locks()], monitoring=True)


@task(help=common(changes=False, limit="how many statements (default 10)"))
def slow_queries(c, env=None, check=False, json=False, limit=10):
    """Top statements by mean time from pg_stat_statements (PostgreSQL 12-17); says how to enable it if missing.

    Exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN: WARNING/CRITICAL when a statement's mean time passes
    thresholds.response_time_s; UNKNOWN when pg_stat_statements is not usable (the result lists the
    missing steps, or the missing grant). This tool's own catalog queries are left out.
    """
    from ..cli import run_steps
    from ..steps.postgres.stats import SlowQueries

    run_steps("db.slow-queries", env=env, check=check, json=json, build=lambda _env: [SlowQueries(limit=limit)],
              monitoring=True)


@task(help=common(changes=False, limit="how many tables and indexes (default 20, largest first)", table=_TABLE),
      iterable=["table"])
def bloat(c, env=None, check=False, json=False, limit=20, table=None):
    """Largest tables and indexes with size and estimated bloat (pgstattuple if installed, else statistics).

    Exit 0/1 = OK/WARNING (2 and 3 are not used): WARNING when an index is over
    database.reindex_bloat_pct or invalid, or a table over database.vacuum_dead_pct dead rows.
    """
    from ..cli import run_steps
    from ..steps.postgres.stats import BloatReport

    run_steps("db.bloat", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [BloatReport(limit=limit, tables=table or None)])


@task(help=common(table=_TABLE, all="every table, not only those that need it",
                  full="VACUUM FULL the tables whose heap bloat (pgstattuple, else a statistics estimate) is over "
                       "database.vacuum_full_bloat_pct (default 30) or whose dead rows are over --threshold; "
                       "tables under 128 kB never (estimates too coarse). Locks each table against reads and "
                       "writes; production: only inside the maintenance window",
                  parallel="VACUUM (PARALLEL N) index workers per table (PostgreSQL 13+)",
                  threshold="dead-row % over which a table needs VACUUM (default database.vacuum_dead_pct)"),
      iterable=["table"])
def vacuum(c, env=None, check=False, json=False, yes=False, table=None, all_=False, full=False, parallel=None,
           threshold=None):
    """VACUUM (ANALYZE) the tables with too many dead rows or never vacuumed/analyzed, one at a time.

    Plain VACUUM is chosen by dead rows (over --threshold, default database.vacuum_dead_pct, and at least
    database.vacuum_min_dead_rows) or a table never vacuumed/analyzed. VACUUM FULL (--full) is chosen by
    heap bloat (database.vacuum_full_bloat_pct) or dead rows, never for "never vacuumed"; see --full.
    """
    from ..cli import run_steps
    from ..errors import UsageError
    from ..steps.postgres.vacuum import Vacuum, full_vacuum_refusal

    def build(environment):
        if full and not check and (refusal := full_vacuum_refusal(environment)):
            raise UsageError(refusal, hint="run it inside the window, or plain db.vacuum (no --full) now")
        return [Vacuum(tables=table or None, all=all_, full=full, parallel=_int(parallel, "--parallel"),
                       dead_pct=_float(threshold, "--threshold"))]

    run_steps("db.vacuum", env=env, check=check, json=json, yes=yes, build=build)


@task(help=common(table=_TABLE, all="every table, not only those with stale statistics",
                  threshold="% of rows changed since ANALYZE that makes statistics stale "
                            "(default database.analyze_stale_pct)"),
      iterable=["table"])
def analyze(c, env=None, check=False, json=False, yes=False, table=None, all_=False, threshold=None):
    """ANALYZE the tables whose planner statistics are stale or missing, one at a time."""
    from ..cli import run_steps
    from ..steps.postgres.vacuum import Analyze

    run_steps("db.analyze", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [Analyze(tables=table or None, all=all_,
                                          stale_pct=_float(threshold, "--threshold"))])


@task(help=common(all_bloated="every index over the bloat threshold, plus invalid leftovers",
                  table="only this table's indexes; repeatable", index="only this index; repeatable",
                  threshold="bloat % over which an index is rebuilt (default database.reindex_bloat_pct)"),
      iterable=["table", "index"])
def reindex(c, env=None, check=False, json=False, yes=False, all_bloated=False, table=None, index=None,
            threshold=None):
    """REINDEX INDEX CONCURRENTLY the bloated (or invalid) indexes, one at a time, with sizes before/after.

    An index is bloated when its estimated bloat is over --threshold (default database.reindex_bloat_pct)
    and it is at least database.reindex_min_mb; indexes under 128 kB are never rebuilt on an estimate
    (their last partial page alone reads as 20-50 % "bloat"). Invalid leftovers of an interrupted
    REINDEX CONCURRENTLY are dropped.
    """
    from ..cli import run_steps
    from ..steps.postgres.reindex import Reindex

    run_steps("db.reindex", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [Reindex(all_bloated=all_bloated, tables=table or None, indexes=index or None,
                                          bloat_pct=_float(threshold, "--threshold"))])


@task(help=common(minutes="idle longer than this (default database.idle_minutes, 10)"))
def kill_idle(c, env=None, check=False, json=False, yes=False, minutes=None):
    """Terminate the application's own sessions idle for more than N minutes (lists them; production: --yes)."""
    from ..cli import run_steps
    from ..steps.postgres.sessions import KillIdle

    run_steps("db.kill-idle", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [KillIdle(minutes=_float(minutes, "--minutes"))])


@task(help=common(minutes="running longer than this (default database.long_query_minutes, 5)",
                  max="terminate at most this many, oldest first (default database.kill_long_max, 5)"))
def kill_long(c, env=None, check=False, json=False, yes=False, minutes=None, max=None):
    """Terminate the application's own queries running for more than N minutes, at most --max of them."""
    from ..cli import run_steps
    from ..steps.postgres.sessions import KillLong

    run_steps("db.kill-long", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [KillLong(minutes=_float(minutes, "--minutes"), max=_int(max, "--max"))])


@task(help=common(changes=False, instances="app instances sharing the database (default: platform.replicas)",
                  peak="observed peak of the app's connections (default: sampled now)",
                  samples="pg_stat_activity samples, one second apart (default 3)"))
def pool_advice(c, env=None, check=False, json=False, instances=None, peak=None, samples=3):
    """Suggest pool_size/max_overflow per instance and say whether the pools can exhaust max_connections.

    Exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN: CRITICAL when the pools can exhaust the server now,
    WARNING when they can during a rolling update (else by thresholds.db_connections_pct of the observed
    peak), UNKNOWN when the instance count is not known.
    """
    from ..cli import run_steps
    from ..steps.postgres.pool import PoolAdvice

    run_steps("db.pool-advice", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [PoolAdvice(instances=_int(instances, "--instances"),
                                             peak=_int(peak, "--peak"), samples=samples)])


@task(help=common(query="name of a read-only query in the inventory's export_queries",
                  out="local CSV file to write", force="overwrite --out if it exists"))
def export(c, env=None, check=False, json=False, yes=False, query="", out="", force=False):
    """The runbook's \\copy: stream a named read-only query (COPY ... TO STDOUT) to a local CSV file."""
    from ..cli import run_steps
    from ..steps.export import Export

    run_steps("db.export", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [Export(query=query, out=out, force=force)])
