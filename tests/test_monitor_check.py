"""monitor.check / monitor.report: the threshold table against real PostgreSQL and a local host; Nagios exits."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pg_support import PgDatabase, fresh_database
from tests.support import InventoryDir, cli_json, run_cli

ORDERS = "SELECT count(*) FROM orders WHERE created_at >= %(since)s AND created_at < %(until)s"


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


def seed(pg: PgDatabase, *, orders: int, failed: int) -> None:
    conn = pg.connect()
    conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())")
    conn.execute("INSERT INTO orders (created_at) SELECT now() - g * interval '7 minutes' "
                 "FROM generate_series(1, %s) g", (orders,))
    conn.execute("CREATE TABLE payments (id bigserial PRIMARY KEY, order_id bigint NOT NULL, "
                 "razorpay_payment_id text, amount numeric(12,2) NOT NULL, status text NOT NULL, "
                 "created_at timestamptz NOT NULL DEFAULT now())")
    conn.execute("INSERT INTO payments (order_id, amount, status, created_at) "
                 "SELECT g, 100, CASE WHEN g <= %s THEN 'failed' ELSE 'captured' END, now() - g * interval '1 minute' "
                 "FROM generate_series(1, 40) g", (failed,))


def environment(pg: PgDatabase, inventory: InventoryDir, tmp_path: Path, **metrics: Any) -> str:
    host = tmp_path / "web-1"
    host.mkdir()
    return pg.inventory(inventory, payments={"table": "payments"},
                        business_metrics=metrics or {"orders_per_hour": {"sql": ORDERS, "unit": "orders",
                                                                         "warning": 5, "critical": 1}},
                        groups={"web": {"hosts": {"web-1": {"vars": {"disk_paths": [str(host)]}}}}},
                        thresholds={"cpu_pct": {"warning": 101, "critical": 102}})


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (step,) = doc["steps"]
    (target,) = step["targets"]
    return {r["metric"]: r for r in target["data"]["metrics"]}


def test_check_reads_the_threshold_table_and_business_metrics(pg: PgDatabase, inventory: InventoryDir,
                                                             tmp_path: Path) -> None:
    """7 failed payments in the last hour (warning > 5) -> WARNING; no AWS -> those rows UNKNOWN, not OK."""
    seed(pg, orders=20, failed=7)
    env = environment(pg, inventory, tmp_path)
    code, doc = cli_json("monitor.check", "--env", env)
    table = rows(doc)
    assert table["payment_failures_per_hour"]["value"] == 7 and table["payment_failures_per_hour"]["severity"] == \
        "WARNING"
    assert table["payment_failures_per_hour"]["warning"] == 5 and table["payment_failures_per_hour"]["critical"] == 10
    assert table["business.orders_per_hour"]["value"] == 8 and table["business.orders_per_hour"]["severity"] == "OK"
    for metric in ("response_time_s", "error_rate_pct"):
        assert table[metric]["severity"] == "UNKNOWN" and "no aws/alb" in table[metric]["detail"]
    assert table["disk_pct"]["severity"] == "OK" and 0 < table["disk_pct"]["value"] <= 100
    assert 0 < table["memory_pct"]["value"] < 100 and table["cpu_pct"]["severity"] == "OK"
    assert code == 1 and doc["severity"] == "WARNING"

    human = run_cli("monitor.check", "--env", env)
    assert human.returncode == 1 and "payment_failures_per_hour" in human.stdout


def test_falling_business_metric_is_critical(pg: PgDatabase, inventory: InventoryDir, tmp_path: Path) -> None:
    """Lower is worse for orders per hour (critical < warning): no orders in the last hour -> CRITICAL, exit 2."""
    seed(pg, orders=0, failed=0)
    code, doc = cli_json("monitor.check", "--env", environment(pg, inventory, tmp_path))
    assert rows(doc)["business.orders_per_hour"]["severity"] == "CRITICAL" and code == 2


def test_inventory_sql_runs_read_only(pg: PgDatabase, inventory: InventoryDir, tmp_path: Path) -> None:
    """A data-modifying CTE passes the load-time pattern, but the READ ONLY transaction refuses it."""
    seed(pg, orders=3, failed=0)
    env = environment(pg, inventory, tmp_path, sneaky={
        "sql": "WITH gone AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM gone", "unit": "rows"})
    _code, doc = cli_json("monitor.check", "--env", env)
    row = rows(doc)["business.sneaky"]
    assert row["severity"] == "UNKNOWN" and "read-only transaction" in row["detail"]
    assert pg.one("SELECT count(*) FROM orders") == 3


def test_non_select_sql_is_refused_at_load(pg: PgDatabase, inventory: InventoryDir, tmp_path: Path) -> None:
    env = environment(pg, inventory, tmp_path, bad={"sql": "DELETE FROM orders", "unit": ""})
    proc = run_cli("monitor.check", "--env", env)
    assert proc.returncode == 2 and "business_metrics" in proc.stderr


def test_report_writes_a_chart_page_and_the_data(pg: PgDatabase, inventory: InventoryDir, tmp_path: Path) -> None:
    seed(pg, orders=30, failed=3)
    env = environment(pg, inventory, tmp_path)
    out = tmp_path / "report"
    proc = run_cli("monitor.report", "--env", env, "--since", "6h", "--out", str(out), "--check")
    assert proc.returncode == 0 and not out.exists()

    proc = run_cli("monitor.report", "--env", env, "--since", "6h", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "data.json").read_text())
    orders = data["series"]["business.orders_per_hour"]
    assert len(orders["points"]) == 24 and sum(v for _t, v in orders["points"]) == 30  # 15-minute buckets
    failures = data["series"]["payment_failures_per_hour"]
    assert sum(v for _t, v in failures["points"]) * 0.25 == 3
    table = list(csv.DictReader(io.StringIO((out / "data.csv").read_text())))
    assert {r["series"] for r in table} == set(data["series"])
    page = (out / "report.html").read_text()
    svgs = [chunk.split("</figure>")[0] for chunk in page.split("<figure>")[1:]]
    assert len(svgs) == len(data["series"])
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
    assert "stroke-dasharray" in svgs[0] or "stroke-dasharray" in page  # threshold lines
