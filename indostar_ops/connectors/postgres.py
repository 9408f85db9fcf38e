"""PostgreSQL through psycopg 3: every session named, time-limited and autocommit.

Autocommit because VACUUM and REINDEX CONCURRENTLY refuse to run inside a
transaction block; statement_timeout and lock_timeout so no maintenance query
can hang a window or queue behind a lock for long. Every statement we send starts
with the comment `/* indostar-ops */` (MARK), which pg_stat_statements keeps in the
query text: db.slow-queries leaves our own catalog reads out of its ranking.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionFailed

if TYPE_CHECKING:
    from ..inventory import DatabaseSettings

__all__ = ["APPLICATION_NAME", "MARK", "PostgresConnector", "marked"]

APPLICATION_NAME = "indostar-ops"
MARK = "/* indostar-ops */ "


def marked(query: Any) -> Any:
    """The statement with our marker comment in front (str or psycopg.sql.Composable alike)."""
    if isinstance(query, str):
        return MARK + query
    from psycopg import sql

    return sql.SQL(MARK) + query


class PostgresConnector:
    def __init__(self, settings: DatabaseSettings, *, admin: bool = False, read_only: bool = False) -> None:
        self.settings = settings
        self.admin = admin
        self.read_only = read_only  # check mode: the server itself refuses any write in this session
        self._conn: Any = None
        self._lock = threading.RLock()

    @property
    def where(self) -> str:
        s = self.settings
        return f"postgresql://{self.user}@{s.host}:{s.port}/{s.name}"

    @property
    def user(self) -> str:
        return (self.settings.admin_user if self.admin else None) or self.settings.user

    def connection(self) -> Any:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._open()
            return self._conn

    def _open(self) -> Any:
        import psycopg

        s = self.settings
        secret = s.admin_password if self.admin and s.admin_password else s.password
        kwargs: dict[str, Any] = {
            "host": s.host,
            "port": s.port,
            "dbname": s.name,
            "user": self.user,
            "application_name": APPLICATION_NAME,
            "connect_timeout": s.connect_timeout,
            "options": f"-c statement_timeout={s.statement_timeout} -c lock_timeout={s.lock_timeout}"
            + (" -c default_transaction_read_only=on" if self.read_only else ""),
            "autocommit": True,
        }
        if secret is not None:
            kwargs["password"] = secret.get()
        if s.sslmode:
            kwargs["sslmode"] = s.sslmode
        try:
            return psycopg.connect(**kwargs)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConnectionFailed(
                f"{self.where}: cannot connect: {first}",
                hint="check database.host/port/name/user in the inventory and that the server accepts us",
            ) from None

    def fetch(self, query: Any, params: Any = None) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self._lock:
            conn = self.connection()
            if not self.read_only:
                with conn.cursor(row_factory=dict_row) as cur:
                    cur.execute(marked(query), params)
                    return list(cur.fetchall()) if cur.description else []
            # check mode: default_transaction_read_only refuses INSERT/UPDATE/DDL, and a transaction block
            # (always rolled back) also refuses what read-only sessions allow: VACUUM, CONCURRENTLY builds
            with conn.transaction(force_rollback=True), conn.cursor(row_factory=dict_row) as cur:
                cur.execute(marked(query), params)
                return list(cur.fetchall()) if cur.description else []

    def execute(self, query: Any, params: Any = None) -> str:
        """Run a statement; returns its status text (e.g. 'VACUUM')."""
        with self._lock, self.connection().cursor() as cur:
            cur.execute(marked(query), params)
            return str(cur.statusmessage or "")

    @contextmanager
    def statement_timeout(self, value: str) -> Iterator[None]:
        """Run the enclosed statements under another statement_timeout, then restore the inventory's.

        Why: VACUUM or REINDEX CONCURRENTLY of a large relation legitimately runs far longer than the
        limit meant for queries, and a timeout mid-way wastes the work (or leaves an invalid index).
        The session still has a limit, just a maintenance-sized one. Holds the connection meanwhile.
        """
        with self._lock:
            conn = self.connection()
            conn.execute(marked("SELECT set_config('statement_timeout', %s, false)"), (value,))
            try:
                yield
            finally:
                if not conn.closed and not conn.broken:
                    conn.execute(marked("SELECT set_config('statement_timeout', %s, false)"),
                                 (self.settings.statement_timeout,))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
