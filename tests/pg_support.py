"""PostgreSQL fixtures for the db.* tests: a fresh database and application role per test, real sessions.

Why a database per test: maintenance tests assert on relfilenodes, sizes and
pg_stat counters, which any other test's tables would disturb; a random name lets
test runs (and other people's) share one server. Teardown terminates whatever
sessions a test left behind before dropping the database and the role.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from indostar_ops.poll import wait_until
from tests.support import InventoryDir


@dataclass
class PgDatabase:
    """A throwaway database owned by a throwaway, non-superuser application role."""

    host: str
    port: int
    name: str
    role: str
    admin_user: str = "postgres"
    roles: list[str] = field(default_factory=list)
    _open: list[psycopg.Connection[Any]] = field(default_factory=list)

    def other_role(self, *, superuser: bool = False) -> str:
        """Another LOGIN role (another application, or a superuser), dropped at teardown."""
        role = f"{self.role}_{len(self.roles) + 1}"
        with _admin_conn(self.host, self.port, self.admin_user) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN" + (" SUPERUSER" if superuser else "")).format(
                sql.Identifier(role)))
        self.roles.append(role)
        return role

    def connect(self, *, user: str | None = None, application: str = "backend",
                dbname: str | None = None) -> psycopg.Connection[Any]:
        """A real client session (autocommit), closed at teardown if the test did not."""
        conn = psycopg.connect(host=self.host, port=self.port, dbname=dbname or self.name, user=user or self.role,
                               application_name=application, autocommit=True, row_factory=dict_row)
        self._open.append(conn)
        return conn

    def admin(self) -> psycopg.Connection[Any]:
        return self.connect(user=self.admin_user, application="pytest-admin")

    def one(self, query: Any, params: Any = None) -> Any:
        """First column of the first row, read as the superuser."""
        with psycopg.connect(host=self.host, port=self.port, dbname=self.name, user=self.admin_user,
                             autocommit=True) as conn:
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None

    def inventory(self, inventory: InventoryDir, *, name: str = "pg", tier: str = "staging",
                  **extra: Any) -> str:
        """Write an environment whose database is this one; returns the environment's name."""
        database = {"host": self.host, "port": self.port, "name": self.name, "user": self.role,
                    "admin_user": self.admin_user, **extra.pop("database", {})}
        inventory.write(name, {"tier": tier, "connection": "local", "database": database, **extra})
        return name

    def close(self) -> None:
        for conn in self._open:
            if not conn.closed:
                conn.close()


def _admin_conn(host: str, port: int, user: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(host=host, port=port, dbname="postgres", user=user, autocommit=True)


def fresh_database(pg_dsn: str) -> Iterator[PgDatabase]:
    """A fresh database `indostar_t_<random>` owned by a fresh LOGIN role `indostar_app_<random>`.

    A generator for a test module's own fixture (`yield from fresh_database(pg_dsn)`).
    """
    info = conninfo_to_dict(pg_dsn)
    host, port = str(info.get("host", "127.0.0.1")), int(info.get("port", 5432))
    suffix = secrets.token_hex(4)
    db = PgDatabase(host, port, f"indostar_t_{suffix}", f"indostar_app_{suffix}", str(info.get("user", "postgres")))
    with _admin_conn(host, port, db.admin_user) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(db.role)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db.name), sql.Identifier(db.role)))
    try:
        yield db
    finally:
        db.close()
        with _admin_conn(host, port, db.admin_user) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                         "OR usename = ANY(%s)", (db.name, [db.role, *db.roles]))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))
            for role in [*db.roles, db.role]:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def flush_stats(conn: psycopg.Connection[Any]) -> None:
    """Make this session's table counters visible now (PostgreSQL 15 flushes them lazily, ~1 s)."""
    conn.execute("SELECT pg_stat_force_next_flush()")


def seed(conn: psycopg.Connection[Any], table: str, rows: int, *, indexes: tuple[str, ...] = ("val",)) -> None:
    """A table `table(id pk, val int, note text)` with `rows` rows and an index per column in `indexes`.

    Autovacuum is off for it, so only the test (and the tool under test) change its state.
    """
    ident = sql.Identifier(table)
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, val int, note text) "
                         "WITH (autovacuum_enabled = off)").format(ident))
    conn.execute(sql.SQL("INSERT INTO {} SELECT i, (i * 7919) %% 100003, md5(i::text) "
                         "FROM generate_series(1, %s) i").format(ident), (rows,))
    flush_stats(conn)
    for column in indexes:
        conn.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
            sql.Identifier(f"{table}_{column}_idx"), ident, sql.Identifier(column)))
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ident))
    flush_stats(conn)


