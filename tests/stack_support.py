"""The sandbox's demo stack (FastAPI backend + Celery worker) as real local processes, for a test module.

`start_stack` writes an inventory whose platform is `local` (root under a temp directory,
backend on a free port, Redis db `db`), provisions it once, and `stop` ends exactly the
processes it started and checks none is left.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml


@contextmanager
def redis_db_lock(redis_url: str, *dbs: int, timeout: float = 900) -> Iterator[None]:
    """Hold Redis databases `dbs` for this test module: a concurrent test run on the same server waits.

    The tests flush and fill whole databases and run workers on fixed queues, so two runs of this suite on one
    machine (several sessions at once) must take turns rather than consume each other's messages.
    """
    from indostar_ops.poll import wait_until

    client = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/0")
    keys = [f"indostar-ops-tests:lock:db{db}" for db in sorted(dbs)]
    token = f"{os.getpid()}-{uuid.uuid4()}"
    held: list[str] = []
    try:
        for key in keys:
            wait_until(None, f"Redis db lock {key}", lambda k=key: client.set(k, token, nx=True, ex=int(timeout)),
                       bool, timeout=timeout, every=0.5)
            held.append(key)
        yield
    finally:
        for key in held:
            if client.get(key) == token.encode():
                client.delete(key)
        client.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Stack:
    directory: Path  # INDOSTAR_INVENTORY_DIR for the tests
    root: Path  # the local platform's root
    env: str
    port: int
    redis: redis.Redis
    outbox: Path

    def pids(self, instance_prefix: str) -> dict[str, int]:
        out = {}
        for pidfile in sorted((self.root / "run").glob(f"{instance_prefix}-*.pid")):
            out[pidfile.stem] = int(json.loads(pidfile.read_text())["pid"])
        return out

    def mails(self) -> list[dict[str, Any]]:
        if not self.outbox.is_file():
            return []
        return [json.loads(line) for line in self.outbox.read_text().splitlines() if line.strip()]

    def write_env(self, name: str, data: dict[str, Any]) -> None:
        (self.directory / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    def stop(self) -> None:
        from indostar_ops.platform.local import stop_all

        pids = [int(json.loads(p.read_text())["pid"]) for p in (self.root / "run").glob("*.pid")]
        stop_all(self.root)
        leaked = [pid for pid in pids if alive(pid)]
        assert not leaked, f"demo processes left running: {leaked}"


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll `probe` until it returns something truthy (the test's only way to wait)."""
    from indostar_ops.poll import wait_until

    return wait_until(None, what, probe, bool, timeout=timeout, every=0.05)


def start_stack(base: Path, redis_url: str, db: int, *, workers: int = 1,
                queues: tuple[str, ...] = ("celery",)) -> Stack:
    directory = base / "inventory"
    directory.mkdir(parents=True, exist_ok=True)
    root = base / "platform"
    outbox = base / "outbox.jsonl"
    port = free_port()
    url = f"{redis_url.rsplit('/', 1)[0]}/{db}"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    data = {
        "tier": "sandbox", "connection": "local", "sandbox": {},
        "database": {"host": "127.0.0.1", "port": 5432, "name": "indostar_sandbox_stack_test",
                     "user": "indostar_app", "admin_user": "postgres"},
        "redis": {"url": url, "queues": list(queues), "failed_queue": "celery:failed"},
        "platform": {"kind": "local", "root": str(root), "ports": {"backend": port},
                     "replicas": {"backend": 1, "celery-worker": workers}, "rollout_timeout": 40},
        "notifications": {"outbox": str(outbox)},
        "journal_dir": str(base / "journal"),
    }
    (directory / "stack.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    stack = Stack(directory, root, "stack", port, client, outbox)
    from indostar_ops import Context, load_environment
    from indostar_ops.platform import backend_for

    env = load_environment("stack", directory=directory)
    saved = os.environ.get("INDOSTAR_SANDBOX_ROOT")
    os.environ["INDOSTAR_SANDBOX_ROOT"] = str(base / "sandbox")
    try:
        with Context(env) as ctx:
            backend = backend_for(ctx.scoped("provision", "stack"))
            backend.instances("backend")  # first use: release 1, processes started, /health answered
    except BaseException:
        stack.stop()
        raise
    finally:
        if saved is None:
            os.environ.pop("INDOSTAR_SANDBOX_ROOT", None)
        else:
            os.environ["INDOSTAR_SANDBOX_ROOT"] = saved
    return stack
