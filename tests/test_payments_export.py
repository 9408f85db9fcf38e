"""db.export: a named read-only inventory query streamed through COPY ... TO STDOUT into a local CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_support import PgDatabase, fresh_database
from tests.support import InventoryDir, cli_json, run_cli


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


def env(pg: PgDatabase, inventory: InventoryDir, **queries: str) -> str:
    conn = pg.connect()
    conn.execute("CREATE TABLE payments (id bigserial PRIMARY KEY, order_id bigint, note text, status text)")
    conn.execute("INSERT INTO payments (order_id, note, status) SELECT g, 'line ' || g || ', \"quoted\"', "
                 "CASE WHEN g % 4 = 0 THEN 'pending' ELSE 'captured' END FROM generate_series(1, 8000) g")
    return pg.inventory(inventory, export_queries={
        "pending_payments": "SELECT id, order_id, note FROM payments WHERE status = 'pending' ORDER BY id", **queries})


def test_export_streams_the_named_query_to_csv(pg: PgDatabase, inventory: InventoryDir, tmp_path: Path) -> None:
    name = env(pg, inventory)
    out = tmp_path / "pending.csv"
    code, doc = cli_json("db.export", "--env", name, "--query", "pending_payments", "--out", str(out), "--check")
    assert code == 0 and not out.exists() and not list(tmp_path.glob(".pending.csv*"))

    code, doc = cli_json("db.export", "--env", name, "--query", "pending_payments", "--out", str(out))
    assert code == 0, doc
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "order_id", "note"] and len(rows) == 2001
    assert rows[1] == ["4", "4", 'line 4, "quoted"']  # CSV quoting survives
    assert doc["steps"][0]["targets"][0]["data"]["rows"] == 2000

    code, doc = cli_json("db.export", "--env", name, "--query", "pending_payments", "--out", str(out))
    assert code == 1 and "already exists" in doc["steps"][0]["targets"][0]["error"]
    code, _doc = cli_json("db.export", "--env", name, "--query", "pending_payments", "--out", str(out), "--force")
    assert code == 0


def test_only_named_read_only_queries(pg: PgDatabase, inventory: InventoryDir, tmp_path: Path) -> None:
    name = env(pg, inventory, purge="WITH gone AS (DELETE FROM payments RETURNING id) SELECT id FROM gone")
    proc = run_cli("db.export", "--env", name, "--query", "everything", "--out", str(tmp_path / "x.csv"))
    assert proc.returncode == 2 and "no export query 'everything'" in proc.stderr and "pending_payments" in proc.stderr

    out = tmp_path / "purge.csv"
    code, doc = cli_json("db.export", "--env", name, "--query", "purge", "--out", str(out))
    assert code == 1 and "read-only transaction" in doc["steps"][0]["targets"][0]["error"]
    assert pg.one("SELECT count(*) FROM payments") == 8000
    assert not out.exists() and not list(tmp_path.glob(".purge.csv*"))  # no partial file left behind
