"""diagnose.*: real PostgreSQL, real Redis and the local fake of Sentry/status pages; findings ranked, remedies real."""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from indostar_ops.steps.diagnose import PROBES
from indostar_ops.steps.diagnose.probes import ISSUES
from tests.pg_support import PgDatabase, flush_stats, fresh_database, wait_for
from tests.rig import fakeapis
from tests.support import InventoryDir, cli_json, run_cli

RANK = {"CRITICAL": 3, "WARNING": 2, "UNKNOWN": 1, "OK": 0}
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[fakeapis.FakeApis]:
    with fakeapis.running() as server:
        for name, value in fakeapis.secrets_env(server).items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture
def queue(redis_url: str) -> Iterator[tuple[Any, str]]:
    client = redis.Redis.from_url(redis_url)
    name = f"celery-test-{secrets.token_hex(4)}"
    yield client, name
    client.delete(name, f"{name}:failed")
    client.close()


def seed_shop(pg: PgDatabase, pending: int = 4, failed: int = 0) -> None:
    """The application's payments table with pending rows, and a big table read only by sequential scans."""
    conn = pg.connect()
    conn.execute("CREATE TABLE payments (id bigserial PRIMARY KEY, order_id bigint NOT NULL, "
                 "razorpay_payment_id text, amount numeric(12,2) NOT NULL, status text NOT NULL, "
                 "created_at timestamptz NOT NULL DEFAULT now())")
    conn.execute("INSERT INTO payments (order_id, razorpay_payment_id, amount, status, created_at) "
                 "SELECT g, 'pay_T' || g, 499, 'pending', now() - g * interval '10 minutes' "
                 "FROM generate_series(1, %s) g", (pending,))
    conn.execute("INSERT INTO payments (order_id, razorpay_payment_id, amount, status) "
                 "SELECT 100 + g, 'pay_F' || g, 10, 'failed' FROM generate_series(1, %s) g", (failed,))
    conn.execute("CREATE TABLE products (id bigserial PRIMARY KEY, category_id int, name text)")
    conn.execute("INSERT INTO products (category_id, name) SELECT g % 40, 'p' || g FROM generate_series(1, 20000) g")
    for _ in range(3):
        conn.execute("SELECT count(*) FROM products WHERE category_id = 7")
    flush_stats(conn)


def write_env(inventory: InventoryDir, pg: PgDatabase, fake: fakeapis.FakeApis, redis_url: str, queue: str,
              root: Path, **extra: Any) -> str:
    urls = fakeapis.urls(fake)
    (root / "web-1").mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "urls": urls["urls"], "sentry": urls["sentry"], "status_pages": urls["status_pages"],
        "redis": {"url": redis_url, "queues": [queue], "failed_queue": f"{queue}:failed"},
        "payments": {"razorpay": urls["payments_razorpay"], "reconcile_hook": urls["reconcile_hook"]},
        "diagnose": {"probe_timeout_s": 10, "seq_scan_min_rows": 10000},
        "groups": {"web": {"hosts": {"web-1": {"vars": {"disk_paths": [str(root / "web-1")],
                                                        "disk_report_roots": [str(root / "web-1")]}}}}},
    }
    data.update(extra)
    return pg.inventory(inventory, **data)


def findings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    (step,) = doc["steps"]
    (target,) = step["targets"]
    return list(target["data"]["findings"])


def by_probe(found: list[dict[str, Any]], probe: str) -> dict[str, Any]:
    matches = [f for f in found if f["probe"] == probe]
    assert matches, f"no finding from {probe}: {[f['probe'] for f in found]}"
    return matches[0]


