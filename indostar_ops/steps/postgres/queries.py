"""The catalog SQL the PostgreSQL steps read, in one place (PostgreSQL 12-17).

Values are always parameters; the few identifiers (the pgstattuple schema, the
pg_stat_statements columns that were renamed in 13) are composed with
`psycopg.sql`. Anything that depends on the server version is a function of it.
"""

from __future__ import annotations

from psycopg import sql

__all__ = [
    "ACTIVITY",
    "CLIENT",
    "HORIZON",
    "INDEXES",
    "INVALID_LEFTOVERS",
    "PGSTATTUPLE",
    "PG_STAT_STATEMENTS",
    "ROLE",
    "SERVER",
    "TABLES",
    "index_bloat_pgstattuple",
    "locks_sql",
    "sessions_sql",
    "slow_queries_sql",
    "still_planned_sql",
    "table_bloat_pgstattuple",
    "terminate_sql",
]

SERVER = """
SELECT current_setting('server_version_num')::int AS version,
       current_database() AS database,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,
       current_user AS role,
       pg_has_role('pg_read_all_stats', 'USAGE') AS read_all_stats,
       pg_has_role('pg_read_all_settings', 'USAGE') AS read_all_settings
"""

# A session row counts as a client connection when it is one, or when it is hidden from us: without
# pg_read_all_stats, other roles' rows have NULL backend_type/state/query. A hidden row with a database
# and a role is a client session (or, rarely, a parallel worker); background processes have neither.
CLIENT = ("(backend_type = 'client backend'"
          " OR (backend_type IS NULL AND datname IS NOT NULL AND usesysid IS NOT NULL))")

# User tables and materialized views with their activity counters and the statistics-based
# heap bloat estimate (expected pages from pg_stats row width vs the pages the table occupies).
TABLES = """
SELECT n.nspname AS schema, c.relname, c.oid::bigint AS oid,
       s.n_live_tup AS live, s.n_dead_tup AS dead, s.n_mod_since_analyze AS modified,
       greatest(c.reltuples, 0)::bigint AS reltuples, c.relpages::bigint AS relpages,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       pg_relation_size(c.oid) AS heap_bytes, pg_total_relation_size(c.oid) AS total_bytes,
       est.expected_pages
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_stat_all_tables s ON s.relid = c.oid
LEFT JOIN LATERAL (
    SELECT CASE WHEN count(st.attname) = count(a.attname) AND c.reltuples >= 0 THEN
             ceil(c.reltuples * (4 + 24 + CASE WHEN bool_or(st.null_frac > 0) THEN 8 ELSE 0 END
                                 + 8 * ceil(sum((1 - st.null_frac) * st.avg_width) / 8))
                  / ((current_setting('block_size')::int - 24)
                     * coalesce((SELECT substring(o FROM 'fillfactor=([0-9]+)')::int
                                 FROM unnest(c.reloptions) AS o WHERE o LIKE 'fillfactor=%%'), 100) / 100.0))
           END AS expected_pages
    FROM pg_attribute a
    LEFT JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = c.relname
                         AND st.attname = a.attname AND NOT st.inherited
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
) est ON true
WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  AND {filter}
ORDER BY pg_total_relation_size(c.oid) DESC, n.nspname, c.relname
"""

# Indexes with validity, access method, fill factor and the statistics-based btree estimate
# (ioguix's method: tuples x (item pointer + header + maxaligned key width) per usable page).
INDEXES = """
SELECT n.nspname AS schema, c.relname, t.relname AS table_name, c.oid::bigint AS oid,
       am.amname AS method, i.indisvalid AS valid, i.indisprimary AS is_primary,
       i.indisexclusion AS is_exclusion, c.relpages::bigint AS relpages, c.relfilenode::bigint AS relfilenode,
       pg_relation_size(c.oid) AS bytes, ff.fillfactor, est.expected_pages,
       replace(pg_get_indexdef(c.oid), 'INDEX ' || quote_ident(c.relname) || ' ON ', 'INDEX ON ') AS shape
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = c.relam
CROSS JOIN LATERAL (
    SELECT coalesce((SELECT substring(o FROM 'fillfactor=([0-9]+)')::int
                     FROM unnest(c.reloptions) AS o WHERE o LIKE 'fillfactor=%%'), 90) AS fillfactor
) ff
LEFT JOIN LATERAL (
    SELECT CASE WHEN am.amname = 'btree' AND c.relpages > 0 THEN
             1 + ceil(greatest(CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE t.reltuples END, 0)
                      / nullif(floor((current_setting('block_size')::int - 24 - 16) * ff.fillfactor
                              / (100.0 * (4 + 8 + 8 * ceil(sum(coalesce(
                                    (1 - coalesce(ts.null_frac, es.null_frac)) * coalesce(ts.avg_width, es.avg_width),
                                    CASE WHEN ia.attlen > 0 THEN ia.attlen ELSE 32 END)) / 8)))), 0))
           END AS expected_pages
    FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute ia ON ia.attrelid = c.oid AND ia.attnum = k.ord
    LEFT JOIN pg_attribute ta ON ta.attrelid = t.oid AND ta.attnum = k.attnum AND k.attnum > 0
    LEFT JOIN pg_stats ts ON ts.schemaname = n.nspname AND ts.tablename = t.relname
                         AND ts.attname = ta.attname AND NOT ts.inherited
    LEFT JOIN pg_stats es ON k.attnum = 0 AND es.schemaname = n.nspname AND es.tablename = c.relname
                         AND es.attname = ia.attname
) est ON true
WHERE c.relkind = 'i' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  AND {filter}
ORDER BY pg_relation_size(c.oid) DESC, n.nspname, c.relname
"""

