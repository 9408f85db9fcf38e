"""Issue 8, database half: each test pins a class of bug that the first wave's suite did not notice.

Check mode on the SQL write path and at the server; reports read as the plain application role
(no pg_monitor) never undercount silently; our own statements carry a marker; the monitoring
tasks' --help states their exit codes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from indostar_ops import Context, Runner
from indostar_ops.connectors.postgres import MARK
from indostar_ops.errors import CheckModeViolation, StepError, UsageError, VerificationFailed
from indostar_ops.step import Outcome
from indostar_ops.steps.postgres.estimate import MIN_TRUSTED_PAGES, NOISE_PAGES, Bloat
from indostar_ops.steps.postgres.reindex import Reindex
from indostar_ops.steps.postgres.sessions import KillIdle, KillLong
from indostar_ops.steps.postgres.stats import BloatReport
from indostar_ops.steps.postgres.vacuum import Vacuum
from tests.pg_support import PgDatabase, churn, flush_stats, fresh_database, relation, seed, wait_aged
from tests.support import InventoryDir, cli_json, run_cli


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for step in doc["steps"] for t in step["targets"]]


def target(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = targets(doc)
    return only


def run(env: Any, step: Any, *, check: bool = False) -> Any:
    with Context(env, check=check) as ctx:
        return Runner(ctx).run([step], task=step.name)


def alive(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def as_app_role(pg: PgDatabase, inventory: InventoryDir, name: str = "app", **extra: Any) -> str:
    """The environment as the shipped prod inventory connects: database.user only, no admin_user."""
    inventory.write(name, {"tier": "staging", "connection": "local",
                           "database": {"host": pg.host, "port": pg.port, "name": pg.name, "user": pg.role},
                           **extra})
    return name


def journal_events(tmp_path: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted((tmp_path / "journal").rglob("*.jsonl")):
        events += [json.loads(line) for line in path.read_text().splitlines()]
    return events


def journal_actions(tmp_path: Path) -> list[dict[str, Any]]:
    return [e for e in journal_events(tmp_path) if str(e.get("event", "")).startswith("action.")]


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


def test_monitoring_db_tasks_state_their_exit_codes() -> None:
    """`invoke --help db.X` prints the task's docstring: each monitoring task states its exit codes there."""
    from indostar_ops.tasks import db

    for task in (db.activity, db.locks, db.slow_queries, db.bloat, db.pool_advice):
        assert "Exit 0/1" in (task.__doc__ or "") and "OK/WARNING" in (task.__doc__ or ""), task.name
    proc = run_cli("--help", "db.activity")
    assert proc.returncode == 0 and "Exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN" in proc.stdout, proc.stdout


# ---------------------------------------------------------------- bloat estimates: a floor and their noise


def test_bloat_decisions_ignore_the_estimates_noise() -> None:
    """The last partial page of a small relation is not bloat; a difference of a page or two never is."""
    block = 8192
    assert not Bloat(2 * block, block, "pgstattuple").over(30)  # a one-leaf index: "50 %"
    assert not Bloat(MIN_TRUSTED_PAGES * block - 1, 10 * block, "statistics").over(30)
    assert not Bloat(200 * block, NOISE_PAGES * block, "statistics").over(0)
    assert Bloat(200 * block, 80 * block, "statistics").over(30)
    assert Bloat(MIN_TRUSTED_PAGES * block, 8 * block, "pgstattuple").over(30)