def test_diagnose_all_ranks_real_findings_with_runnable_remedies(pg: PgDatabase, fake: fakeapis.FakeApis,
                                                                queue: tuple[Any, str], redis_url: str,
                                                                inventory: InventoryDir, tmp_path: Path) -> None:
    """A queue backlog, stuck payments, a payment error spike and Razorpay down: each found, worst first."""
    client, name = queue
    client.rpush(name, *(["task"] * 1200))
    client.rpush(f"{name}:failed", "boom")
    seed_shop(pg, pending=4)
    fake.state["status"]["razorpay"] = ["major", "Major Outage"]
    env = write_env(inventory, pg, fake, redis_url, name, tmp_path / "hosts")

    started = time.monotonic()
    code, doc = cli_json("diagnose.all", "--env", env)
    took = time.monotonic() - started
    found = findings(doc)
    assert code == 2 and doc["severity"] == "CRITICAL", doc
    ranks = [RANK[f["severity"]] for f in found]
    assert ranks == sorted(ranks, reverse=True), [(f["probe"], f["severity"]) for f in found]

    razorpay = by_probe(found, "status.razorpay")
    assert razorpay["severity"] == "CRITICAL" and "Major Outage" in razorpay["summary"]
    assert "Razorpay service down" in razorpay["likely_cause"]

    backlog = by_probe(found, "celery.queues")
    assert backlog["severity"] == "WARNING" and backlog["evidence"] == {"queue": name, "length": 1200}
    assert backlog["threshold"] == "warning > 1000, critical > 10000"
    assert backlog["remediation"]["command"] == f"invoke celery.scale --env {env} --replicas 3 --check"
    failed = [f for f in found if f["probe"] == "celery.queues" and f["evidence"]["queue"] == f"{name}:failed"]
    assert failed[0]["severity"] == "WARNING" and failed[0]["evidence"]["length"] == 1

    pending = by_probe(found, "payments.pending")
    assert pending["severity"] == "WARNING" and pending["evidence"]["pending_1h"] == 4
    assert pending["remediation"]["command"] == f"invoke payments.reconcile --env {env} --since 24h --check"

    sentry = by_probe(found, "sentry.payments")
    titles = [i["title"] for i in sentry["evidence"]["issues"]]
    assert titles and all("payment" in t.lower() or "razorpay" in t.lower() for t in titles), titles
    queries = [c["query"] for c in fake.calls("/sentry/api/0/organizations/indostar/issues/")]
    assert any("payment" in q and "statsPeriod=1h" in q for q in queries)
    assert all(c["headers"]["authorization"] == "Bearer " + fake.state["sentry_token"]
               for c in fake.calls("/sentry"))

    index = by_probe(found, "database.missing-indexes")
    assert index["severity"] == "WARNING" and index["evidence"]["tables"][0]["table"] == "products"
    version = int(pg.one("SHOW server_version_num"))
    if version < 160000:
        assert "needs PostgreSQL 16+" in index["evidence"]["generic_plan"]

    assert by_probe(found, "app.health")["severity"] == "OK"
    assert by_probe(found, "database.connect")["severity"] == "OK"
    timing = doc["steps"][0]["targets"][0]["data"]
    assert {p["probe"] for p in timing["probes"]} == {p.name for p in PROBES}  # every probe ran and answered
    assert {p["status"] for p in timing["probes"]} == {"ok"}
    assert timing["wall_s"] < sum(p["duration"] for p in timing["probes"])  # concurrent, not one after another
    assert took < 30


