"""cache.* against the real Redis (databases 12 and 13, which no other test uses) and a private one with AUTH."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from indostar_ops import Context
from indostar_ops.steps.cache import CacheDelete
from tests.stack_support import redis_db_lock
from tests.support import InventoryDir, cli_json, run_cli

APP_DB = 12  # the inventory URL's database: cache keys and the Celery queues
OTHER_DB = 13


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for step in doc["steps"] for t in step["targets"]]


def calls(client: redis.Redis, command: str) -> int:
    """How often the server ran `command` so far (INFO commandstats): proves what was (not) sent."""
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture(scope="module", autouse=True)
def _own_databases(redis_url: str) -> Iterator[None]:
    with redis_db_lock(redis_url, APP_DB, OTHER_DB):
        yield


@pytest.fixture
def dbs(redis_url: str) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    base = redis_url.rsplit("/", 1)[0]
    app = redis.Redis.from_url(f"{base}/{APP_DB}", decode_responses=True)
    other = redis.Redis.from_url(f"{base}/{OTHER_DB}", decode_responses=True)
    app.flushdb()
    other.flushdb()
    yield app, other
    app.flushdb()
    other.flushdb()
    app.close()
    other.close()


@pytest.fixture
def env(inventory: InventoryDir, redis_url: str) -> str:
    base = redis_url.rsplit("/", 1)[0]
    inventory.write("cachetest", {"tier": "staging", "connection": "local",
                                  "redis": {"url": f"{base}/{APP_DB}", "queues": ["celery", "mail"]}})
    inventory.write("cacheprod", {"tier": "production", "connection": "local",
                                  "redis": {"url": f"{base}/{APP_DB}"}})
    return "cachetest"


def seed(client: redis.Redis, prefix: str, n: int, ttl: int | None = 600) -> list[str]:
    pipe = client.pipeline()
    keys = [f"{prefix}:{i:04d}" for i in range(n)]
    for key in keys:
        pipe.set(key, "x" * 100, ex=ttl)
    pipe.execute()
    return keys


def test_info_reports_memory_hit_rate_clients_and_a_latency_sample(env: str, dbs: Any) -> None:
    app, _ = dbs
    app.set("orders:1", "cached")
    app.get("orders:1")
    app.get("orders:missing")
    code, doc = cli_json("cache.info", "--env", env, "--pings", "5")
    assert code == 0, doc
    [result] = targets(doc)
    assert result["target"].endswith(f":6379/{APP_DB}") and result["severity"] == "OK"
    data = result["data"]
    assert data["used_memory"] > 0 and data["connected_clients"] >= 1
    assert data["hits"] >= 1 and data["misses"] >= 1 and 0 < data["hit_rate_pct"] < 100
    assert data["latency_ms"]["samples"] == 5 and 0 < data["latency_ms"]["min"] <= data["latency_ms"]["max"]
    assert data["keyspace"][f"db{APP_DB}"]["keys"] >= 1
    assert "hit rate" in result["reason"] and "latency avg" in result["reason"]


def test_keys_lists_type_ttl_and_size_by_scan_never_keys(env: str, dbs: Any) -> None:
    app, _ = dbs
    seed(app, "orders", 30)
    app.set("orders:forever", "v")
    app.rpush("celery", "task")  # a queue in the inventory: listed as such
    seed(app, "session", 5)
    keys_before = calls(app, "keys")
    code, doc = cli_json("cache.keys", "--env", env, "--pattern", "orders:*")
    assert code == 0, doc
    [result] = targets(doc)
    listed = {k["key"]: k for k in result["data"]["keys"]}
    assert len(listed) == 31 and not any(k.startswith("session") for k in listed)
    assert listed["orders:0001"]["type"] == "string" and 590 <= listed["orders:0001"]["ttl_s"] <= 600
    assert listed["orders:0001"]["bytes"] > 100 and listed["orders:forever"]["ttl_s"] is None
    assert result["data"]["complete"] is True
    assert calls(app, "keys") == keys_before  # KEYS was never sent

    code, doc = cli_json("cache.keys", "--env", env, "--pattern", "*", "--limit", "10")
    [result] = targets(doc)
    assert len(result["data"]["keys"]) <= 10 and result["data"]["complete"] is False
    assert "more may match" in result["reason"]


def test_delete_unlinks_exactly_the_previewed_keys_in_batches(env: str, dbs: Any) -> None:
    app, _ = dbs
    victims = seed(app, "orders", 1200)
    keep = seed(app, "session", 3)
    app.rpush("celery", "queued-task")  # matches 'c*' below: a queue is never deleted as a cache key
    unlinks = calls(app, "unlink")

    code, doc = cli_json("cache.delete", "--env", env, "--pattern", "orders:*", "--check")
    assert code == 0, doc
    [result] = targets(doc)
    change = result["changes"][0]
    assert result["status"] == "changed" and change["before"]["count"] == 1200 and change["destructive"]
    assert change["before"]["keys"][0] == "orders:0000" and change["before"]["keys"][-1] == "... 1180 more"
    assert app.dbsize() == 1204 and calls(app, "unlink") == unlinks  # check mode sent no write

    code, doc = cli_json("cache.delete", "--env", env, "--pattern", "orders:*")
    assert code == 0, doc
    [result] = targets(doc)
    assert result["status"] == "changed" and "unlinked 1200 of 1200" in result["reason"]
    assert calls(app, "unlink") == unlinks + 3  # 500 + 500 + 200
    assert [a["kind"] for a in result["actions"]] == ["redis"] * 3
    assert not app.exists(*victims) and app.exists(*keep) == 3

    code, doc = cli_json("cache.delete", "--env", env, "--pattern", "orders:*")
    assert code == 0 and targets(doc)[0]["status"] == "ok"
    assert "no key matches 'orders:*'" in targets(doc)[0]["reason"]

    code, doc = cli_json("cache.delete", "--env", env, "--pattern", "c*")
    assert code == 0 and app.llen("celery") == 1
    assert "left alone: Celery queue(s) celery (use celery.purge)" in targets(doc)[0]["reason"]


def test_delete_leaves_keys_created_after_the_preview(env: str, dbs: Any, inventory: InventoryDir) -> None:
    """What the plan listed is what is deleted: a matching key written in between survives."""
    app, _ = dbs
    seed(app, "orders", 3)
    step = CacheDelete("orders:*")
    with Context(inventory.load(env)) as ctx:
        [target] = step.targets(ctx)
        plan = step.plan(step.check(ctx.scoped(step.name, str(target)), target))
        app.set("orders:late", "new")
        outcome = step.apply(ctx.scoped(step.name, str(target)), target, plan)
    assert outcome.data["deleted"] == 3
    assert app.keys("orders:*") == ["orders:late"]


def test_delete_refuses_a_pattern_matching_everything(env: str, dbs: Any) -> None:
    app, _ = dbs
    seed(app, "orders", 2)
    code, doc = cli_json("cache.delete", "--env", env, "--pattern", "**")
    assert code == 2 and "matches every key" in doc["error"] and "cache.flush --db N" in doc["hint"]
    assert app.dbsize() == 2


def test_flush_empties_only_the_named_database(env: str, dbs: Any) -> None:
    app, other = dbs
    seed(app, "orders", 4)
    seed(other, "report", 7)
    flushes = calls(other, "flushdb")

    code, doc = cli_json("cache.flush", "--env", env, "--db", str(OTHER_DB), "--check")
    assert code == 0, doc
    [result] = targets(doc)
    assert result["target"].endswith(f"/{OTHER_DB}") and result["changes"][0]["summary"] == \
        f"flush db {OTHER_DB}: delete its 7 key(s)"
    assert other.dbsize() == 7 and calls(other, "flushdb") == flushes

    code, doc = cli_json("cache.flush", "--env", env, "--db", str(OTHER_DB))  # no --yes: refused, nothing run
    assert code == 2 and "needs --yes" in doc["error"] and other.dbsize() == 7 and calls(other, "flushdb") == flushes

    code, doc = cli_json("cache.flush", "--env", env, "--db", str(OTHER_DB), "--yes")
    assert code == 0 and targets(doc)[0]["status"] == "changed", doc
    assert targets(doc)[0]["actions"][0]["command"] == "FLUSHDB ASYNC"
    assert other.dbsize() == 0 and app.dbsize() == 4  # the other database is untouched

    code, doc = cli_json("cache.flush", "--env", env, "--db", str(OTHER_DB), "--yes")
    assert code == 0 and targets(doc)[0]["status"] == "ok"
    assert targets(doc)[0]["reason"] == f"db {OTHER_DB} is already empty"


def test_flush_refuses_a_database_holding_celery_queues_unless_asked(env: str, dbs: Any) -> None:
    app, _ = dbs
    seed(app, "orders", 2)
    app.rpush("mail", "t1", "t2")
    code, doc = cli_json("cache.flush", "--env", env, "--db", str(APP_DB), "--yes")
    assert code == 1 and targets(doc)[0]["status"] == "failed"
    assert "holds the Celery queue(s) mail (2 message(s))" in targets(doc)[0]["error"]
    assert app.dbsize() == 3

    code, doc = cli_json("cache.flush", "--env", env, "--db", str(APP_DB), "--include-queues", "--yes")
    assert code == 0 and "includes Celery queue mail (2 message(s))" in targets(doc)[0]["changes"][0]["summary"]
    assert app.dbsize() == 0


def test_flush_needs_a_database_and_yes(env: str, dbs: Any) -> None:
    app, _ = dbs
    seed(app, "orders", 2)
    code, doc = cli_json("cache.flush", "--env", env)
    assert code == 2 and "needs --db N" in doc["error"]
    code, doc = cli_json("cache.flush", "--env", env, "--db", "99999")
    assert code == 2 and "from 0 to 1023" in doc["error"]
    code, doc = cli_json("cache.flush", "--env", "cacheprod", "--db", str(APP_DB))
    assert code == 2 and "--yes" in doc["hint"] and app.dbsize() == 2
    code, doc = cli_json("cache.flush", "--env", "cacheprod", "--db", str(APP_DB), "--check")
    assert code == 0 and targets(doc)[0]["status"] == "changed" and app.dbsize() == 2
    code, doc = cli_json("cache.flush", "--env", "cacheprod", "--db", str(APP_DB), "--yes")
    assert code == 0 and app.dbsize() == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server that wants a password."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (scripts/install-system-deps.sh)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis-auth")
    proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
                             "--save", "", "--appendonly", "no", "--requirepass", "s3cret-pw"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password="s3cret-pw")
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def test_unreachable_or_password_protected_redis_is_one_line_with_the_next_step(
        inventory: InventoryDir, auth_redis: str, tmp_path: Path) -> None:
    inventory.write("down", {"tier": "staging", "connection": "local",
                             "redis": {"url": f"redis://127.0.0.1:{_free_port()}/0", "socket_timeout": 2}})
    inventory.write("locked", {"tier": "staging", "connection": "local", "redis": {"url": auth_redis}})
    inventory.write("wrongpw", {"tier": "staging", "connection": "local",
                                "redis": {"url": auth_redis, "password": "env:INDOSTAR_TEST_REDIS_PW"}})
    for name, expected, extra in (("down", "unreachable: Error", {}),
                                  ("locked", "needs a password", {}),
                                  ("wrongpw", "refused the one given",
                                   {"INDOSTAR_TEST_REDIS_PW": "not-it"})):
        started = time.monotonic()
        proc = run_cli("cache.keys", "--env", name, "--pattern", "x*", "--json", env=extra)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        import json

        [result] = targets(json.loads(proc.stdout))
        assert result["status"] == "unreachable" and expected in result["error"], result
        assert "next:" in result["error"] and "not-it" not in proc.stdout
        assert time.monotonic() - started < 10  # one attempt, never retried
    proc = run_cli("cache.info", "--env", "wrongpw", env={"INDOSTAR_TEST_REDIS_PW": "s3cret-pw"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_info_severity_follows_memory_against_maxmemory_and_latency() -> None:
    """plan() is pure: the inventory's thresholds (memory 80/95 %, latency 5/20 ms) decide the severity."""
    from indostar_ops.inventory.model import Thresholds
    from indostar_ops.steps.cache import CacheInfo, InfoState

    limits = Thresholds()

    def severity(used: int, maxmemory: int, latency: float) -> tuple[str, str]:
        info = {"used_memory": used, "maxmemory": maxmemory, "used_memory_human": f"{used}B",
                "keyspace_hits": 90, "keyspace_misses": 10, "evicted_keys": 7, "maxmemory_policy": "allkeys-lru"}
        plan = CacheInfo().plan(InfoState(info, [latency] * 3, limits.memory_pct, limits.redis_latency_ms))
        return plan.severity.name, plan.reason or ""

    assert severity(50, 100, 0.2)[0] == "OK"
    assert severity(85, 100, 0.2) == ("WARNING", severity(85, 100, 0.2)[1])
    assert "memory 85 % of maxmemory" in severity(85, 100, 0.2)[1] and "7 keys evicted" in severity(85, 100, 0.2)[1]
    assert severity(96, 100, 0.2)[0] == "CRITICAL"
    assert severity(10, 0, 8.0)[0] == "WARNING" and "latency 8.00 ms" in severity(10, 0, 8.0)[1]
    assert severity(10, 0, 25.0)[0] == "CRITICAL" and "hit rate 90.0 %" in severity(10, 0, 25.0)[1]
