"""Runbook "Celery Workers Not Processing Tasks".

- `celery.status`: the workers (through the platform backend), each queue's length in Redis
  (`LLEN celery`), the failed-task count, and whether a queue grows while workers are ready
  (two samples).
- `celery.restart` / `celery.scale`: `app.restart` / `app.scale` of the `celery-worker` component.
- `celery.retry-failed`: the runbook's "retry failed tasks" line is a purge, which deletes every
  *queued* task. Here the failed tasks the application recorded in the failed queue (JSON records
  `{"task", "args", "kwargs", "queue", "id"}`) are re-queued as Celery messages, previewed with
  counts per task name, `--limit` at a time; each record moves atomically (a Lua script removes it
  from the failed list and pushes the message to its queue), so a record another operator already
  retried is not sent twice.
- `celery.purge --queue Q`: an explicit, previewed deletion of one named queue, confirmed with --yes
  on every tier, that deletes exactly what the preview counted, or nothing if the queue changed meanwhile.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfirmationRequired, StepError, UsageError
from ..severity import Severity
from ..step import Change, EnvTarget, Outcome, Plan, Step
from .app import AppRestart, AppScale
from .redis_common import redis_call, redis_target

if TYPE_CHECKING:
    from ..context import Context, RedisSession
    from ..platform.base import Instance

__all__ = ["CeleryPurge", "CeleryRestart", "CeleryRetryFailed", "CeleryScale", "CeleryStatus", "celery_message",
           "task_name"]

WORKER = "celery-worker"
PREVIEW_CAP = 10_000  # messages read to count task names; beyond it the counts are of a sample
BATCH = 100  # failed records moved per Lua call

# Move failed records back to their queues: KEYS = [failed list, queue 1, queue 2, ...];
# ARGV = triples (record, queue index into KEYS, message). A record that is no longer in the
# failed list (someone retried it) is not pushed.
_RETRY_LUA = """
local moved = 0
for i = 1, #ARGV, 3 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('LPUSH', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
    moved = moved + 1
  end
