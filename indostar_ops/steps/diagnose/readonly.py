"""Inventory-named SQL (business metrics, exports) runs only in a READ ONLY transaction that is rolled back.

The query text is validated at load (one SELECT/WITH statement); the server then
enforces it: each query runs in its own `SET TRANSACTION READ ONLY` transaction
on a session of its own, so even a `set_config` trick cannot make it write.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...connectors.postgres import PostgresConnector
    from ...context import Context

__all__ = ["copy_csv", "fetch_read_only", "read_only_connector"]


def read_only_connector(ctx: Context) -> PostgresConnector:
    settings = ctx.env.database
    if settings is None:
        from ...errors import InventoryError

        raise InventoryError(f"environment {ctx.env.name!r} has no 'database' section")
    from ...connectors.postgres import PostgresConnector

    if ctx.env.sandbox is not None:
        from ...sandbox import ensure_database

        ensure_database(ctx.env)
    connector: PostgresConnector = ctx._cached("postgres:read-only-queries",
                                               lambda: PostgresConnector(settings, read_only=True))
    return connector


def fetch_read_only(ctx: Context, query: str, params: Any = None) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    connector = read_only_connector(ctx)
    with connector._lock:
        conn = connector.connection()
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query, params)
                return list(cur.fetchall()) if cur.description else []


def copy_csv(ctx: Context, query: str, out: IO[bytes]) -> int:
    """`COPY (query) TO STDOUT WITH CSV HEADER`, streamed chunk by chunk into `out`; returns bytes written."""
    from psycopg import sql

    connector = read_only_connector(ctx)
    written = 0
    statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(
        sql.SQL(query.strip().rstrip(";")))  # type: ignore[arg-type]  # validated at load: one SELECT/WITH
    with connector._lock:
        conn = connector.connection()
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            with conn.cursor() as cur, cur.copy(statement) as copy:
                for chunk in copy:
                    out.write(chunk)
                    written += len(chunk)
    return written