def churn(conn: psycopg.Connection[Any], table: str, *, keep_every: int = 10) -> int:
    """Delete all but every `keep_every`-th row: dead rows in the heap, sparse index pages; returns deleted."""
    cur = conn.execute(sql.SQL("DELETE FROM {} WHERE id %% %s <> 0").format(sql.Identifier(table)), (keep_every,))
    flush_stats(conn)
    return cur.rowcount


def relation(db: PgDatabase, name: str, schema: str = "public") -> dict[str, Any]:
    """relfilenode, size and validity of a relation, read independently of the tool."""
    with psycopg.connect(host=db.host, port=db.port, dbname=db.name, user=db.admin_user, autocommit=True,
                         row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT c.oid, c.relfilenode, pg_relation_size(c.oid) AS bytes, i.indisvalid AS valid "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index i "
            "ON i.indexrelid = c.oid WHERE n.nspname = %s AND c.relname = %s", (schema, name)).fetchone()
        assert row is not None, f"{schema}.{name} does not exist"
        return dict(row)


class Background:
    """A statement running in its own session and thread (a long query, a blocked UPDATE)."""

    def __init__(self, conn: psycopg.Connection[Any], query: str, params: Any = None) -> None:
        self.conn = conn
        self.pid = int(conn.info.backend_pid)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(query, params), daemon=True)
        self.thread.start()

    def _run(self, query: str, params: Any) -> None:
        try:
            self.conn.execute(query, params)
        except BaseException as exc:  # the test inspects it: terminated, cancelled...
            self.error = exc

    def join(self, timeout: float = 10) -> BaseException | None:
        self.thread.join(timeout)
        return self.error


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy (a session reaching a state); fail the test on timeout."""
    return wait_until(None, f"test condition {getattr(predicate, '__name__', predicate)}", predicate, bool,
                      timeout=timeout, every=interval)


def wait_aged(pg: PgDatabase, pids: Any, seconds: float, *, since: str = "state_change",
              timeout: float = 15) -> None:
    """Poll until every session in `pids` has been in its current state (or query) for `seconds`.

    For tests that need sessions "idle for N s" or "running for N s": the server's own clock decides,
    never a fixed sleep. `since` is state_change (idle) or query_start (a running query).
    """
    assert since in ("state_change", "query_start")
    wanted = sorted(int(p) for p in pids)

    def youngest() -> float:
        age = pg.one(f"SELECT CASE WHEN bool_and({since} IS NOT NULL) THEN min(extract(epoch FROM now() - {since}))"
                     "::float8 END FROM pg_stat_activity WHERE pid = ANY(%s)", (wanted,))
        return -1.0 if age is None else float(age)

    def all_present() -> bool:
        return int(pg.one("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (wanted,))) == len(wanted)

    assert all_present(), f"sessions {wanted} are not all connected"
    wait_until(None, f"sessions {wanted} {since} older than {seconds} s", youngest, lambda age: age >= seconds,
               timeout=timeout, every=0.05, describe=lambda age: f"youngest {age:.2f} s")


# ---------------------------------------------------------------- a private cluster with pg_stat_statements


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(tool: str) -> str:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        pytest.skip(f"PostgreSQL server binaries ({tool}) are not installed")
    return found[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def private_server() -> Iterator[tuple[str, int]]:
    """A private PostgreSQL with pg_stat_statements preloaded; yields (host, port), then stops and deletes it.

    Its directory is a fresh /tmp one owned by `postgres` (initdb refuses to run as root, and
    pytest's own tmp directories are private to root).
    """
    root = Path(tempfile.mkdtemp(prefix="indostar-pgss-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                 "--no-sync"]), check=True, capture_output=True)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"port={port}\nlisten_addresses='127.0.0.1'\nunix_socket_directories='{root}'\n"
                   "shared_preload_libraries='pg_stat_statements'\nfsync=off\nsynchronous_commit=off\n")
    ctl = _pg_bin("pg_ctl")
    subprocess.run(_as_postgres([ctl, "-D", str(data), "-l", str(root / "log"), "-w", "start"]), check=True,
                   capture_output=True)
    try:
        yield "127.0.0.1", port
    finally:
        subprocess.run(_as_postgres([ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), check=False,
                       capture_output=True)
        shutil.rmtree(Path(root), ignore_errors=True)
