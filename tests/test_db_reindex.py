"""db.reindex and db.bloat against a real PostgreSQL: real bloat shrinks, clean indexes are left alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from indostar_ops import Context, Runner
from indostar_ops.steps.postgres.reindex import Reindex
from tests.pg_support import PgDatabase, churn, fresh_database, relation, seed
from tests.support import InventoryDir, cli_json

QUOTED = 'order"s'  # a name with a double quote in it: must only ever reach SQL as an identifier
BLOATED = [f"{QUOTED}_pkey", f"{QUOTED}_val_idx"]
CLEAN = ["customers_pkey", "customers_val_idx"]
SHOWN = {f"{QUOTED}_pkey": 'public."order""s_pkey"', f"{QUOTED}_val_idx": 'public."order""s_val_idx"',
         "customers_pkey": "public.customers_pkey", "customers_val_idx": "public.customers_val_idx"}


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


def bloat_two_tables(pg: PgDatabase, *, pgstattuple: bool) -> None:
    """`order"s` loses 90% of its rows (then VACUUM: sparse index pages); `customers` is freshly built."""
    app = pg.connect()
    seed(app, QUOTED, 60_000)
    seed(app, "customers", 60_000)
    churn(app, QUOTED)
    app.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(QUOTED)))
    if pgstattuple:
        pg.admin().execute("CREATE EXTENSION pgstattuple")


def snapshot(pg: PgDatabase, names: list[str]) -> dict[str, dict[str, Any]]:
    return {name: relation(pg, name) for name in names}


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for step in doc["steps"] for t in step["targets"]]


@pytest.mark.parametrize("pgstattuple", [True, False], ids=["pgstattuple", "statistics"])
def test_reindex_rebuilds_only_bloated_indexes(pg: PgDatabase, inventory: InventoryDir, pgstattuple: bool) -> None:
    """Check mode plans the two bloated indexes and changes nothing; apply shrinks them only; a re-run is a no-op."""
    bloat_two_tables(pg, pgstattuple=pgstattuple)
    env = inventory.load(pg.inventory(inventory))
    before = snapshot(pg, BLOATED + CLEAN)

    with Context(env, check=True) as ctx:
        preview = Runner(ctx).run([Reindex(all_bloated=True)], task="db.reindex")
    assert sorted(r.target for r in preview.results) == sorted(SHOWN[n] for n in BLOATED)
    method = "pgstattuple" if pgstattuple else "statistics"
    assert all(f"bloat by {method}" in r.changes[0].summary and r.status == "changed" for r in preview.results)
    assert snapshot(pg, BLOATED + CLEAN) == before

    with Context(env) as ctx:
        applied = Runner(ctx).run([Reindex(all_bloated=True)], task="db.reindex").raise_on_failure()
    after = snapshot(pg, BLOATED + CLEAN)
    for name in BLOATED:
        assert after[name]["relfilenode"] != before[name]["relfilenode"] and after[name]["valid"]
        assert after[name]["bytes"] < before[name]["bytes"] / 3
    for name in CLEAN:
        assert after[name] == before[name]
    for result in applied.results:
        change = result.changes[-1]
        assert change.before["bytes"] > change.after["bytes"] and " -> " in change.summary
        assert [a["sql"].split(" ")[:3] for a in result.actions] == [["REINDEX", "INDEX", "CONCURRENTLY"]]

    with Context(env) as ctx:
        again = Runner(ctx).run([Reindex(all_bloated=True)], task="db.reindex").raise_on_failure()
    assert [r.status for r in again.results] == ["ok"]
    assert "no index to rebuild: 4 index(es) checked" in (again.results[0].reason or "")


def test_interrupted_concurrent_rebuild_is_cleaned_up(pg: PgDatabase, inventory: InventoryDir) -> None:
    """An INVALID `_ccnew` left by a REINDEX CONCURRENTLY that timed out is dropped and its index rebuilt."""
    app = pg.connect()
    seed(app, "customers", 5_000)
    blocker = pg.connect(application="backend")
    blocker.execute("BEGIN")
    blocker.execute("UPDATE customers SET note = 'busy' WHERE id = 1")
    interrupted = pg.admin()
    interrupted.execute("SET lock_timeout = '300ms'")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        interrupted.execute("REINDEX INDEX CONCURRENTLY customers_val_idx")
    blocker.execute("COMMIT")
    assert relation(pg, "customers_val_idx_ccnew")["valid"] is False
    original = relation(pg, "customers_val_idx")

    name = pg.inventory(inventory)
    code, doc = cli_json("db.reindex", "--env", name, "--table", "customers")
    assert code == 0, doc
    (target,) = targets(doc)
    assert target["target"] == "public.customers_val_idx" and target["status"] == "changed"
    assert [a["sql"] for a in target["actions"]] == [
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."customers_val_idx_ccnew"',
        'REINDEX INDEX CONCURRENTLY "public"."customers_val_idx"',
    ]
    assert pg.one("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    rebuilt = relation(pg, "customers_val_idx")
    assert rebuilt["valid"] and rebuilt["relfilenode"] != original["relfilenode"]

    code, doc = cli_json("db.reindex", "--env", name, "--table", "customers")
    assert code == 0 and [t["status"] for t in targets(doc)] == ["ok"]


def test_reindex_needs_an_explicit_scope(pg: PgDatabase, inventory: InventoryDir) -> None:
    """Without --all-bloated, --table or --index nothing runs (exit 2), and a misspelt index is an error."""
    name = pg.inventory(inventory)
    code, doc = cli_json("db.reindex", "--env", name)
    assert code == 2 and "--all-bloated" in doc["error"]
    code, doc = cli_json("db.reindex", "--env", name, "--index", "nope_idx")
    assert code == 1 and "no index named 'nope_idx'" in targets(doc)[0]["error"]


@pytest.mark.parametrize("pgstattuple", [True, False], ids=["pgstattuple", "statistics"])
def test_bloat_report_lists_largest_first_with_real_bloat(pg: PgDatabase, inventory: InventoryDir,
                                                          pgstattuple: bool) -> None:
    """db.bloat: tables and indexes largest first, the churned indexes far over the clean ones, WARNING (exit 1)."""
    bloat_two_tables(pg, pgstattuple=pgstattuple)
    code, doc = cli_json("db.bloat", "--env", pg.inventory(inventory))
    assert code == 1 and doc["severity"] == "WARNING"
    data = targets(doc)[0]["data"]
    assert data["method"] == ("pgstattuple" if pgstattuple else "statistics")
    indexes = {i["index"]: i for i in data["indexes"]}
    sizes = [i["bytes"] for i in data["indexes"]]
    assert sizes == sorted(sizes, reverse=True)
    totals = [t["total_bytes"] for t in data["tables"]]
    assert totals == sorted(totals, reverse=True)
    for name in BLOATED:
        assert indexes[SHOWN[name]]["bloat_pct"] > 70
    for name in CLEAN:
        assert indexes[SHOWN[name]]["bloat_pct"] < 20
    assert sorted(data["bloated_indexes"]) == sorted(SHOWN[n] for n in BLOATED)
    tables = {t["table"]: t for t in data["tables"]}
    assert tables['public."order""s"']["heap"]["bloat_pct"] > 70 > tables["public.customers"]["heap"]["bloat_pct"]