# Invalid indexes left behind by an interrupted REINDEX CONCURRENTLY of a given index: same
# table, same definition (the name aside), named <index>_ccnew[N] / _ccold[N] (maybe truncated).
INVALID_LEFTOVERS = """
SELECT n.nspname AS schema, c.relname, pg_relation_size(c.oid) AS bytes
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
WHERE NOT i.indisvalid AND n.nspname = %(schema)s AND t.relname = %(table)s
  AND c.relname ~ '_cc(new|old)[0-9]*$'
  AND replace(pg_get_indexdef(c.oid), 'INDEX ' || quote_ident(c.relname) || ' ON ', 'INDEX ON ') = %(shape)s
ORDER BY c.relname
"""

# Who holds back the xmin horizon of this database (rows dead after it cannot be removed yet).
HORIZON = """
SELECT pid, usename AS user, application_name AS application, state,
       CASE WHEN state = 'active' AND backend_xid IS NULL THEN query_start ELSE xact_start END AS since,
       left(query, 200) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
ORDER BY since NULLS LAST
LIMIT 1
"""

PGSTATTUPLE = """
SELECT n.nspname AS schema,
       has_function_privilege(format('%I.pgstatindex(regclass)', n.nspname), 'EXECUTE')
         AND has_function_privilege(format('%I.pgstattuple_approx(regclass)', n.nspname), 'EXECUTE') AS usable
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pgstattuple'
"""

# shared_preload_libraries is readable only with pg_read_all_settings: without it, `loaded` and
# `preload` are NULL (unknown), and reading the view itself tells whether the library is loaded.
PG_STAT_STATEMENTS = """
SELECT (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_stat_statements') AS schema,
       CASE WHEN pg_has_role('pg_read_all_settings', 'USAGE') THEN
         'pg_stat_statements' = ANY(string_to_array(
           replace(replace(current_setting('shared_preload_libraries'), ' ', ''), '"', ''), ','))
       END AS loaded,
       CASE WHEN pg_has_role('pg_read_all_settings', 'USAGE') THEN
         current_setting('shared_preload_libraries')
       END AS preload,
       (SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'pg_stat_statements') AS available
"""

ACTIVITY = f"""
SELECT pid, datname AS database, usename AS user, application_name AS application,
       client_addr::text AS client, state, wait_event_type, wait_event,
       extract(epoch FROM now() - state_change)::float8 AS state_age_s,
       extract(epoch FROM now() - query_start)::float8 AS query_age_s,
       left(query, 200) AS query, backend_type IS NULL AS hidden
FROM pg_stat_activity
WHERE {CLIENT}
ORDER BY pid
"""


def table_bloat_pgstattuple(schema: str) -> sql.Composed:
    """Heap bloat of one table: dead rows plus free space beyond what the fill factor leaves."""
    return sql.SQL("""
SELECT s.table_len AS bytes, s.dead_tuple_len + s.approx_free_space AS wasted_raw,
       coalesce((SELECT substring(o FROM 'fillfactor=([0-9]+)')::int FROM unnest(c.reloptions) AS o
                 WHERE o LIKE 'fillfactor=%%'), 100) AS fillfactor
FROM pg_class c, {fn}(c.oid) AS s
WHERE c.oid = %(oid)s
""").format(fn=sql.Identifier(schema, "pgstattuple_approx"))


def index_bloat_pgstattuple(schema: str) -> sql.Composed:
    """B-tree leaf density, deleted and empty pages of one index (reads the whole index once)."""
    return sql.SQL("""
SELECT s.index_size AS bytes, s.leaf_pages, s.deleted_pages, s.empty_pages,
       CASE WHEN s.avg_leaf_density = 'NaN' THEN NULL ELSE s.avg_leaf_density END AS leaf_density
FROM {fn}(%(oid)s::oid::regclass) AS s
""").format(fn=sql.Identifier(schema, "pgstatindex"))


