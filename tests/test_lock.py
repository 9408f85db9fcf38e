"""The environment's maintenance lock on every backend that runs here: a file (flock), PostgreSQL (advisory
lock + holder row in an ops schema) and DynamoDB (conditional put with a lease, on a moto server).

Same rules everywhere: a second holder is refused naming the first; the same run id (a resume) takes
back its own lock once its process is gone; a stale lock is taken over only with --break-lock, which says
what it broke; the lease is renewed while the run lives.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indostar_ops.context import Context
from indostar_ops.lock import LockHeld, LockKeeper
from tests.host_support import free_port
from tests.support import InventoryDir


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=(port := free_port()), verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def make_env(inventory: InventoryDir, tmp_path: Path, backend: str, **lock: Any) -> Any:
    name = "locktest"
    data: dict[str, Any] = {"tier": "staging", "connection": "local",
                            "maintenance": {"lock": {"backend": backend, **lock}}}
    if backend == "file":
        data["maintenance"]["lock"].setdefault("path", str(tmp_path / "locks"))
    if backend == "postgres":
        data["database"] = {"host": "127.0.0.1", "name": "postgres", "user": "postgres"}
    inventory.write(name, data)
    return inventory.load(name)


def keeper(env: Any, run_id: str, *, user: str = "alice", break_lock: bool = False, lease: float = 30) -> LockKeeper:
    ctx = Context(env, user=user)
    return LockKeeper(env, ctx, run_id, task="maintenance.window", break_lock=break_lock, lease=lease)


def crash(k: LockKeeper) -> None:
    """What a SIGKILL leaves: the process's file/session is gone, its holder record is not."""
    k._stop.set()
    k.backend.close()


@pytest.fixture(params=["file", "postgres"])
def env(request: pytest.FixtureRequest, inventory: InventoryDir, tmp_path: Path) -> Iterator[Any]:
    schema = f"lock_{uuid.uuid4().hex[:8]}" if request.param == "postgres" else "indostar_ops"
    environment = make_env(inventory, tmp_path, request.param, schema=schema)
    yield environment
    if request.param == "postgres":
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_second_window_is_refused_naming_the_holder(env: Any) -> None:
    first = keeper(env, "run-1", user="alice")
    said = first.acquire()
    assert "lock taken" in said and "alice@" in said
    with pytest.raises(LockHeld) as refused:
        keeper(env, "run-2", user="bob").acquire()
    assert "is locked by alice@" in str(refused.value) and "(run run-1, maintenance.window)" in str(refused.value)
    with pytest.raises(LockHeld):  # --break-lock never breaks a LIVE holder
        keeper(env, "run-2", user="bob", break_lock=True).acquire()
    first.release()
    second = keeper(env, "run-2", user="bob")
    second.acquire()
    assert second.backend.holder().holder.startswith("bob@")  # type: ignore[union-attr]
    second.release()
    assert second.backend.holder() is None


def test_a_crashed_holder_is_resumable_by_its_own_run_and_breakable_only_explicitly(env: Any) -> None:
    crashed = keeper(env, "run-1", user="alice")
    crashed.acquire()
    crash(crashed)
    with pytest.raises(LockHeld) as stale:
        keeper(env, "run-2", user="bob").acquire()
    assert "stale lock" in str(stale.value) and "--break-lock" in stale.value.hint  # type: ignore[operator]
    assert "--resume run-1" in stale.value.hint  # type: ignore[operator]

    resumed = keeper(env, "run-1", user="carol")  # `--resume run-1`, from another machine even
    assert "BROKE" not in resumed.acquire()
    crash(resumed)

    breaker = keeper(env, "run-2", user="bob", break_lock=True)
    said = breaker.acquire()
    assert "BROKE the stale lock of carol@" in said and "run run-1" in said
    assert breaker.broken is not None and breaker.broken.run_id == "run-1"
    breaker.release()


def test_the_lease_is_renewed_while_the_run_lives(env: Any) -> None:
    import time

    k = keeper(env, "run-1", lease=1.5)
    k.acquire()
    first = k.backend.holder().expires  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while k.backend.holder().expires == first and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.1)
    assert k.backend.holder().expires > first  # type: ignore[union-attr]
    assert k.lost is None
    with pytest.raises(LockHeld):  # still held after all that reading and renewing
        keeper(env, "run-2").acquire()
    k.release()


def test_dynamodb_lock_conditional_put_with_a_lease(inventory: InventoryDir, tmp_path: Path, moto_endpoint: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    table = f"locks-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="ap-south-1").create_table(
        TableName=table, AttributeDefinitions=[{"AttributeName": "lock_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "lock_id", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    inventory.write("dyn", {"tier": "staging", "connection": "local",
                            "aws": {"region": "ap-south-1", "endpoint_url": moto_endpoint, "max_attempts": 2},
                            "maintenance": {"lock": {"backend": "dynamodb", "table": table}}})
    env = inventory.load("dyn")
    first = keeper(env, "run-1", user="alice", lease=4)
    first.acquire()
    with pytest.raises(LockHeld) as refused:
        keeper(env, "run-2", user="bob").acquire()
    assert "is locked by alice@" in str(refused.value)
    crash(first)  # its lease runs out (4 s) without renewal
    import time

    deadline = time.monotonic() + 20
    while not first.backend.holder().expired and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.1)
    with pytest.raises(LockHeld) as stale:
        keeper(env, "run-2", user="bob").acquire()
    assert "stale lock" in str(stale.value)
    breaker = keeper(env, "run-2", user="bob", break_lock=True)
    assert "BROKE the stale lock of alice@" in breaker.acquire()
    breaker.release()
    assert breaker.backend.holder() is None
