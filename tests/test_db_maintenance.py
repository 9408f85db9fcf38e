"""db.vacuum and db.analyze against a real PostgreSQL: only the tables that need it, check mode, idempotence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from indostar_ops import Context, Runner
from indostar_ops.steps.postgres.vacuum import Analyze, Vacuum
from tests.pg_support import PgDatabase, churn, flush_stats, fresh_database, relation, seed
from tests.support import InventoryDir, cli_json

QUOTED = 'order"s'  # a table name with a double quote in it: must only ever reach SQL as an identifier


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


def table_stats(pg: PgDatabase, table: str) -> dict[str, Any]:
    with pg.admin() as conn:
        row = conn.execute("SELECT n_live_tup, n_dead_tup, last_vacuum, last_analyze, n_mod_since_analyze "
                           "FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()
    assert row is not None
    return dict(row)


def run(env: Any, step: Any, *, check: bool = False) -> Any:
    with Context(env, check=check) as ctx:
        return Runner(ctx).run([step], task=step.name)


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for step in doc["steps"] for t in step["targets"]]


def test_vacuum_treats_only_the_tables_that_need_it(pg: PgDatabase, inventory: InventoryDir) -> None:
    """Check mode plans the churned table alone and writes nothing; apply vacuums it alone; a re-run is a no-op."""
    app = pg.connect()
    seed(app, QUOTED, 20_000)
    seed(app, "customers", 2_000)
    deleted = churn(app, QUOTED)
    env = inventory.load(pg.inventory(inventory))
    clean_before = table_stats(pg, "customers")
    dirty_before = table_stats(pg, QUOTED)
    assert dirty_before["n_dead_tup"] == deleted

    preview = run(env, Vacuum(), check=True)
    assert [(r.target, r.status) for r in preview.results] == [('public."order""s"', "changed")]
    assert "90% dead rows" in preview.results[0].changes[0].summary and not preview.results[0].actions
    assert table_stats(pg, QUOTED) == dirty_before

    applied = run(env, Vacuum()).raise_on_failure()
    (result,) = applied.results
    assert result.status == "changed" and result.changes[0].after["dead_rows"] == 0
    assert [a["sql"] for a in result.actions] == ['VACUUM (ANALYZE) "public"."order""s"']
    after = table_stats(pg, QUOTED)
    assert after["n_dead_tup"] == 0 and after["last_vacuum"] > (dirty_before["last_vacuum"])
    assert table_stats(pg, "customers") == clean_before

    again = run(env, Vacuum()).raise_on_failure()
    assert [r.status for r in again.results] == ["ok"]
    assert "no table needs VACUUM: 2 table(s) checked" in (again.results[0].reason or "")


def test_vacuum_cli_parallel_and_table_filter(pg: PgDatabase, inventory: InventoryDir) -> None:
    """`--table` takes the raw name with its quote, `--parallel 2` reaches the statement (PostgreSQL 13+)."""
    app = pg.connect()
    seed(app, QUOTED, 5_000)
    seed(app, "other", 5_000)
    churn(app, QUOTED)
    churn(app, "other")
    name = pg.inventory(inventory)
    code, doc = cli_json("db.vacuum", "--env", name, "--table", QUOTED, "--parallel", "2")
    assert code == 0, doc
    (target,) = targets(doc)
    assert target["status"] == "changed"
    assert target["actions"][0]["sql"] == 'VACUUM (ANALYZE, PARALLEL 2) "public"."order""s"'
    assert table_stats(pg, "other")["n_dead_tup"] > 0

    code, doc = cli_json("db.vacuum", "--env", name, "--table", "no_such_table")
    assert code == 1 and "no table named 'no_such_table'" in targets(doc)[0]["error"]


def test_dead_rows_pinned_by_an_old_transaction_are_reported_not_retried(pg: PgDatabase,
                                                                        inventory: InventoryDir) -> None:
    """Rows an open snapshot still sees survive VACUUM: the run fails naming that pid, the next one explains why."""
    app = pg.connect()
    seed(app, "jobs", 5_000)
    holder = pg.connect(application="reporting")
    holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    holder.execute("SELECT count(*) FROM jobs")
    churn(app, "jobs")
    env = inventory.load(pg.inventory(inventory))

    first = run(env, Vacuum())
    (result,) = first.results
    assert result.status == "failed"
    assert f"pid {holder.info.backend_pid}" in (result.error or "") and "dead rows remain" in (result.error or "")
    assert table_stats(pg, "jobs")["n_dead_tup"] > 4_000

    second = run(env, Vacuum()).raise_on_failure()
    (result,) = second.results
    assert result.status == "ok" and result.data["horizon_pid"] == holder.info.backend_pid
    assert "which VACUUM cannot remove yet" in (result.reason or "")

    holder.execute("COMMIT")
    third = run(env, Vacuum()).raise_on_failure()
    assert third.results[0].status == "changed" and table_stats(pg, "jobs")["n_dead_tup"] == 0


def _window(around: datetime, *, inside: bool) -> dict[str, str]:
    start = around + (timedelta(minutes=-30) if inside else timedelta(hours=2))
    end = start + timedelta(hours=1)
    return {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}


def test_vacuum_full_only_inside_the_production_window(pg: PgDatabase, inventory: InventoryDir) -> None:
    """On production VACUUM FULL is refused outside the maintenance window (exit 2, table untouched), runs inside."""
    app = pg.connect()
    seed(app, "events", 10_000)
    churn(app, "events")
    now = datetime.now(ZoneInfo("Asia/Kolkata"))
    before = relation(pg, "events")
    outside = pg.inventory(inventory, name="prod-out", tier="production",
                           maintenance={"window": _window(now, inside=False)})
    code, doc = cli_json("db.vacuum", "--env", outside, "--full", "--yes")
    assert code == 2 and "maintenance window" in doc["error"]
    assert relation(pg, "events") == before

    inside = pg.inventory(inventory, name="prod-in", tier="production",
                          maintenance={"window": _window(now, inside=True)})
    code, doc = cli_json("db.vacuum", "--env", inside, "--full", "--yes")
    assert code == 0, doc
    (target,) = targets(doc)
    assert target["actions"][0]["sql"] == 'VACUUM (FULL, ANALYZE) "public"."events"'
    after = relation(pg, "events")
    assert after["relfilenode"] != before["relfilenode"] and after["bytes"] < before["bytes"] / 3


def test_analyze_refreshes_only_stale_statistics(pg: PgDatabase, inventory: InventoryDir) -> None:
    """Rows changed since ANALYZE past the threshold make a table stale; check writes nothing, a re-run is a no-op."""
    app = pg.connect()
    seed(app, "products", 4_000)
    seed(app, "categories", 4_000)
    app.execute("UPDATE products SET note = 'x' WHERE id <= 2000")
    flush_stats(app)
    env = inventory.load(pg.inventory(inventory))
    stale = table_stats(pg, "products")
    assert stale["n_mod_since_analyze"] == 2_000

    preview = run(env, Analyze(), check=True)
    assert [(r.target, r.status) for r in preview.results] == [("public.products", "changed")]
    assert table_stats(pg, "products") == stale

    run(env, Analyze()).raise_on_failure()
    fresh = table_stats(pg, "products")
    assert fresh["n_mod_since_analyze"] == 0 and fresh["last_analyze"] > stale["last_analyze"]

    again = run(env, Analyze()).raise_on_failure()
    assert [r.status for r in again.results] == ["ok"] and "statistics are fresh" in (again.results[0].reason or "")