def test_every_remediation_is_a_real_task_with_valid_flags(pg: PgDatabase, fake: fakeapis.FakeApis,
                                                          queue: tuple[Any, str], redis_url: str,
                                                          inventory: InventoryDir, tmp_path: Path) -> None:
    """Every `next:` command parses against the CLI's own task list; a printed one runs as pasted."""
    from indostar_ops.tasks import namespace

    client, name = queue
    client.rpush(name, *(["task"] * 1100))
    seed_shop(pg, pending=3, failed=12)
    fake.state["status"]["twilio"] = ["minor", "Degraded SMS delivery"]
    env = write_env(inventory, pg, fake, redis_url, name, tmp_path / "hosts")
    _code, doc = cli_json("diagnose.all", "--env", env)
    commands = [f["remediation"]["command"] for f in findings(doc) if f.get("remediation", {}).get("command")]
    assert len(commands) >= 4, findings(doc)
    for command in commands:
        argv = shlex.split(command)
        assert argv[:1] == ["invoke"] and argv[2:4] == ["--env", env], command
        task = namespace[argv[1]]
        flags = {n.replace("_", "-") for a in task.get_arguments() for n in a.names}
        for word in argv[2:]:
            if word.startswith("--"):
                assert word[2:] in flags, f"{command}: {word} is not a flag of {argv[1]}"
    reconcile = next(c for c in commands if c.startswith("invoke payments.reconcile"))
    proc = run_cli(*shlex.split(reconcile)[1:])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not fake.calls("/backend/reconcile")  # --check: the hook was not called


def test_each_issue_runs_only_its_probes(pg: PgDatabase, fake: fakeapis.FakeApis, queue: tuple[Any, str],
                                         redis_url: str, inventory: InventoryDir, tmp_path: Path) -> None:
    """diagnose.<issue> runs that issue's probes only; its exit code is the worst finding's."""
    from indostar_ops import Context, Runner
    from indostar_ops.steps.diagnose import Diagnose

    seed_shop(pg)
    env = write_env(inventory, pg, fake, redis_url, queue[1], tmp_path / "hosts")
    for issue in ISSUES:
        with Context(inventory.load(env), check=True) as ctx:
            result = Runner(ctx).run([Diagnose.for_issue(issue)], task=f"diagnose.{issue}")
        found = result.results[0].data["findings"]
        assert found and all(issue in f["issues"] for f in found), (issue, found)
        worst = max(found, key=lambda f: RANK[f["severity"]])["severity"]
        assert result.exit_code(monitoring=True) == EXIT[worst], issue
    code, doc = cli_json("diagnose.db-pool", "--env", env)  # and as a user runs it
    assert code == EXIT[doc["severity"]] and {p["probe"] for p in doc["steps"][0]["targets"][0]["data"]["probes"]} \
        == {"database.connections", "database.long-queries"}


def test_a_hanging_probe_is_unknown_and_costs_only_its_timeout(pg: PgDatabase, fake: fakeapis.FakeApis,
                                                              queue: tuple[Any, str], redis_url: str,
                                                              inventory: InventoryDir, tmp_path: Path) -> None:
    """Sentry accepts the connection and never answers: that probe is UNKNOWN, the others still report."""
    from indostar_ops import Context, Runner
    from indostar_ops.steps.diagnose import Diagnose

    seed_shop(pg)
    fake.state["hang"] = {"/sentry": 30}
    env = write_env(inventory, pg, fake, redis_url, queue[1], tmp_path / "hosts")
    timeout = 2.0
    started = time.monotonic()
    with Context(inventory.load(env), check=True) as ctx:
        result = Runner(ctx).run([Diagnose(timeout=timeout)], task="diagnose.all")
    took = time.monotonic() - started
    assert took < timeout + 2, took
    data = result.results[0].data
    sentry = [f for f in data["findings"] if f["probe"].startswith("sentry.")]
    assert {f["severity"] for f in sentry} == {"UNKNOWN"}
    assert all(f"did not answer within {timeout:g}s" in f["summary"] for f in sentry)
    assert by_probe(data["findings"], "database.connect")["severity"] == "OK"
    assert result.exit_code(monitoring=True) in (1, 2, 3)


