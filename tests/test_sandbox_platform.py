"""The sandbox's `local` platform: the demo app as real processes, driven by the app.* tasks like any platform."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indostar_ops import Context, load_environment
from indostar_ops.platform import backend_for
from indostar_ops.platform.local import stop_process
from indostar_ops.steps.celery import celery_message
from tests.stack_support import Stack, alive, redis_db_lock, start_stack, wait_for
from tests.support import REPO, cli_json

DB = 11


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    with redis_db_lock(redis_url, DB):
        yield from _stack(tmp_path_factory, redis_url)


def _stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("platform-stack")
    stack = start_stack(base, redis_url, DB)
    data = json.loads(json.dumps(__import__("yaml").safe_load((stack.directory / "stack.yaml").read_text())))
    data["urls"] = {"health": f"http://127.0.0.1:{stack.port}/health"}
    stack.write_env("stack", data)
    yield stack
    stack.stop()
    stack.redis.flushdb()


@pytest.fixture
def env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("INDOSTAR_INVENTORY_DIR", str(stack.directory))
    return stack.env


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for step in doc["steps"] for t in step["targets"]]


def get(stack: Stack, path: str, port: int | None = None) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port or stack.port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def webhook(stack: Stack, event: dict[str, Any], secret: bytes | None = None) -> tuple[int, dict[str, Any]]:
    body = json.dumps(event).encode()
    key = secret if secret is not None else (stack.root / "secrets" / "razorpay_webhook_secret").read_bytes().strip()
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.port}/api/v1/webhooks/razorpay", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "X-Razorpay-Signature": hmac.new(key, body, hashlib.sha256).hexdigest()})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def captured(order_id: int) -> dict[str, Any]:
    return {"event": "payment.captured", "payload": {"payment": {"entity": {
        "id": f"pay_T{order_id}", "email": f"buyer{order_id}@example.com", "notes": {"order_id": order_id}}}}}


def test_backend_reads_orders_through_the_cache_and_verifies_webhook_signatures(stack: Stack, env: str) -> None:
    status, health = get(stack, "/health")
    assert status == 200 and health["checks"] == {"redis": "ok", "database": "ok"} and health["release"] == "2"
    status, first = get(stack, "/api/v1/orders/42")
    status2, second = get(stack, "/api/v1/orders/42")
    assert (status, first["cache"], status2, second["cache"]) == (200, "miss", 200, "hit")
    code, doc = cli_json("cache.keys", "--env", env, "--pattern", "orders:*")
    [key] = targets(doc)[0]["data"]["keys"]
    assert key["key"] == "orders:42" and 0 < key["ttl_s"] <= 60

    status, body = webhook(stack, captured(42), secret=b"not-the-secret")
    assert status == 400 and body == {"error": "invalid signature"}
    status, body = webhook(stack, captured(42))
    assert status == 200 and body == {"ok": True, "order": 42, "status": "paid", "updated": True}
    assert get(stack, "/api/v1/orders/42")[1]["status"] == "paid"  # the cached copy was dropped
    wait_for("the receipt mail", lambda: any(m["to"] == "buyer42@example.com" for m in stack.mails()))

    code, doc = cli_json("app.logs", "--env", env, "--component", "backend", "--grep", "webhook")
    assert code == 0, doc
    text = json.dumps(doc)
    assert "webhook signature mismatch" in text and "webhook payment.captured pay_T42 order 42: paid" in text


def test_status_and_health_report_the_real_processes(stack: Stack, env: str) -> None:
    code, doc = cli_json("app.status", "--env", env)
    assert code == 0, doc
    by_target = {t["target"]: t for t in targets(doc)}
    assert set(by_target) == {"process group/backend", "process group/celery-worker"}
    text = json.dumps(doc)
    for pid in [*stack.pids("backend").values(), *stack.pids("celery-worker").values()]:
        assert f"pid {pid}" in text
    code, doc = cli_json("app.health", "--env", env)
    assert code == 0 and targets(doc)[0]["status"] == "ok", doc


def test_restart_replaces_the_backend_and_waits_for_health(stack: Stack, env: str) -> None:
    before = stack.pids("backend")
    code, doc = cli_json("app.restart", "--env", env, "--component", "backend", "--check")
    assert code == 0 and stack.pids("backend") == before
    code, doc = cli_json("app.restart", "--env", env, "--component", "backend")
    assert code == 0, doc
    after = stack.pids("backend")
    assert set(after.values()).isdisjoint(before.values()) and not any(alive(p) for p in before.values())
    assert get(stack, "/health")[1]["pid"] == after["backend-1"]  # the new process answers
    journal = [a for a in targets(doc)[0]["actions"] if a["kind"] == "process"]
    assert journal and journal[0]["summary"] == "rolling restart of process group/backend"


def test_scale_starts_and_stops_backend_processes_on_their_ports(stack: Stack, env: str) -> None:
    second = stack.port + 1
    code, doc = cli_json("app.scale", "--env", env, "--component", "backend", "--replicas", "2", "--check")
    assert code == 0 and len(stack.pids("backend")) == 1
    code, doc = cli_json("app.scale", "--env", env, "--component", "backend", "--replicas", "2")
    assert code == 0, doc
    assert len(stack.pids("backend")) == 2 and get(stack, "/health", port=second)[0] == 200
    code, doc = cli_json("app.scale", "--env", env, "--component", "backend", "--replicas", "2")
    assert code == 0 and targets(doc)[0]["status"] == "ok"
    code, doc = cli_json("app.scale", "--env", env, "--component", "backend", "--replicas", "1")
    assert code == 0, doc
    assert list(stack.pids("backend")) == ["backend-1"]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", second)) != 0  # the second process is gone


def test_rollback_returns_to_the_previous_recorded_release(stack: Stack, env: str) -> None:
    with Context(load_environment(env)) as ctx:
        backend = backend_for(ctx.scoped("deploy", "stack"))
        number = backend.deploy(summary="deploy release 3 (test)", change_cause="cache TTL 45 s",
                                config={"cache_ttl_s": 45})
    assert number == 3 and get(stack, "/health")[1]["release"] == "3"
    assert json.loads((stack.root / "releases" / "3" / "config.json").read_text())["cache_ttl_s"] == 45
    (stack.root / "releases" / "2").rename(stack.root / "releases" / ".2.gone")  # history need not be contiguous

    code, doc = cli_json("app.rollback", "--env", env, "--component", "backend", "--check")
    assert code == 0, doc
    change = targets(doc)[0]["changes"][0]
    assert change["summary"] == "roll back process group/backend from revision 3 to 1"
    assert "-backend: release 3" in change["diff"] and "+backend: release 1" in change["diff"]
    assert get(stack, "/health")[1]["release"] == "3"

    code, doc = cli_json("app.rollback", "--env", env, "--component", "backend")
    assert code == 0, doc
    assert get(stack, "/health")[1]["release"] == "1"
    assert targets(doc)[0]["undo"]["args"] == {"component": "backend", "to_revision": 3}
    assert get(stack, "/api/v1/orders/43")[1]["cache"] == "miss" and 0 < stack.redis.ttl("orders:43") <= 30
    code, doc = cli_json("app.rollback", "--env", env, "--component", "backend")
    assert code == 1 and "no revision older than the current 1" in targets(doc)[0]["error"]


def test_a_dead_worker_is_reported_and_a_restart_brings_it_back(stack: Stack, env: str) -> None:
    [pid] = stack.pids("celery-worker").values()
    os.killpg(pid, signal.SIGKILL)
    wait_for("the worker to die", lambda: not alive(pid))
    stack.redis.lpush("celery", celery_message("demo.send_mail", ["ops@example.com", "after the crash"], {}, "celery"))
    code, doc = cli_json("celery.status", "--env", env, "--interval", "0")
    assert code == 2 and "no worker is ready" in targets(doc)[0]["reason"], doc
    assert targets(doc)[0]["data"]["workers"][0]["status"].startswith("exited")
    code, doc = cli_json("celery.restart", "--env", env)
    assert code == 0, doc
    wait_for("the queued mail", lambda: any(m["subject"] == "after the crash" for m in stack.mails()))


def test_a_recycled_pid_is_never_signalled(stack: Stack, tmp_path: Path) -> None:
    """A pid file whose pid now belongs to another process (different start time) is not ours: left alone."""
    root = tmp_path / "platform"
    (root / "run").mkdir(parents=True)
    (root / "run" / "backend-9.pid").write_text(json.dumps({"pid": os.getpid(), "start": 1, "release": 1}))
    assert stop_process(root, "backend-9") is False
    assert alive(os.getpid()) and not (root / "run" / "backend-9.pid").exists()


def test_the_sandbox_extra_is_not_a_core_dependency() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert not any(name in core for name in ("fastapi", "uvicorn", "celery"))
    assert {d.split(">")[0] for d in project["optional-dependencies"]["sandbox"]} == {"fastapi", "uvicorn", "celery"}
    assert "aws-local,sandbox" in (REPO / "scripts" / "sandbox").read_text()


def test_the_shipped_sandbox_inventory_runs_the_demo_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           redis_url: str) -> None:
    """inventory/sandbox.yaml as shipped (its backend port and Redis db moved aside): first use starts the stack."""
    from tests.stack_support import free_port

    port = free_port()
    text = (REPO / "inventory" / "sandbox.yaml").read_text()
    assert "kind: local" in text and "backend: 18100" in text
    text = text.replace("backend: 18100", f"backend: {port}").replace("6379/15", f"6379/{DB}")
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "sandbox.yaml").write_text(text)
    monkeypatch.setenv("INDOSTAR_INVENTORY_DIR", str(tmp_path / "inv"))
    root = Path(os.environ["INDOSTAR_SANDBOX_ROOT"]) / "platform"
    try:
        code, doc = cli_json("celery.status", "--env", "sandbox", "--interval", "0")
        assert code in (0, 1) and targets(doc)[0]["data"]["workers_ready"] == 1, doc
        code, doc = cli_json("app.status", "--env", "sandbox", "--check")
        assert code == 0, doc
        assert (root / "releases" / "1" / "demo" / "web.py").is_file()
    finally:
        from tests.support import run_cli

        stopped = run_cli("sandbox.stop")
    assert "stopped the sandbox demo app's backend-1" in stopped.stdout + stopped.stderr
    assert not any(alive(json.loads(p.read_text())["pid"]) for p in (root / "run").glob("*.pid"))


def test_every_local_platform_write_is_refused_in_check_mode(stack: Stack, env: str) -> None:
    from indostar_ops.errors import CheckModeViolation
    from indostar_ops.platform.base import Revision

    before = {**stack.pids("backend"), **stack.pids("celery-worker")}
    state = (stack.root / "state.json").read_text()
    releases = sorted(p.name for p in (stack.root / "releases").iterdir())
    with Context(load_environment(env), check=True) as ctx:
        backend = backend_for(ctx.scoped("check", "stack"))
        for write in (lambda: backend.scale("celery-worker", 3, summary="scale"),
                      lambda: backend.restart("backend", summary="restart"),
                      lambda: backend.rollback("backend", Revision(1), summary="rollback"),
                      lambda: backend.deploy(summary="deploy")):
            with pytest.raises(CheckModeViolation):
                write()
    assert {**stack.pids("backend"), **stack.pids("celery-worker")} == before
    assert (stack.root / "state.json").read_text() == state
    assert sorted(p.name for p in (stack.root / "releases").iterdir()) == releases


def test_scale_onto_a_taken_port_changes_nothing(stack: Stack, env: str) -> None:
    before = stack.pids("backend")
    state = (stack.root / "state.json").read_text()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", stack.port + 1))
        squatter.listen()
        code, doc = cli_json("app.scale", "--env", env, "--component", "backend", "--replicas", "2")
    assert code == 1 and f"port {stack.port + 1} for backend-2 is taken by another program" in targets(doc)[0]["error"]
    assert stack.pids("backend") == before and (stack.root / "state.json").read_text() == state
