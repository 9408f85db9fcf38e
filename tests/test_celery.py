"""celery.* against a real Celery worker of the demo app on the real Redis (db 14) through the local platform."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indostar_ops import Context, Runner, load_environment
from indostar_ops.steps.celery import CeleryPurge, CeleryStatus, celery_message
from tests.stack_support import Stack, alive, redis_db_lock, start_stack, wait_for
from tests.support import cli_json

DB = 14


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    with redis_db_lock(redis_url, DB):
        yield from _stack(tmp_path_factory, redis_url)


def _stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("celery-stack"), redis_url, DB)
    # two environments on the same Redis: production (for --yes) and one whose queue no worker consumes
    redis_section = {"url": f"{redis_url.rsplit('/', 1)[0]}/{DB}", "queues": ["backlog"],
                     "failed_queue": "celery:failed"}
    stack.write_env("quiet", {"tier": "staging", "connection": "local", "redis": redis_section})
    stack.write_env("prodq", {"tier": "production", "connection": "local",
                              "redis": {**redis_section, "queues": ["celery", "backlog"]}})
    yield stack
    stack.stop()
    stack.redis.flushdb()


@pytest.fixture
def env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("INDOSTAR_INVENTORY_DIR", str(stack.directory))
    stack.redis.delete("celery:failed", "backlog")
    return stack.env


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for step in doc["steps"] for t in step["targets"]]


def enqueue(stack: Stack, task: str, *args: Any, queue: str = "celery", **kwargs: Any) -> None:
    stack.redis.lpush(queue, celery_message(task, list(args), kwargs, queue))


def failed_record(task: str, *args: Any, queue: str = "celery") -> str:
    return json.dumps({"id": f"id-{task}-{args}", "task": task, "args": list(args), "kwargs": {}, "queue": queue,
                       "error": "RuntimeError: boom"})


def test_status_ok_with_a_ready_worker_and_warning_when_the_queue_grows(stack: Stack, env: str) -> None:
    code, doc = cli_json("celery.status", "--env", env, "--interval", "0.2")
    assert code == 0, doc
    [result] = targets(doc)
    assert result["severity"] == "OK" and result["data"]["workers_ready"] == 1
    assert result["data"]["queues"] == {"celery": 0} and "workers: 1/1 ready" in result["reason"]
    [worker] = result["data"]["workers"]
    assert worker["name"] == "celery-worker-1" and worker["ready"] and worker["memory_bytes"] > 0

    # a busy worker (solo pool): the newsletter task queues 40 mails while it holds the only worker
    enqueue(stack, "demo.send_newsletter", 40, 0.1)
    wait_for("newsletter mails piling up", lambda: stack.redis.llen("celery") >= 2)
    env_obj = load_environment(env)
    with Context(env_obj) as ctx:
        run = Runner(ctx).run([CeleryStatus(interval=0.8)], task="celery.status")
    [result] = run.results
    assert result.severity is not None and result.severity.name == "WARNING", result
    assert result.data["growing"]["celery"] > 0 and "grows while workers are ready" in (result.reason or "")
    wait_for("the worker to drain the queue", lambda: stack.redis.llen("celery") == 0 and len(stack.mails()) >= 40)


def test_scale_to_zero_is_critical_and_scale_back_starts_a_worker(stack: Stack, env: str) -> None:
    before = stack.pids("celery-worker")
    code, doc = cli_json("celery.scale", "--env", env, "--replicas", "0", "--check")
    assert code == 0 and targets(doc)[0]["changes"][0]["summary"].endswith("from 1 to 0 replicas"), doc
    assert stack.pids("celery-worker") == before and all(alive(p) for p in before.values())

    code, doc = cli_json("celery.scale", "--env", env, "--replicas", "0", "--expect", "1")
    assert code == 0, doc
    assert targets(doc)[0]["undo"]["args"] == {"component": "celery-worker", "replicas": 1}
    assert stack.pids("celery-worker") == {} and not any(alive(p) for p in before.values())

    enqueue(stack, "demo.send_mail", "ops@example.com", "while no worker runs")
    code, doc = cli_json("celery.status", "--env", env, "--interval", "0")
    assert code == 2 and targets(doc)[0]["severity"] == "CRITICAL", doc
    assert "no worker is ready" in targets(doc)[0]["reason"] and targets(doc)[0]["data"]["queues"] == {"celery": 1}

    code, doc = cli_json("celery.scale", "--env", env, "--replicas", "1", "--expect", "2")
    assert code == 1 and "not the 2 you expected" in targets(doc)[0]["error"]
    code, doc = cli_json("celery.scale", "--env", env, "--replicas", "1")
    assert code == 0 and targets(doc)[0]["status"] == "changed", doc
    assert len(stack.pids("celery-worker")) == 1
    wait_for("the queued mail to be sent", lambda: any(m["subject"] == "while no worker runs" for m in stack.mails()))

    code, doc = cli_json("celery.scale", "--env", env, "--replicas", "1")
    assert code == 0 and targets(doc)[0]["status"] == "ok" and "already 1 replicas" in targets(doc)[0]["reason"]


def test_restart_replaces_the_worker_processes(stack: Stack, env: str) -> None:
    before = stack.pids("celery-worker")
    code, doc = cli_json("celery.restart", "--env", env, "--check")
    assert code == 0 and stack.pids("celery-worker") == before
    code, doc = cli_json("celery.restart", "--env", env)
    assert code == 0, doc
    after = stack.pids("celery-worker")
    assert after.keys() == before.keys() and set(after.values()).isdisjoint(before.values())
    assert not any(alive(p) for p in before.values())
    assert [a["kind"] for a in targets(doc)[0]["actions"]] == ["process"]
    enqueue(stack, "demo.send_mail", "ops@example.com", "after the restart")
    wait_for("the new worker to send mail", lambda: any(m["subject"] == "after the restart" for m in stack.mails()))


def test_retry_failed_requeues_recorded_failures_never_purges(stack: Stack, env: str) -> None:
    # a real failure: the worker runs the failing task and records it
    enqueue(stack, "demo.fail_on_purpose", "card declined (test)")
    wait_for("the failure to be recorded", lambda: stack.redis.llen("celery:failed") == 1)
    record = json.loads(stack.redis.lindex("celery:failed", 0))
    assert record["task"] == "demo.fail_on_purpose" and "card declined (test)" in record["error"]
    # failures of the mail task, and one record nobody can route
    stack.redis.rpush("celery:failed", *[failed_record("demo.send_mail", f"c{n}@example.com", f"retry {n}")
                                         for n in range(3)])
    stack.redis.rpush("celery:failed", "not json at all")
    enqueue(stack, "demo.send_mail", "keep@example.com", "queued, must survive", queue="backlog")

    code, doc = cli_json("celery.retry-failed", "--env", env, "--check")
    assert code == 0, doc
    [result] = targets(doc)
    assert result["changes"][0]["before"]["by_task"] == {"demo.send_mail": 3, "demo.fail_on_purpose": 1}
    assert "1 record(s) left in celery:failed: not JSON x1" in result["reason"]
    assert stack.redis.llen("celery:failed") == 5 and stack.redis.llen("backlog") == 1

    code, doc = cli_json("celery.retry-failed", "--env", env, "--task", "demo.send_mail", "--limit", "2")
    assert code == 0, doc
    assert "re-queued 2 of 2" in targets(doc)[0]["reason"]
    wait_for("the re-queued mails", lambda: {m["subject"] for m in stack.mails()} >= {"retry 0", "retry 1"})
    assert stack.redis.llen("celery:failed") == 3

    code, doc = cli_json("celery.retry-failed", "--env", env, "--task", "demo.send_mail")
    assert code == 0 and "re-queued 1 of 1" in targets(doc)[0]["reason"]
    wait_for("the last mail", lambda: "retry 2" in {m["subject"] for m in stack.mails()})
    code, doc = cli_json("celery.retry-failed", "--env", env, "--task", "demo.send_mail")
    assert code == 0 and targets(doc)[0]["status"] == "ok"
    assert "no failed task of task demo.send_mail to re-queue" in targets(doc)[0]["reason"]
    assert stack.redis.llen("backlog") == 1  # queued work was never touched
    assert sorted(stack.redis.lrange("celery:failed", 0, -1))[0] == "not json at all"


def test_retry_failed_on_production_needs_yes(stack: Stack, env: str) -> None:
    stack.redis.rpush("celery:failed", failed_record("demo.send_mail", "p@example.com", "prod retry"))
    code, doc = cli_json("celery.retry-failed", "--env", "prodq")
    assert code == 2 and "--yes" in doc["hint"] and stack.redis.llen("celery:failed") == 1
    code, doc = cli_json("celery.retry-failed", "--env", "prodq", "--yes")
    assert code == 0 and stack.redis.llen("celery:failed") == 0
    wait_for("the production retry's mail", lambda: "prod retry" in {m["subject"] for m in stack.mails()})


def test_purge_deletes_one_named_queue_after_a_preview(stack: Stack, env: str) -> None:
    for n in range(3):
        enqueue(stack, "demo.send_mail", f"b{n}@example.com", "backlog", queue="backlog")
    enqueue(stack, "demo.send_newsletter", 1, 0, queue="backlog")
    stack.redis.rpush("celery:failed", failed_record("demo.send_mail", "x@example.com", "kept"))

    code, doc = cli_json("celery.purge", "--env", "quiet")
    assert code == 2 and "needs --queue NAME" in doc["error"]
    code, doc = cli_json("celery.purge", "--env", "quiet", "--queue", "celery")
    assert code == 2 and "known queues: backlog, celery:failed" in doc["hint"]

    code, doc = cli_json("celery.purge", "--env", "quiet", "--queue", "backlog", "--check")
    assert code == 0, doc
    change = targets(doc)[0]["changes"][0]
    assert change["destructive"] and change["before"]["by_task"] == {"demo.send_mail": 3, "demo.send_newsletter": 1}
    assert "DELETE all 4 message(s) queued in backlog" in change["summary"] and stack.redis.llen("backlog") == 4

    code, doc = cli_json("celery.purge", "--env", "quiet", "--queue", "backlog")  # confirmed on every tier
    assert code == 2 and "needs --yes" in doc["error"] and "--check" in doc["hint"] and stack.redis.llen("backlog") == 4

    code, doc = cli_json("celery.purge", "--env", "quiet", "--queue", "backlog", "--yes")
    assert code == 0 and targets(doc)[0]["reason"] == "deleted 4 message(s) from backlog", doc
    assert stack.redis.llen("backlog") == 0 and stack.redis.llen("celery:failed") == 1

    code, doc = cli_json("celery.purge", "--env", "quiet", "--queue", "backlog", "--yes")
    assert code == 0 and targets(doc)[0]["reason"] == "queue backlog is empty: nothing to delete"


def test_purge_deletes_nothing_if_the_queue_changed_since_the_preview(stack: Stack, env: str) -> None:
    enqueue(stack, "demo.send_mail", "a@example.com", "one", queue="backlog")
    step = CeleryPurge("backlog")
    with Context(load_environment("quiet"), assume_yes=True) as ctx:
        step.preflight(ctx)
        [target] = step.targets(ctx)
        scoped = ctx.scoped(step.name, str(target))
        plan = step.plan(step.check(scoped, target))
        enqueue(stack, "demo.send_mail", "b@example.com", "arrived after the preview", queue="backlog")
        with pytest.raises(Exception, match=r"changed since the preview \(1 message\(s\) then, 2 now\)"):
            step.apply(scoped, target, plan)
    assert stack.redis.llen("backlog") == 2


def test_status_without_redis_is_one_line(stack: Stack, env: str, tmp_path: Path) -> None:
    from tests.stack_support import free_port

    stack.write_env("noredis", {"tier": "staging", "connection": "local",
                                "redis": {"url": f"redis://127.0.0.1:{free_port()}/0", "socket_timeout": 1}})
    code, doc = cli_json("celery.status", "--env", "noredis", "--interval", "0")
    assert code == 3 and targets(doc)[0]["status"] == "unreachable"
    assert "check that Redis is running" in targets(doc)[0]["error"]


def test_a_malformed_message_is_recorded_as_failed_and_the_worker_keeps_consuming(stack: Stack, env: str) -> None:
    before = stack.pids("celery-worker")
    stack.redis.lpush("celery", json.dumps({"task": "app.tasks.send_order_email", "args": [1]}))
    enqueue(stack, "demo.send_mail", "ops@example.com", "after a malformed message")
    wait_for("the mail after the malformed message",
             lambda: any(m["subject"] == "after a malformed message" for m in stack.mails()))
    [record] = [json.loads(r) for r in stack.redis.lrange("celery:failed", 0, -1)]
    assert "malformed message" in record["error"] and "send_order_email" in record["raw"]
    assert stack.pids("celery-worker") == before and all(alive(p) for p in before.values())
    code, doc = cli_json("celery.retry-failed", "--env", env, "--check")
    assert code == 0 and "1 record(s) left in celery:failed: no task name x1" in targets(doc)[0]["reason"]