def test_missing_backends_are_unknown_never_ok(pg: PgDatabase, inventory: InventoryDir) -> None:
    """No sentry/alb/platform/status pages in the inventory: those probes say so as UNKNOWN."""
    env = pg.inventory(inventory)
    code, doc = cli_json("diagnose.errors", "--env", env)
    found = findings(doc)
    for probe, words in (("sentry.errors", "no sentry section"), ("alb.error-rate", "no aws/alb section"),
                         ("status.providers", "no status page URL")):
        f = by_probe(found, probe)
        assert f["severity"] == "UNKNOWN" and words in f["summary"], f
    assert by_probe(found, "database.connect")["severity"] == "OK"
    assert code == 3 and doc["severity"] == "UNKNOWN"


def test_database_down_is_critical_with_the_runbook_cause(inventory: InventoryDir) -> None:
    inventory.write("down", {"tier": "staging", "connection": "local",
                             "database": {"host": "127.0.0.1", "port": 1, "name": "x", "user": "x",
                                          "connect_timeout": 2}})
    code, doc = cli_json("diagnose.app-down", "--env", "down")
    f = by_probe(findings(doc), "database.connect")
    assert code == 2 and f["severity"] == "CRITICAL" and f["likely_cause"] == "database connection lost"


def test_unknown_probe_name_is_a_usage_error(pg: PgDatabase, inventory: InventoryDir) -> None:
    proc = run_cli("diagnose.all", "--env", pg.inventory(inventory), "--only", "sentry.eror")
    assert proc.returncode == 2 and "unknown probe(s) sentry.eror" in proc.stderr


def test_sentry_rejecting_the_token_is_unknown_with_a_hint(pg: PgDatabase, fake: fakeapis.FakeApis,
                                                          queue: tuple[Any, str], redis_url: str,
                                                          inventory: InventoryDir, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INDOSTAR_TEST_SENTRY_TOKEN", "wrong")
    env = write_env(inventory, pg, fake, redis_url, queue[1], tmp_path / "hosts")
    _code, doc = cli_json("diagnose.all", "--env", env, "--only", "sentry.errors")
    (f,) = findings(doc)
    assert f["severity"] == "UNKNOWN" and "Sentry API answered 401" in f["summary"] and "token" in f["summary"]
    assert "wrong" not in str(doc)  # the secret is masked everywhere


def test_connections_near_the_limit_point_at_kill_idle(pg: PgDatabase, inventory: InventoryDir) -> None:
    """Real idle sessions past the thresholds: WARNING, the idle count, and db.kill-idle as the next step."""
    for _ in range(4):
        pg.connect(application="backend")
    total = int(pg.one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
    max_conn = int(pg.one("SHOW max_connections"))
    pct = 100.0 * total / max_conn
    env = pg.inventory(inventory, thresholds={"db_connections_pct": {"warning": pct / 2, "critical": 100}},
                       database={"idle_minutes": 0.001})
    wait_for(lambda: pg.one("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'idle' "
                            "AND state_change < now() - interval '100 milliseconds'", (pg.name,)) >= 4)
    _code, doc = cli_json("diagnose.db-pool", "--env", env)
    f = by_probe(findings(doc), "database.connections")
    assert f["severity"] == "WARNING", f
    assert f["evidence"]["idle_over_minutes"]["count"] >= 4
    assert f["remediation"]["command"] == f"invoke db.kill-idle --env {env} --check"
    with psycopg.connect(host=pg.host, port=pg.port, dbname=pg.name, user=pg.admin_user) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_benchmark_smoke(pg: PgDatabase, fake: fakeapis.FakeApis, queue: tuple[Any, str], redis_url: str,
                         inventory: InventoryDir, tmp_path: Path) -> None:
    """benchmarks/diagnose.py's measurement runs (so it cannot rot): wall time close to the slowest probe."""
    from benchmarks.diagnose import one_run

    seed_shop(pg)
    env = write_env(inventory, pg, fake, redis_url, queue[1], tmp_path / "hosts")
    run = one_run(env)
    assert run["probes"] == len(PROBES) and run["statuses"] == ["ok"], run["errors"]
    assert run["slowest_probe_s"] <= run["wall_s"] < run["sum_probes_s"]
