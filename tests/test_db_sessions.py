"""db.kill-idle and db.kill-long against real sessions: only the application's own, never ours, capped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from indostar_ops import Context, Runner
from indostar_ops.steps.postgres.sessions import KillIdle
from tests.pg_support import Background, PgDatabase, fresh_database, wait_aged, wait_for
from tests.support import InventoryDir, cli_json

LIMIT_MIN = 0.01  # 0.6 s: the sessions below are made "old" by polling their age past it, not ten minutes
AGED_S = LIMIT_MIN * 60 + 0.1


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


def alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether a session still works (a terminated one raises on its next statement)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for step in doc["steps"] for t in step["targets"]]


def test_kill_idle_ends_only_the_applications_own_idle_sessions(pg: PgDatabase, inventory: InventoryDir) -> None:
    """Check mode kills nothing; apply ends the app role's idle sessions only; a re-run is a no-op with a reason."""
    idle = [pg.connect(application="backend") for _ in range(3)]
    in_tx = pg.connect(application="celery")
    in_tx.execute("BEGIN")
    in_tx.execute("SELECT 1")
    other_app = pg.connect(user=pg.other_role(), application="backend")
    superuser = pg.connect(user=pg.other_role(superuser=True), application="backend")
    elsewhere = pg.connect(application="backend", dbname="postgres")
    busy = Background(pg.connect(application="backend"), "SELECT pg_sleep(20)")
    victims = sorted([c.info.backend_pid for c in idle] + [in_tx.info.backend_pid])
    wait_aged(pg, victims, AGED_S)
    name = pg.inventory(inventory)

    code, doc = cli_json("db.kill-idle", "--env", name, "--minutes", str(LIMIT_MIN), "--check")
    assert code == 0, doc
    assert sorted(int(t["target"].split()[1]) for t in targets(doc)) == victims
    assert all(t["status"] == "changed" and t["changes"][0]["destructive"] for t in targets(doc))
    assert all(alive(c) for c in idle)  # nothing was terminated (and they are idle again from now)
    wait_aged(pg, victims, AGED_S)

    code, doc = cli_json("db.kill-idle", "--env", name, "--minutes", str(LIMIT_MIN))
    assert code == 0, doc
    assert sorted(int(t["target"].split()[1]) for t in targets(doc) if t["status"] == "changed") == victims
    assert not any(alive(c) for c in [*idle, in_tx])
    assert all(alive(c) for c in (other_app, superuser, elsewhere))
    assert busy.thread.is_alive() and busy.error is None

    code, doc = cli_json("db.kill-idle", "--env", name, "--minutes", str(LIMIT_MIN))
    assert code == 0 and [t["status"] for t in targets(doc)] == ["ok"]
    assert f"no session of role {pg.role} in database {pg.name} idle for more than" in targets(doc)[0]["reason"]


def test_kill_idle_never_ends_our_own_sessions(pg: PgDatabase, inventory: InventoryDir) -> None:
    """Running as the application's own role (no admin_user), the tool's idle sessions survive, the app's do not."""
    victim = pg.connect(application="backend")
    inventory.write("own", {"tier": "staging", "connection": "local",
                            "database": {"host": pg.host, "port": pg.port, "name": pg.name, "user": pg.role}})
    env = inventory.load("own")
    with Context(env) as ctx:
        ours = ctx.postgres().fetch("SELECT pg_backend_pid() AS pid")[0]["pid"]
        wait_aged(pg, [victim.info.backend_pid, ours], AGED_S)
        result = Runner(ctx).run([KillIdle(minutes=LIMIT_MIN)], task="db.kill-idle").raise_on_failure()
        assert [r.target for r in result.results] == [f"pid {victim.info.backend_pid}"]
        assert ctx.postgres().fetch("SELECT pg_backend_pid() AS pid")[0]["pid"] == ours
    assert not alive(victim)


def test_kill_idle_on_production_lists_and_waits_for_yes(pg: PgDatabase, inventory: InventoryDir) -> None:
    """On production, even at a terminal, the sessions are listed and none is ended without --yes."""
    victim = pg.connect(application="backend")
    wait_aged(pg, [victim.info.backend_pid], AGED_S)
    env = inventory.load(pg.inventory(inventory, tier="production"))
    with Context(env, interactive=True, confirm=lambda _prompt: True) as ctx:
        result = Runner(ctx).run([KillIdle(minutes=LIMIT_MIN)], task="db.kill-idle")
    (refused,) = result.results
    assert refused.status == "failed" and f"pid {victim.info.backend_pid} " in (refused.error or "")
    assert "--yes" in (refused.error or "") and alive(victim)
    wait_aged(pg, [victim.info.backend_pid], AGED_S)

    code, doc = cli_json("db.kill-idle", "--env", env.name, "--minutes", str(LIMIT_MIN), "--yes")
    assert code == 0 and [t["status"] for t in targets(doc)] == ["changed"]
    assert not alive(victim)


def test_kill_long_ends_the_oldest_queries_up_to_the_cap(pg: PgDatabase, inventory: InventoryDir) -> None:
    """Two runaway queries, --max 1: the older one is terminated, the other is listed as left running."""
    older = Background(pg.connect(application="backend"), "SELECT pg_sleep(30)")
    wait_aged(pg, [older.pid], 0.05, since="query_start")  # so the newer one is strictly newer
    newer = Background(pg.connect(application="backend"), "SELECT pg_sleep(30)")
    quick = pg.connect(application="backend")
    wait_aged(pg, [older.pid, newer.pid], AGED_S, since="query_start")
    name = pg.inventory(inventory)

    code, doc = cli_json("db.kill-long", "--env", name, "--minutes", str(LIMIT_MIN), "--max", "1")
    assert code == 0, doc
    by_pid = {int(t["target"].split()[1]): t for t in targets(doc)}
    assert set(by_pid) == {older.pid, newer.pid}
    assert by_pid[older.pid]["status"] == "changed" and "pg_sleep(30)" in by_pid[older.pid]["changes"][0]["summary"]
    assert by_pid[newer.pid]["status"] == "ok" and "over the --max 1 cap" in by_pid[newer.pid]["reason"]
    assert isinstance(older.join(), psycopg.OperationalError)
    assert newer.thread.is_alive() and alive(quick)
    wait_for(lambda: pg.one("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (older.pid,)) == 0)