def slow_queries_sql(version: int, schema: str) -> sql.Composed:
    """Top statements of this database by mean time; 13 renamed total_time/mean_time to *_exec_time.

    Leaves out our own statements (they start with the connector's marker comment, parameter
    `mark`). Other roles' statements keep their figures but, without pg_read_all_stats, not their
    text (`<insufficient privilege>`, NULL queryid): `hidden` says so.
    """
    total, mean = ("total_exec_time", "mean_exec_time") if version >= 130000 else ("total_time", "mean_time")
    return sql.SQL("""
SELECT queryid::text AS queryid, query, calls, {total}::float8 AS total_ms, {mean}::float8 AS mean_ms, rows,
       shared_blks_hit, shared_blks_read, queryid IS NULL AS hidden
FROM {view}
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND calls > 0
  AND left(coalesce(query, ''), length(%(mark)s)) <> %(mark)s
ORDER BY {mean} DESC
LIMIT %(limit)s
""").format(total=sql.Identifier(total), mean=sql.Identifier(mean),
            view=sql.Identifier(schema, "pg_stat_statements"))


def locks_sql(version: int) -> str:
    """Blocked/blocking pairs; 14 added pg_locks.waitstart, older servers count from query start."""
    waited = ("coalesce((SELECT min(l.waitstart) FROM pg_locks l WHERE l.pid = w.pid AND NOT l.granted),"
              " w.query_start)" if version >= 140000 else "w.query_start")
    return f"""
SELECT w.pid AS blocked_pid, w.usename AS blocked_user, w.application_name AS blocked_application,
       w.datname AS database, left(w.query, 500) AS blocked_query,
       extract(epoch FROM now() - {waited})::float8 AS waiting_s,
       (SELECT string_agg(DISTINCT l.mode || CASE
                  WHEN l.relation IS NOT NULL AND l.database = (SELECT oid FROM pg_database
                                                                WHERE datname = current_database())
                  THEN ' on ' || l.relation::regclass::text ELSE ' (' || l.locktype || ')' END, ', ')
        FROM pg_locks l WHERE l.pid = w.pid AND NOT l.granted) AS wanted,
       b.pid AS blocking_pid, b.usename AS blocking_user, b.application_name AS blocking_application,
       b.state AS blocking_state, left(b.query, 500) AS blocking_query,
       extract(epoch FROM now() - b.query_start)::float8 AS blocking_query_age_s,
       extract(epoch FROM now() - b.xact_start)::float8 AS blocking_xact_age_s
FROM pg_stat_activity w
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
JOIN pg_stat_activity b ON b.pid = bp.pid
ORDER BY waiting_s DESC, w.pid, b.pid
"""


_IDLE_STATES = "('idle', 'idle in transaction', 'idle in transaction (aborted)')"


def sessions_sql(kind: str, *, one: bool = False) -> str:
    """The application's own sessions idle ('idle') or running ('long') past a limit.

    Only client backends of database.user in database.name; never this session, never a
    session of this tool, never a superuser's or a replication role's.
    """
    if kind == "idle":
        cond, since, order = f"a.state IN {_IDLE_STATES}", "a.state_change", "a.state_change"
    else:
        cond, since, order = "a.state = 'active'", "a.query_start", "a.query_start"
    pin = "AND a.pid = %(pid)s AND a.backend_start = %(backend_start)s" if one else ""
    return f"""
SELECT a.pid, a.usename AS user, a.application_name AS application, a.client_addr::text AS client,
       a.state, a.backend_start, a.state_change, a.query_start,
       extract(epoch FROM now() - {since})::float8 AS age_s, left(a.query, 200) AS query
FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.datname = %(database)s AND a.usename = %(role)s AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid() AND a.application_name <> %(ours)s
  AND NOT r.rolsuper AND NOT r.rolreplication
  AND {cond} AND {since} < now() - make_interval(secs => %(seconds)s) {pin}
ORDER BY {order}, a.pid
"""


# The application role itself: a superuser or replication role's sessions are never ours to end,
# and sessions of it that we cannot see (no pg_read_all_stats) must not read as "none idle".
ROLE = """
SELECT r.rolsuper, r.rolreplication, current_user AS me,
       (SELECT count(*) FROM pg_stat_activity a
        WHERE a.usename = %(role)s AND a.datname = %(database)s AND a.backend_type IS NULL) AS hidden
FROM pg_roles r WHERE r.rolname = %(role)s
"""


def _same_session(kind: str) -> str:
    """The very session (pid + backend start) of the role, still in the idle period / query we planned to end."""
    if kind == "idle":
        same = f"a.state IN {_IDLE_STATES} AND a.state_change = %(since)s"
    else:
        same = "a.state = 'active' AND a.query_start = %(since)s"
    return ("FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid"
            " WHERE a.pid = %(pid)s AND a.backend_start = %(backend_start)s AND a.usename = %(role)s"
            f" AND NOT r.rolsuper AND NOT r.rolreplication AND {same}")


def terminate_sql(kind: str, version: int) -> str:
    """Terminate one session only if it is still the one planned; one row ('SELECT 1') only if it was ended.

    The candidate is materialized first, so pg_terminate_backend is only ever called on that row.
    """
    call = "pg_terminate_backend(pid, 5000)" if version >= 140000 else "pg_terminate_backend(pid)"
    return (f"WITH victim AS MATERIALIZED (SELECT a.pid {_same_session(kind)}) "
            f"SELECT pid FROM victim WHERE {call}")


def still_planned_sql(kind: str) -> str:
    return f"SELECT a.pid {_same_session(kind)}"
