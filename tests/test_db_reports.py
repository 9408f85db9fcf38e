"""The read-only db.* reports against real sessions: activity, locks, slow queries, pool advice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from indostar_ops.steps.postgres.queries import slow_queries_sql
from tests.pg_support import Background, PgDatabase, fresh_database, private_server, seed, wait_aged, wait_for
from tests.support import InventoryDir, cli_json, run_cli


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


@pytest.fixture(scope="module")
def pgss() -> Iterator[tuple[str, int]]:
    yield from private_server()


def target(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = [t for step in doc["steps"] for t in step["targets"]]
    return only


def test_activity_counts_sessions_by_state_and_application(pg: PgDatabase, inventory: InventoryDir) -> None:
    """db.activity: our sessions appear under their user/application and state, against the real max_connections."""
    for _ in range(3):
        pg.connect(application="backend")
    in_tx = pg.connect(application="celery")
    in_tx.execute("BEGIN")
    in_tx.execute("SELECT 1")
    name = pg.inventory(inventory)
    code, doc = cli_json("db.activity", "--env", name)
    assert code == 0 and doc["severity"] == "OK", doc
    data = target(doc)["data"]
    assert data["max_connections"] == int(pg.one("SHOW max_connections"))
    groups = {(g["database"], g["user"], g["application"]): g for g in data["by_user"]}
    assert groups[(pg.name, pg.role, "backend")]["states"] == {"idle": 3}
    assert groups[(pg.name, pg.role, "celery")]["states"] == {"idle in transaction": 1}
    assert data["total"] >= 5 and data["by_state"]["idle"] >= 3
    assert sum(data["by_state"].values()) == data["total"]

    human = run_cli("db.activity", "--env", name)
    assert human.returncode == 0 and "connections (" in human.stdout and "application" in human.stdout


def test_locks_pairs_the_blocked_session_with_its_blocker(pg: PgDatabase, inventory: InventoryDir) -> None:
    """A real row-lock conflict: db.locks names the blocker, its query and age; waiting past the limit is CRITICAL."""
    app = pg.connect()
    seed(app, "orders", 100, indexes=())
    blocker = pg.connect(application="backend")
    blocker.execute("BEGIN")
    blocker.execute("UPDATE orders SET val = 1 WHERE id = 7")
    waiter = Background(pg.connect(application="worker"), "UPDATE orders SET val = 2 WHERE id = 7")
    wait_for(lambda: pg.one("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (waiter.pid,)) == "Lock")
    wait_aged(pg, [waiter.pid], 0.6, since="query_start")
    name = pg.inventory(inventory, database={"lock_wait_critical_s": 0.5})

    code, doc = cli_json("db.locks", "--env", name)
    assert code == 2 and doc["severity"] == "CRITICAL", doc
    pairs = [p for p in target(doc)["data"]["pairs"] if p["blocked_pid"] == waiter.pid]
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair["blocking_pid"] == blocker.info.backend_pid and pair["blocking_state"] == "idle in transaction"
    assert pair["blocking_query"] == "UPDATE orders SET val = 1 WHERE id = 7"
    assert pair["waiting_s"] >= 0.5 and pair["blocking_xact_age_s"] >= pair["waiting_s"]
    assert "ShareLock" in pair["wanted"]

    code, doc = cli_json("db.activity", "--env", name)
    assert waiter.pid in [w["pid"] for w in target(doc)["data"]["waiting"]]
    blocker.execute("COMMIT")
    assert waiter.join() is None


def test_slow_queries_explains_how_to_enable_the_extension(pg: PgDatabase, inventory: InventoryDir) -> None:
    """Without pg_stat_statements: UNKNOWN (exit 3) with exactly the missing steps for this server and database."""
    preload = str(pg.one("SHOW shared_preload_libraries"))
    code, doc = cli_json("db.slow-queries", "--env", pg.inventory(inventory))
    assert code == 3 and doc["severity"] == "UNKNOWN"
    steps = target(doc)["data"]["how_to_enable"]
    assert steps[-1] == f"connected to database {pg.name} as a superuser: CREATE EXTENSION pg_stat_statements;"
    if "pg_stat_statements" not in preload:
        assert "ALTER SYSTEM SET shared_preload_libraries" in steps[0] and "restart" in steps[0]
    rds = pg.inventory(inventory, name="rds", database={"rds_instance": "indostar-test"})
    code, doc = cli_json("db.slow-queries", "--env", rds)
    if "pg_stat_statements" not in preload:
        assert "DB parameter group of RDS instance indostar-test" in target(doc)["data"]["how_to_enable"][0]


def test_slow_queries_ranks_statements_by_mean_time(pgss: tuple[str, int], inventory: InventoryDir,
                                                    tmp_path: Path) -> None:
    """With the extension loaded: this database's statements by mean time, the slow one first, over the threshold."""
    host, port = pgss
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE shop")
    with psycopg.connect(host=host, port=port, user="postgres", dbname="shop", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        for _ in range(2):
            conn.execute("SELECT pg_sleep(0.25)")
        for i in range(20):
            conn.execute("SELECT %s::int + 1", (i,))
    inventory.write("pgss", {"tier": "staging", "connection": "local",
                             "database": {"host": host, "port": port, "name": "shop", "user": "postgres"},
                             "thresholds": {"response_time_s": {"warning": 0.2, "critical": 5}}})
    code, doc = cli_json("db.slow-queries", "--env", "pgss", "--limit", "3")
    assert code == 1 and doc["severity"] == "WARNING", doc
    data = target(doc)["data"]
    assert data["order_by"] == "mean_exec_time" and len(data["queries"]) == 3
    first = data["queries"][0]
    assert "pg_sleep" in first["query"] and first["calls"] == 2 and first["mean_ms"] >= 250
    means = [q["mean_ms"] for q in data["queries"]]
    assert means == sorted(means, reverse=True)


@pytest.mark.parametrize(("version", "column"), [(120000, "mean_time"), (130000, "mean_exec_time"),
                                                 (170000, "mean_exec_time")])
def test_slow_query_columns_follow_the_server_version(version: int, column: str) -> None:
    """PostgreSQL 13 renamed total_time/mean_time to total_exec_time/mean_exec_time: the SQL follows the server."""
    text = slow_queries_sql(version, "public").as_string(None)
    assert f'"{column}"::float8 AS mean_ms' in text and f'ORDER BY "{column}" DESC' in text
    assert f'"{column.replace("mean", "total")}"::float8 AS total_ms' in text


def test_pool_advice_from_replicas_and_observed_peak(pg: PgDatabase, inventory: InventoryDir) -> None:
    """5 instances x (10 + 10) cannot fit in max_connections: CRITICAL, and the suggestion fits with headroom."""
    sessions = [pg.connect(application="backend") for _ in range(6)]
    platform = {"kind": "kubernetes", "replicas": {"backend": 3, "celery-worker": 2}}
    name = pg.inventory(inventory, platform=platform)
    code, doc = cli_json("db.pool-advice", "--env", name, "--samples", "1")
    data = target(doc)["data"]
    assert data["instances"] == 5 and data["app_peak"] == len(sessions)
    assert data["max_connections"] == int(pg.one("SHOW max_connections"))
    worst = data["current"]["worst_case"]
    assert worst == 100
    assert data["exhaustible"] == (worst > data["room"]) and (code == 2) == data["exhaustible"]
    suggested = data["suggested"]
    assert suggested["pool_size"] >= 2 and suggested["pool_size"] * 5 >= len(sessions)
    assert suggested["worst_case_in_rollout"] <= data["room"] - data["headroom"]

    small = pg.inventory(inventory, name="small", platform=platform, database={"pool_size": 2, "max_overflow": 2})
    code, doc = cli_json("db.pool-advice", "--env", small, "--samples", "1")
    data = target(doc)["data"]
    assert not data["exhaustible"] and code in (0, 1) and data["current"]["worst_case_in_rollout"] == 28

    bare = pg.inventory(inventory, name="bare")
    code, doc = cli_json("db.pool-advice", "--env", bare, "--samples", "1")
    assert code == 3 and "--instances" in target(doc)["reason"]


def test_slow_queries_leaves_out_our_own_statements_and_works_as_the_application_role(
        pgss: tuple[str, int], inventory: InventoryDir) -> None:
    """Our catalog reads never rank; as a role without pg_read_all_stats the report works and says what it cannot see."""
    host, port = pgss
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE crm")
        conn.execute("CREATE ROLE crm_app LOGIN")
    with psycopg.connect(host=host, port=port, user="postgres", dbname="crm", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("SELECT pg_sleep(0.05)")  # another role's statement
    with psycopg.connect(host=host, port=port, user="crm_app", dbname="crm", autocommit=True) as conn:
        conn.execute("SELECT 1 AS app_query")
    database = {"host": host, "port": port, "name": "crm"}
    inventory.write("crm-admin", {"tier": "staging", "connection": "local",
                                  "database": {**database, "user": "crm_app", "admin_user": "postgres"}})
    inventory.write("crm-app", {"tier": "staging", "connection": "local", "database": {**database, "user": "crm_app"}})
    for _ in range(2):  # the second run would list the first run's catalog reads, were they not left out
        code, doc = cli_json("db.slow-queries", "--env", "crm-admin", "--limit", "100")
        assert code == 0, doc
    queries = [q["query"] for q in target(doc)["data"]["queries"]]
    assert any("pg_sleep" in q for q in queries) and any("app_query" in q for q in queries), queries
    ours = ("indostar-ops", "server_version_num", "pg_extension", "pg_available_extensions", "dbid = (SELECT oid")
    assert not [q for q in queries if any(mark in q for mark in ours)], queries

    code, doc = cli_json("db.slow-queries", "--env", "crm-app", "--limit", "100")
    assert code == 0 and doc["severity"] == "OK", doc
    data = target(doc)["data"]
    rows = {q["hidden"]: q for q in data["queries"]}
    assert "app_query" in rows[False]["query"] and rows[True]["query"] == "<insufficient privilege>"
    assert data["hidden"] >= 1 and "pg_read_all_stats" in data["note"] and "pg_monitor" in data["note"]
    assert "INCOMPLETE" in target(doc)["reason"] and "text hidden" in target(doc)["reason"]