@pytest.mark.parametrize("pgstattuple", [True, False], ids=["pgstattuple", "statistics"])
def test_fresh_indexes_are_never_rebuilt_even_with_no_minimum_size(pg: PgDatabase, inventory: InventoryDir,
                                                                   pgstattuple: bool) -> None:
    """reindex_min_mb 0: freshly built indexes of 2 to ~40 pages are left alone, run after run (no rebuild loop)."""
    app = pg.connect()
    for rows in (50, 400, 800, 3_000, 6_000, 12_000):  # 2, 4, 5, 11, 19, 35 pages: estimates of 0-50 %
        seed(app, f"t{rows}", rows)
    if pgstattuple:
        pg.admin().execute("CREATE EXTENSION pgstattuple")
    names = [f"t{rows}_{col}" for rows in (50, 400, 800, 3_000, 6_000, 12_000) for col in ("pkey", "val_idx")]
    before = {n: relation(pg, n)["relfilenode"] for n in names}
    env = inventory.load(pg.inventory(inventory, database={"reindex_min_mb": 0}))
    for _ in range(2):
        (result,) = run(env, Reindex(all_bloated=True)).raise_on_failure().results
        assert result.status == "ok" and "no index to rebuild: 12 index(es) checked" in (result.reason or "")
        assert "not trusted" in (result.reason or "")
    assert {n: relation(pg, n)["relfilenode"] for n in names} == before

    # the estimates themselves, re-measured: trusted ones (>= the floor) of fresh indexes stay well under 30 %
    (report,) = run(env, BloatReport(limit=50)).results
    indexes = report.data["indexes"]
    assert len(indexes) == 12 and not report.data["bloated_indexes"]
    for index in indexes:
        assert index["trusted"] == (index["bytes"] >= MIN_TRUSTED_PAGES * 8192), index
        if index["trusted"]:
            assert index["bloat_pct"] < 10, index


def test_bloat_names_a_table_that_does_not_exist(pg: PgDatabase, inventory: InventoryDir) -> None:
    """db.bloat --table no_such says so, like vacuum/analyze do, instead of an empty, healthy-looking report."""
    seed(pg.connect(), "orders", 10, indexes=())
    code, doc = cli_json("db.bloat", "--env", pg.inventory(inventory), "--table", "no_such")
    assert code != 0 and "no table named 'no_such'" in target(doc)["error"], doc


def test_reindex_verify_tolerates_the_estimate_after_a_rebuild(pg: PgDatabase, inventory: InventoryDir) -> None:
    """--threshold 0: the rebuilt index still "estimates" a few % of bloat; verify checks the rebuild itself."""
    app = pg.connect()
    seed(app, "orders", 20_000, indexes=())
    churn(app, "orders", keep_every=3)
    app.execute("VACUUM ANALYZE orders")
    before = relation(pg, "orders_pkey")
    code, doc = cli_json("db.reindex", "--env", pg.inventory(inventory, database={"reindex_min_mb": 0}),
                         "--index", "orders_pkey", "--threshold", "0")
    assert code == 0, doc
    (result,) = targets(doc)
    assert result["status"] == "changed", result
    after = relation(pg, "orders_pkey")
    assert after["relfilenode"] != before["relfilenode"] and after["valid"]


def test_reindex_verify_fails_when_the_index_was_not_replaced(pg: PgDatabase, inventory: InventoryDir) -> None:
    """The second half of that verify: an index whose relfilenode did not change was not rebuilt."""
    app = pg.connect()
    seed(app, "orders", 20_000, indexes=())
    churn(app, "orders")
    app.execute("VACUUM ANALYZE orders")
    env = inventory.load(pg.inventory(inventory, database={"reindex_min_mb": 0}))
    step = Reindex(indexes=["orders_pkey"])
    with Context(env) as ctx:
        (index,) = step.targets(ctx)
        plan = step.plan(step.check(ctx, index))
        assert plan.changes and plan.data["rebuild"]
        with pytest.raises(VerificationFailed, match="was not replaced"):
            step.verify(ctx, index, plan, Outcome())


def test_reindex_statements_never_overlap(pg: PgDatabase, inventory: InventoryDir, tmp_path: Path) -> None:
    """Four bloated indexes with parallelism 8: each REINDEX starts only after the previous one ended."""
    app = pg.connect()
    for table in ("a", "b"):
        seed(app, table, 20_000)
        churn(app, table)
        app.execute(f"VACUUM ANALYZE {table}")
    env = inventory.load(pg.inventory(inventory, parallelism=8, database={"reindex_min_mb": 0}))
    with Context(env) as ctx:
        result = Runner(ctx, parallelism=8).run([Reindex(all_bloated=True)], task="db.reindex").raise_on_failure()
    assert len(result.results) == 4 and {r.status for r in result.results} == {"changed"}
    # one index at a time, rebuild *and* verify: the next REINDEX starts after the previous target's result
    events = [e["event"] for e in journal_events(tmp_path)
              if e["event"] == "target.result" or (e["event"].startswith("action.") and e.get("kind") == "sql")]
    assert events == ["action.start", "action.end", "target.result"] * 4, events


