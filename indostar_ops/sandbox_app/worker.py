"""The demo Celery worker: mail to the sandbox outbox, a task that fails on purpose, failures recorded.

Failed tasks are pushed (RPUSH) to the failed queue as JSON records
`{"id", "task", "args", "kwargs", "queue", "error", "failed_at"}`, the format
`celery.retry-failed` reads and re-queues.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery, signals
from kombu.transport import redis as kombu_redis

from .config import load

config = load()
_failed = redis.Redis.from_url(config.redis_url, socket_timeout=5)


class TolerantRedisTransport(kombu_redis.Transport):
    """kombu's Redis transport, except that a message that is not a kombu envelope (anything a script pushed
    onto the queue by hand) is recorded in the failed queue instead of crashing the consumer in a loop."""

    def _deliver(self, message: Any, queue: str) -> None:
        if isinstance(message, dict) and isinstance(message.get("properties"), dict) and "headers" in message:
            super()._deliver(message, queue)
            return
        record = {"id": None, "task": None, "args": [], "kwargs": {}, "queue": queue,
                  "error": "malformed message: not a Celery/kombu envelope", "raw": json.dumps(message)[:2000],
                  "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "release": config.release}
        _failed.rpush(config.failed_queue, json.dumps(record))
        print(f"ERROR malformed message on queue {queue}: moved to {config.failed_queue}", flush=True)


app = Celery("demo", broker=config.redis_url)
app.conf.update(
    broker_transport=TolerantRedisTransport,
    task_default_queue=config.queue,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
    task_acks_late=False,
)


@app.task(name="demo.send_mail")
def send_mail(to: str, subject: str, body: str = "") -> str:
    """'Send' an e-mail: append it to the sandbox outbox (one JSON line)."""
    record = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "channel": "mail", "to": to,
              "subject": subject, "body": body, "release": config.release,
              "task_id": send_mail.request.id, "worker": send_mail.request.hostname}
    with open(config.outbox, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    print(f"INFO mail to {to}: {subject}", flush=True)
    return to


@app.task(name="demo.send_newsletter")
def send_newsletter(recipients: int = 10, pause_s: float = 0.1) -> int:
    """Queue one mail per recipient, slowly: while it runs this worker takes nothing else (a busy worker)."""
    for n in range(int(recipients)):
        send_mail.delay(f"subscriber-{n}@example.com", "IndoStar newsletter")
        time.sleep(float(pause_s))
    return int(recipients)


@app.task(name="demo.fail_on_purpose")
def fail_on_purpose(reason: str = "payment gateway timeout (simulated)") -> None:
    """Always fails: the failed queue gets a record of it."""
    raise RuntimeError(reason)


@signals.task_failure.connect
def record_failure(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
                   args: Any = None, kwargs: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    delivery = getattr(request, "delivery_info", None) or {}
    record = {"id": task_id, "task": getattr(sender, "name", None), "args": list(args or []),
              "kwargs": dict(kwargs or {}), "queue": delivery.get("routing_key") or config.queue,
              "error": f"{type(exception).__name__}: {exception}",
              "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "release": config.release}
    _failed.rpush(config.failed_queue, json.dumps(record))


@signals.worker_ready.connect
def announce_ready(**_: Any) -> None:
    """The platform's readiness probe for a worker: this file, written once the worker consumes."""
    ready = os.environ.get("DEMO_READY_FILE")
    if ready:
        Path(ready).write_text(f"{os.getpid()} {config.release}\n")