end
return moved
"""

# Delete a queue only if it still is what the preview saw: same length, same newest and oldest message.
_PURGE_LUA = """
local n = redis.call('LLEN', KEYS[1])
if n ~= tonumber(ARGV[1]) or n == 0 then return -n - 1 end
if redis.sha1hex(redis.call('LINDEX', KEYS[1], 0)) ~= ARGV[2] then return -n - 1 end
if redis.sha1hex(redis.call('LINDEX', KEYS[1], -1)) ~= ARGV[3] then return -n - 1 end
redis.call('UNLINK', KEYS[1])
return n
"""


def celery_message(task: str, args: list[Any], kwargs: dict[str, Any], queue: str,
                   task_id: str | None = None, retry_of: str | None = None) -> str:
    """A Celery task message (protocol 2, JSON) as kombu's Redis transport stores it in the queue list."""
    task_id = task_id or str(uuid.uuid4())
    body = json.dumps([list(args), dict(kwargs), {"callbacks": None, "errbacks": None, "chain": None,
                                                  "chord": None}])
    headers = {"lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
               "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
               "parent_id": retry_of, "argsrepr": repr(tuple(args)), "kwargsrepr": repr(dict(kwargs)),
               "origin": "indostar-ops celery.retry-failed", "ignore_result": True}
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8", "content-type": "application/json", "headers": headers,
        "properties": {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                       "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    })


def task_name(raw: str) -> str:
    """The task a queued message or failed record is for ('?' when it cannot be read)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "?"
    if not isinstance(data, dict):
        return "?"
    headers = data.get("headers")
    name = headers.get("task") if isinstance(headers, dict) else data.get("task")
    return str(name) if name else "?"


def _counts(raws: list[str]) -> dict[str, int]:
    return dict(Counter(task_name(r) for r in raws).most_common())


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} x{n}" for name, n in counts.items())


def _sha1(raw: str) -> str:
    return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()


def _settings(ctx: Context) -> Any:
    settings = ctx.env.redis
    assert settings is not None
    return settings


# ------------------------------------------------------------------ celery.status


@dataclass
class StatusState:
    workers: list[Instance] | None
    desired: int | None
    first: dict[str, int]
    second: dict[str, int]
    failed: int
    failed_queue: str
    interval: float
    oldest: dict[str, dict[str, int]] = field(default_factory=dict)
    platform_error: str | None = None


class CeleryStatus(Step[StatusState]):
    """Workers, queue lengths and failed tasks; WARNING when a queue grows while workers are ready."""

    name = "celery.status"
    scope = "env"
    read_only = True
    needs = ("redis",)

    def __init__(self, interval: float = 2.0) -> None:
        if not 0 <= float(interval) <= 60:
            raise UsageError(f"--interval must be from 0 to 60 seconds, not {interval}")
        self.interval = float(interval)

    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [EnvTarget(f"celery on {redis_target(ctx).name}", kind="celery")]

    def check(self, ctx: Context, target: EnvTarget) -> StatusState:
        settings = _settings(ctx)
        session = ctx.redis()
        queues = list(settings.queues)

        def lengths() -> dict[str, int]:
            pipe = session.client.pipeline(transaction=False)
            for queue in queues:
                pipe.llen(queue)
            return dict(zip(queues, (int(n) for n in pipe.execute()), strict=True))

        first = redis_call(session, lengths)
        workers, desired, error = self._workers(ctx)
        # Two samples of the same queues, `interval` apart: not a wait for a condition, a rate measurement.
        time.sleep(max(0.0, self.interval))
        second = redis_call(session, lengths)
        failed = int(redis_call(session, lambda: session.client.llen(settings.failed_queue)))
        oldest = {q: _counts(redis_call(session, lambda q=q: session.client.lrange(q, -100, -1)))
                  for q, n in second.items() if n}
        return StatusState(workers, desired, first, second, failed, settings.failed_queue, self.interval, oldest,
                           error)

    @staticmethod
    def _workers(ctx: Context) -> tuple[list[Instance] | None, int | None, str | None]:
        if ctx.env.platform is None:
            return None, None, "no 'platform' section: workers not checked"
        from ..platform.base import backend_for

        backend = backend_for(ctx)
        try:
            instances = backend.instances(WORKER)
            desired, _ready = backend.replicas(WORKER)
        except UsageError as exc:
            return None, None, exc.message
        return instances, desired, None

    def plan(self, state: StatusState) -> Plan:
        total = sum(state.second.values())
        grew = {q: state.second[q] - state.first[q] for q in state.second if state.second[q] > state.first[q]}
        workers = state.workers
        ready = sum(1 for w in workers if w.ready) if workers is not None else None
        parts = [", ".join(f"{q}: {n}" for q, n in state.second.items()) or "no queues configured"]
        if grew:
            parts.append("growing: " + ", ".join(f"{q} +{d} in {state.interval:g} s" for q, d in grew.items()))
        parts.append(f"failed ({state.failed_queue}): {state.failed}")
        severity = Severity.OK
        problems = []
        if workers is None:
            parts.append(state.platform_error or "workers unknown")
            if grew:
                severity = Severity.WARNING
        else:
            parts.append(f"workers: {ready}/{state.desired} ready")
            problems = [f"{w.name}: {w.problem}" for w in workers if w.problem]
            if ready == 0 and (total or state.desired):
                severity = Severity.CRITICAL
                parts.append("no worker is ready: nothing consumes the queues"
                             + (f" ({'; '.join(problems[:3])})" if problems else ""))
            elif grew:
                severity = Severity.WARNING
                parts.append("the queue grows while workers are ready: they are stuck or too few "
                             "(look at app.logs --component celery-worker; celery.scale)")
            elif state.desired is not None and ready is not None and ready < state.desired:
                severity = Severity.WARNING
                parts.append("; ".join(problems[:3]) or "some workers are not ready")
        data = {
            "queues": state.second, "queues_first_sample": state.first, "interval_s": state.interval,
            "growing": grew, "failed": state.failed, "failed_queue": state.failed_queue,
            "oldest_by_task": state.oldest,
            "workers": None if workers is None else [w.as_dict() for w in workers],
            "workers_ready": ready, "workers_desired": state.desired,
        }
        return Plan.nothing("; ".join(parts), severity=severity, data=data)


# ------------------------------------------------------------------ celery.restart / celery.scale


class CeleryRestart(AppRestart):
    """Rolling restart of the Celery workers (app.restart --component celery-worker)."""

    name = "celery.restart"

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__(WORKER, timeout)


class CeleryScale(AppScale):
    """Scale the Celery workers to N (app.scale --component celery-worker); undo = scale back."""

    name = "celery.scale"

    def __init__(self, replicas: int = 1, expect: int | None = None, timeout: float | None = None,
                 undo_on_failure: bool = True) -> None:
        super().__init__(WORKER, replicas, expect=expect, timeout=timeout, undo_on_failure=undo_on_failure)


# ------------------------------------------------------------------ celery.retry-failed


@dataclass(frozen=True)
class FailedRecord:
    raw: str
    task: str
    queue: str | None  # None: not routable to a configured queue
    problem: str | None = None


@dataclass
class FailedState:
    failed_queue: str
    total: int
    records: list[FailedRecord]
    queues: list[str]


def parse_failed(raw: str, queues: list[str]) -> FailedRecord:
    """A failed-queue record; `problem` says why it cannot be re-queued (it is then left where it is)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return FailedRecord(raw, "?", None, "not JSON")
    if not isinstance(data, dict) or not isinstance(data.get("task"), str) or not data["task"]:
        return FailedRecord(raw, task_name(raw), None, "no task name")
    if not isinstance(data.get("args", []), list) or not isinstance(data.get("kwargs", {}), dict):
        return FailedRecord(raw, data["task"], None, "args/kwargs malformed")
    queue = data.get("queue") or (queues[0] if queues else None)
    if queue not in queues:
        return FailedRecord(raw, data["task"], None, f"queue {queue!r} is not one of the inventory's redis.queues")
    return FailedRecord(raw, data["task"], str(queue))


class CeleryRetryFailed(Step[FailedState]):
    """Re-queue the failed tasks the failed queue holds (previewed per task name, --limit); never a purge."""

    name = "celery.retry-failed"
    scope = "env"
    needs = ("redis",)
    irreversible = "re-queued tasks are run by the workers as soon as they are taken; that cannot be called back"

    def __init__(self, limit: int | None = None, task: str | None = None) -> None:
        if limit is not None and int(limit) < 1:
            raise UsageError(f"--limit must be at least 1, not {limit}")
        self.limit = None if limit is None else int(limit)
        self.task = task or None

    def targets(self, ctx: Context) -> list[EnvTarget]:
        settings = _settings(ctx)
        return [EnvTarget(f"{settings.failed_queue} on {redis_target(ctx).name}", kind="queue",
                          id=settings.failed_queue)]

    def check(self, ctx: Context, target: EnvTarget) -> FailedState:
        settings = _settings(ctx)
        session = ctx.redis()
        cap = min(self.limit or PREVIEW_CAP, PREVIEW_CAP) if self.task is None else PREVIEW_CAP

        def read() -> FailedState:
            kind = session.client.type(settings.failed_queue)
            if kind not in ("list", "none"):
                raise StepError(f"{target}: {settings.failed_queue} is a {kind}, not a list: nothing re-queued",
                                hint="check redis.failed_queue in the inventory")
            total = int(session.client.llen(settings.failed_queue))
            raws = session.client.lrange(settings.failed_queue, 0, cap - 1)  # oldest first (the app RPUSHes)
            return FailedState(settings.failed_queue, total,
                               [parse_failed(r, list(settings.queues)) for r in raws], list(settings.queues))

        return redis_call(session, read)

    def plan(self, state: FailedState) -> Plan:
        chosen = [r for r in state.records if r.queue is not None and (self.task is None or r.task == self.task)]
        if self.limit is not None:
            chosen = chosen[:self.limit]
        left = [r for r in state.records if r.problem]
        notes = []
        if left:
            reasons = Counter(r.problem for r in left)
            notes.append(f"{len(left)} record(s) left in {state.failed_queue}: "
                         + ", ".join(f"{why} x{n}" for why, n in reasons.items()))
        if state.total > len(state.records) and self.limit is None:
            notes.append(f"only the oldest {len(state.records)} of {state.total} records were read: re-run for more")
        remaining = state.total - len(chosen)
        by_task = _counts([r.raw for r in chosen])
        data = {"failed": state.total, "by_task": _counts([r.raw for r in state.records]), "selected": by_task}
        if not chosen:
            what = f" of task {self.task}" if self.task else ""
            return Plan.nothing(f"no failed task{what} to re-queue in {state.failed_queue} ({state.total} record(s))"
                                + ("; " + "; ".join(notes) if notes else ""), data=data)
        queues = Counter(r.queue for r in chosen)
        return Plan(
            changes=(Change(
                f"re-queue {len(chosen)} failed task(s) from {state.failed_queue} ({_listing(by_task)}) to "
                + ", ".join(f"{q} ({n})" for q, n in queues.items()),
                before={"failed": state.total, "by_task": by_task},
                after={"failed": remaining, "requeued": len(chosen)},
                params={"records": [(r.raw, r.queue) for r in chosen]}),),
            reason="; ".join(notes) or None, data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        settings = _settings(ctx)
        session = ctx.redis()
        records = [(str(raw), str(queue)) for raw, queue in plan.changes[0].params["records"]]
        moved, ids = 0, []
        for start in range(0, len(records), BATCH):
            batch = records[start:start + BATCH]
            queues = sorted({q for _, q in batch})
            argv: list[str] = []
            for raw, queue in batch:
                data = json.loads(raw)
                new_id = str(uuid.uuid4())
                ids.append(new_id)
                argv += [raw, str(queues.index(queue) + 2),
                         celery_message(data["task"], data.get("args") or [], data.get("kwargs") or {}, queue,
                                        task_id=new_id, retry_of=data.get("id"))]
            moved += int(_eval(session, _RETRY_LUA, [settings.failed_queue, *queues], argv,
                               summary=f"re-queue failed tasks {start + 1}-{start + len(batch)} of {len(records)} "
                                       f"({_listing(_counts([r for r, _ in batch]))})"))
        gone = len(records) - moved
        return Outcome(reason=f"re-queued {moved} of {len(records)} failed task(s)"
                              + (f"; {gone} had already been taken from {settings.failed_queue}" if gone else ""),
                       data={"requeued": moved, "task_ids": ids[:100]})

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        """The script's count is the proof: a re-queued task that fails again is a new failed record."""


# ------------------------------------------------------------------ celery.purge


@dataclass
class QueueState:
    queue: str
    length: int
    counts: dict[str, int]
    sampled: bool
    head: str | None
    tail: str | None


class CeleryPurge(Step[QueueState]):
    """Delete every message queued in ONE named queue, after a preview; only if it has not changed since."""

    name = "celery.purge"
    scope = "env"
    destructive = True
    needs = ("redis",)
    irreversible = "purged messages are deleted: those tasks will never run"

    def __init__(self, queue: str) -> None:
        if not queue:
            raise UsageError("celery.purge needs --queue NAME: name the one queue whose messages to delete")
        self.queue = queue

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        settings = _settings(ctx)
        known = [*settings.queues, settings.failed_queue]
        if self.queue not in known:
            raise UsageError(f"{self.queue!r} is not a queue of environment {ctx.env.name!r}",
                             hint=f"known queues: {', '.join(known)} (redis.queues and redis.failed_queue)")
        if not ctx.check and not ctx.assume_yes:  # on every tier: deleting queued tasks is always confirmed
            raise ConfirmationRequired(
                f"celery.purge deletes every task queued in {self.queue} on {ctx.env.name}; it needs --yes",
                hint=f"preview what it would delete: invoke celery.purge --env {ctx.env.name} --queue {self.queue} "
                     "--check; then re-run with --yes")

    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [EnvTarget(f"{self.queue} on {redis_target(ctx).name}", kind="queue", id=self.queue)]

    def check(self, ctx: Context, target: EnvTarget) -> QueueState:
        session = ctx.redis()
        client = session.client

        def read() -> QueueState:
            kind = client.type(self.queue)
            if kind not in ("list", "none"):
                raise StepError(f"{target}: {self.queue} is a {kind}, not a Celery queue: nothing deleted")
            pipe = client.pipeline(transaction=True)  # one consistent snapshot of length and ends
            pipe.llen(self.queue)
            pipe.lindex(self.queue, 0)
            pipe.lindex(self.queue, -1)
            pipe.lrange(self.queue, -PREVIEW_CAP, -1)
            length, head, tail, sample = pipe.execute()
            return QueueState(self.queue, int(length), _counts(sample), int(length) > PREVIEW_CAP, head, tail)

        return redis_call(session, read)

    def plan(self, state: QueueState) -> Plan:
        if state.length == 0:
            return Plan.nothing(f"queue {state.queue} is empty: nothing to delete", data={"messages": 0})
        sample = f" (task names counted in the oldest {PREVIEW_CAP})" if state.sampled else ""
        return Plan(
            changes=(Change(
                f"DELETE all {state.length} message(s) queued in {state.queue}: {_listing(state.counts)}{sample}; "
                "these tasks will never run",
                before={"queue": state.queue, "messages": state.length, "by_task": state.counts},
                after={"queue": state.queue, "messages": 0}, destructive=True,
                params={"length": state.length, "head": _sha1(state.head or ""), "tail": _sha1(state.tail or "")}),),
            data={"queue": state.queue, "messages": state.length, "by_task": state.counts})

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        session = ctx.redis()
        params = plan.changes[0].params
        result = int(_eval(session, _PURGE_LUA, [self.queue],
                           [str(params["length"]), params["head"], params["tail"]],
                           summary=f"delete the {params['length']} previewed message(s) of queue {self.queue}"))
        if result < 0:
            raise StepError(f"{target}: the queue changed since the preview ({params['length']} message(s) then, "
                            f"{-result - 1} now): nothing was deleted",
                            hint=f"stop what feeds or drains it (e.g. invoke celery.scale --replicas 0), then re-run "
                                 f"celery.purge --queue {self.queue} to preview again")
        return Outcome(reason=f"deleted {result} message(s) from {self.queue}", data={"deleted": result})

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        """The script deleted the list atomically; new messages may be queued again at once."""


def _eval(session: RedisSession, script: str, keys: list[str], argv: list[str], *, summary: str) -> Any:
    return redis_call(session, lambda: session.change("EVAL", script, len(keys), *keys, *argv, summary=summary))