# ---------------------------------------------------------------- VACUUM FULL


def test_vacuum_full_is_chosen_by_heap_bloat_not_dead_rows(pg: PgDatabase, inventory: InventoryDir) -> None:
    """62 % of a table deleted and vacuumed: no dead rows, but most of the heap is empty; --full rewrites it."""
    app = pg.connect()
    seed(app, "events", 30_000, indexes=())
    seed(app, "clean", 30_000, indexes=())
    app.execute("DELETE FROM events WHERE id % 8 < 5")
    flush_stats(app)  # the DELETE's counters first, or they land after VACUUM's reset
    app.execute("VACUUM ANALYZE events")
    flush_stats(app)
    assert pg.one("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'events'") == 0
    before, clean = relation(pg, "events"), relation(pg, "clean")
    name = pg.inventory(inventory)

    (planned,) = run(inventory.load(name), Vacuum(full=True), check=True).results
    assert planned.target == "public.events" and planned.status == "changed"
    assert "heap bloat" in planned.changes[0].summary and relation(pg, "events") == before

    code, doc = cli_json("db.vacuum", "--env", name, "--full")
    assert code == 0, doc
    (done,) = targets(doc)
    assert done["actions"][0]["sql"] == 'VACUUM (FULL, ANALYZE) "public"."events"'
    after = relation(pg, "events")
    assert after["relfilenode"] != before["relfilenode"] and after["bytes"] < before["bytes"] * 0.5
    assert relation(pg, "clean") == clean

    (again,) = run(inventory.load(name), Vacuum(full=True)).raise_on_failure().results
    assert again.status == "ok" and "no table needs VACUUM FULL" in (again.reason or "")

    proc = run_cli("--help", "db.vacuum")
    assert "heap bloat" in proc.stdout and "vacuum_full_bloat_pct" in proc.stdout


def _outside_window(inventory: InventoryDir, pg: PgDatabase) -> Any:
    now = datetime.now(ZoneInfo("Asia/Kolkata"))
    start = now + timedelta(hours=2)
    window = {"start": f"{start:%H:%M}", "end": f"{start + timedelta(hours=1):%H:%M}"}
    return inventory.load(pg.inventory(inventory, name="prod", tier="production", maintenance={"window": window}))


def test_vacuum_full_window_refusal_holds_for_library_and_playbook_use(pg: PgDatabase,
                                                                      inventory: InventoryDir) -> None:
    """Not only the task: a Runner (playbooks use one) refuses in preflight, and apply refuses on its own too."""
    app = pg.connect()
    seed(app, "events", 5_000, indexes=())
    churn(app, "events")
    env = _outside_window(inventory, pg)
    before = relation(pg, "events")
    with Context(env, assume_yes=True, interactive=False) as ctx, pytest.raises(UsageError,
                                                                                match="maintenance window"):
        Runner(ctx).run([Vacuum(full=True)], task="playbook")
    assert relation(pg, "events") == before

    step = Vacuum(full=True, tables=["events"])
    with Context(env, assume_yes=True, interactive=False) as ctx:  # the window closed between plan and apply
        (table,) = step.targets(ctx)
        plan = step.plan(step.check(ctx, table))
        assert plan.changes
        with pytest.raises(StepError, match="not started"):
            step.apply(ctx, table, plan)
    assert relation(pg, "events") == before


