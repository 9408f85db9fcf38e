"""Issue 8, database half: each test pins a class of bug that the first wave's suite did not notice.

Check mode on the SQL write path and at the server; reports read as the plain application role
(no pg_monitor) never undercount silently; our own statements carry a marker; the monitoring
tasks' --help states their exit codes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from indostar_ops import Context
from indostar_ops.connectors.postgres import MARK
from indostar_ops.errors import CheckModeViolation
from tests.pg_support import PgDatabase, fresh_database, seed
from tests.support import InventoryDir, cli_json, run_cli


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


def target(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = [t for step in doc["steps"] for t in step["targets"]]
    return only


def as_app_role(pg: PgDatabase, inventory: InventoryDir, name: str = "app", **extra: Any) -> str:
    """The environment as the shipped prod inventory connects: database.user only, no admin_user."""
    inventory.write(name, {"tier": "staging", "connection": "local",
                           "database": {"host": pg.host, "port": pg.port, "name": pg.name, "user": pg.role},
                           **extra})
    return name


def journal_actions(tmp_path: Path) -> list[dict[str, Any]]:
    events = []
    for path in (tmp_path / "journal").rglob("*.jsonl"):
        events += [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in events if str(e.get("event", "")).startswith("action.")]


# ---------------------------------------------------------------- check mode, SQL


@pytest.mark.parametrize("admin", [False, True], ids=["user", "admin_user"])
def test_check_mode_sql_write_path_refuses_and_sends_nothing(pg: PgDatabase, inventory: InventoryDir,
                                                             tmp_path: Path, admin: bool) -> None:
    """`ctx.postgres().execute` in check mode raises CheckModeViolation; the row is not written, nothing journaled."""
    seed(pg.connect(), "orders", 10, indexes=())
    env = inventory.load(pg.inventory(inventory))
    with Context(env, check=True) as ctx:
        with pytest.raises(CheckModeViolation, match="tried to write in check mode"):
            ctx.postgres(admin=admin).execute("INSERT INTO orders VALUES (11, 1, 'x')", summary="add an order")
        assert ctx.actions == []
    assert pg.one("SELECT count(*) FROM orders") == 10
    assert journal_actions(tmp_path) == []

    with Context(env) as ctx:  # the same call outside check mode does write (the test can fail)
        assert ctx.postgres(admin=admin).execute("INSERT INTO orders VALUES (11, 1, 'x')",
                                                 summary="add an order") == "INSERT 0 1"
    assert pg.one("SELECT count(*) FROM orders") == 11


def test_check_mode_sql_sessions_are_read_only_at_the_server(pg: PgDatabase, inventory: InventoryDir) -> None:
    """A write slipped through the read handle (or the bare connector) fails loudly at the server in check mode."""
    seed(pg.connect(), "orders", 10, indexes=())
    env = inventory.load(pg.inventory(inventory))
    vacuums = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'orders'"
    before = pg.one(vacuums)
    with Context(env, check=True) as ctx:
        db = ctx.postgres(admin=True)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            db.fetch("INSERT INTO orders VALUES (12, 1, 'x') RETURNING id")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            db.connector.execute("DELETE FROM orders")
        # a read-only session still allows VACUUM; a check-mode read runs in a rolled-back block, which refuses it
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            db.fetch("VACUUM orders")
        assert db.fetch("SELECT count(*) AS n FROM orders") == [{"n": 10}]  # reads still work afterwards
    assert pg.one("SELECT count(*) FROM orders") == 10
    assert pg.one(vacuums) == before


def test_every_statement_we_send_carries_the_marker(pg: PgDatabase, inventory: InventoryDir) -> None:
    """pg_stat_statements keeps a leading comment: our statements start with it, so reports can leave them out."""
    env = inventory.load(pg.inventory(inventory))
    with Context(env) as ctx:
        (row,) = ctx.postgres().fetch("SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        assert row["query"].startswith(MARK.strip())
        with ctx.postgres().connector.statement_timeout("1h"):
            (row,) = ctx.postgres().fetch("SELECT current_setting('statement_timeout') AS t")
        assert row["t"] == "1h"


# ---------------------------------------------------------------- the application role (no pg_monitor)


def test_activity_as_application_role_counts_and_names_hidden_sessions(pg: PgDatabase,
                                                                      inventory: InventoryDir) -> None:
    """Other roles' sessions (NULL backend_type without pg_read_all_stats) are counted and the gap is stated."""
    own = [pg.connect(application="backend") for _ in range(2)]
    other = pg.other_role()
    others = [pg.connect(user=other, application="reporting") for _ in range(4)]
    code, doc = cli_json("db.activity", "--env", as_app_role(pg, inventory))
    assert code in (0, 1, 2), doc
    data = target(doc)["data"]
    groups = {(g["database"], g["user"], g["application"]): g for g in data["by_user"]}
    assert groups[(pg.name, pg.role, "backend")]["states"] == {"idle": len(own)}
    assert groups[(pg.name, other, "reporting")]["states"] == {"hidden": len(others)}
    assert data["hidden"] >= len(others) and data["complete"] is False and data["read_all_stats"] is False
    assert data["total"] >= len(own) + len(others) + 1  # + the tool's own session
    assert "pg_read_all_stats" in data["note"] and "pg_monitor" in data["note"]
    assert "INCOMPLETE" in target(doc)["reason"]

    code, doc = cli_json("db.activity", "--env", pg.inventory(inventory))  # admin_user: everything visible
    data = target(doc)["data"]
    groups = {(g["database"], g["user"], g["application"]): g for g in data["by_user"]}
    assert groups[(pg.name, other, "reporting")]["states"] == {"idle": len(others)}
    assert data["complete"] is True and data["note"] is None and data["hidden"] == 0


def test_pool_advice_as_application_role_counts_other_clients(pg: PgDatabase, inventory: InventoryDir) -> None:
    """Other clients' connections leave the application less room: hidden ones are counted, and the gap stated."""
    other = pg.other_role()
    others = [pg.connect(user=other, application="reporting") for _ in range(5)]
    name = as_app_role(pg, inventory, platform={"kind": "kubernetes", "replicas": {"backend": 2}})
    code, doc = cli_json("db.pool-advice", "--env", name, "--samples", "1")
    assert code in (0, 1, 2), doc
    data = target(doc)["data"]
    assert data["others_peak"] >= len(others) + 1 and data["hidden_sessions"] >= len(others), data
    assert data["room"] <= data["usable"] - len(others)
    assert "pg_read_all_stats" in target(doc)["reason"] and "pg_monitor" in target(doc)["reason"]


def test_slow_queries_as_application_role_never_fails_on_a_missing_grant(pg: PgDatabase,
                                                                         inventory: InventoryDir) -> None:
    """shared_preload_libraries needs pg_read_all_settings: without it the advice is exact and drops no library."""
    code, doc = cli_json("db.slow-queries", "--env", as_app_role(pg, inventory))
    assert code == 3 and doc["severity"] == "UNKNOWN", doc
    steps = target(doc)["data"]["how_to_enable"]
    assert any("SHOW shared_preload_libraries" in s and "<the libraries listed>" in s for s in steps), steps
    assert not any("= 'pg_stat_statements'" in s for s in steps)


# ---------------------------------------------------------------- --help


@pytest.mark.parametrize("task", ["db.activity", "db.locks", "db.slow-queries", "db.bloat", "db.pool-advice"])
def test_monitoring_db_tasks_state_their_exit_codes(task: str) -> None:
    proc = run_cli("--help", task)
    assert proc.returncode == 0 and "Exit 0/1" in proc.stdout and "OK/WARNING" in proc.stdout, proc.stdout