def test_a_blocked_maintenance_statement_fails_fast_with_the_lock_hint(pg: PgDatabase,
                                                                       inventory: InventoryDir) -> None:
    """database.lock_timeout: VACUUM behind a held lock fails in well under the statement timeout, naming db.locks."""
    app = pg.connect()
    seed(app, "orders", 2_000, indexes=())
    holder = pg.connect(application="migration")
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE orders IN SHARE UPDATE EXCLUSIVE MODE")
    name = pg.inventory(inventory, database={"lock_timeout": "300ms", "maintenance_timeout": "30s"})
    started = time.monotonic()
    code, doc = cli_json("db.vacuum", "--env", name, "--table", "orders", "--all")
    took = time.monotonic() - started
    (failed,) = targets(doc)
    assert code == 1 and failed["status"] == "failed", doc
    assert "could not get its lock within database.lock_timeout" in failed["error"] and "db.locks" in failed["error"]
    assert took < 15, took
    holder.execute("ROLLBACK")


# ---------------------------------------------------------------- ending sessions


@pytest.mark.parametrize("attribute", ["SUPERUSER", "REPLICATION"])
def test_kill_idle_never_ends_a_privileged_application_roles_sessions(pg: PgDatabase, inventory: InventoryDir,
                                                                      attribute: str) -> None:
    """database.user itself a superuser / replication role: its idle sessions are left alone, and it says why."""
    role = f"{pg.role}_priv"
    pg.admin().execute(f"CREATE ROLE {role} LOGIN {attribute}")
    pg.roles.append(role)
    idle = [pg.connect(user=role, application="backend") for _ in range(2)]
    wait_aged(pg, [c.info.backend_pid for c in idle], 0.7)
    inventory.write("priv", {"tier": "staging", "connection": "local",
                             "database": {"host": pg.host, "port": pg.port, "name": pg.name, "user": role,
                                          "admin_user": pg.admin_user}})
    kind = "a superuser" if attribute == "SUPERUSER" else "a replication role"
    for step in (KillIdle(minutes=0.01), KillLong(minutes=0.01)):
        (result,) = run(inventory.load("priv"), step).raise_on_failure().results
        assert result.status == "ok" and f"role {role} (database.user) is {kind}" in (result.reason or "")
    assert all(alive(c) for c in idle)


def test_kill_idle_says_so_when_it_cannot_see_the_applications_sessions(pg: PgDatabase,
                                                                       inventory: InventoryDir) -> None:
    """admin_user without pg_monitor: the app's idle sessions are hidden from it; never "no session idle"."""
    idle = [pg.connect(application="backend") for _ in range(2)]
    wait_aged(pg, [c.info.backend_pid for c in idle], 0.7)
    weak = pg.other_role()
    env = inventory.load(pg.inventory(inventory, database={"admin_user": weak}))
    (result,) = run(env, KillIdle(minutes=0.01)).results
    assert result.status == "failed", result
    assert f"2 session(s) of role {pg.role}" in (result.error or "") and "pg_monitor" in (result.error or "")
    assert all(alive(c) for c in idle)


def test_a_session_that_wakes_between_plan_and_apply_is_left_alone(pg: PgDatabase, inventory: InventoryDir) -> None:
    """The planned idle period is pinned (pid, backend start, state_change): a session busy again is not ended."""
    victim = pg.connect(application="backend")
    sleeper = pg.connect(application="backend")
    wait_aged(pg, [victim.info.backend_pid, sleeper.info.backend_pid], 0.7)
    env = inventory.load(pg.inventory(inventory))
    step = KillIdle(minutes=0.01)
    with Context(env) as ctx:
        planned = {t.pid: (t, step.plan(step.check(ctx, t))) for t in step.targets(ctx)}
        assert set(planned) == {victim.info.backend_pid, sleeper.info.backend_pid}
        victim.execute("SELECT 1")  # wakes up (and is idle again, in a new idle period)
        woke, plan = planned[victim.info.backend_pid]
        outcome = step.apply(ctx, woke, plan)
        assert outcome.data["terminated"] is False and "woke up" in (outcome.reason or "")
        assert alive(victim)
        gone, plan = planned[sleeper.info.backend_pid]
        assert step.apply(ctx, gone, plan).data["terminated"] is True
    assert not alive(sleeper)
