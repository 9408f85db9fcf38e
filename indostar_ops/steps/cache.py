"""Runbook "Slow Response Times" (cache issues) and "Useful Commands / Redis", as scoped actions.

- `cache.info`: `INFO memory` and friends, hit rate, evictions, clients, and the runbook's
  `redis-cli --latency` as a round-trip sample measured from the operator's machine.
- `cache.keys --pattern P`: SCAN with a cap (never `KEYS *`, which blocks Redis), with type, TTL
  and size per key.
- `cache.delete --pattern P`: UNLINK exactly the keys the preview listed, in batches.
- `cache.flush --db N`: FLUSHDB of the named database only, after its key count (never FLUSHALL);
  a database holding the Celery queues is refused unless `--include-queues`.

Every read goes through the read-only client, every write through `RedisSession.change`
(journaled, refused in check mode). A Redis that is down or wants a password is one line
naming the server and the next thing to try.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfirmationRequired, StepError, UsageError
from ..severity import Severity
from ..step import Change, EnvTarget, Outcome, Plan, Step
from .redis_common import redis_call, redis_target, url_db

if TYPE_CHECKING:
    from ..context import Context, RedisSession

__all__ = ["CacheDelete", "CacheFlush", "CacheInfo", "CacheKeys"]

T = TypeVar("T")

BATCH = 500  # keys per UNLINK
SCAN_COUNT = 1000  # SCAN's COUNT hint: keys the server looks at per call
LATENCY_PINGS = 20
MAX_DB = 1023
SHOWN = 20  # keys shown in a change's preview (all of them are in params and the journal count)


def _check_db(db: int | None, flag: str = "--db") -> None:
    if db is not None and not 0 <= db <= MAX_DB:
        raise UsageError(f"{flag} must be a database number from 0 to {MAX_DB}, not {db}")


def _pattern(pattern: str) -> str:
    if not pattern or not pattern.strip():
        raise UsageError("--pattern is required, e.g. --pattern 'orders:*'")
    if len(pattern) > 500:
        raise UsageError("--pattern is longer than 500 characters")
    return pattern


def _protected(ctx: Context, db: int) -> set[str]:
    """The Celery queues in this database: only celery.purge / celery.retry-failed touch them."""
    settings = ctx.env.redis
    assert settings is not None
    if db != url_db(settings.url):
        return set()
    return {*settings.queues, settings.failed_queue}


# ------------------------------------------------------------------ cache.info


@dataclass
class InfoState:
    info: dict[str, Any]
    latency_ms: list[float]
    memory_threshold: Any
    latency_threshold: Any


class CacheInfo(Step[InfoState]):
    """Redis memory, hit rate, evictions, clients and a latency sample; monitoring exit codes."""

    name = "cache.info"
    scope = "env"
    read_only = True
    needs = ("redis",)

    def __init__(self, pings: int = LATENCY_PINGS) -> None:
        if not 1 <= int(pings) <= 1000:
            raise UsageError(f"--pings must be from 1 to 1000, not {pings}")
        self.pings = int(pings)

    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [redis_target(ctx)]

    def check(self, ctx: Context, target: EnvTarget) -> InfoState:
        session = ctx.redis()
        client = session.client

        def read() -> tuple[dict[str, Any], list[float]]:
            info = dict(client.info("all"))
            samples = []
            for _ in range(self.pings):
                started = time.perf_counter()
                client.ping()
                samples.append((time.perf_counter() - started) * 1000)
            return info, samples

        info, samples = redis_call(session, read)
        return InfoState(info, samples, ctx.env.thresholds.memory_pct, ctx.env.thresholds.redis_latency_ms)

    def plan(self, state: InfoState) -> Plan:
        info = state.info
        hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
        lookups = hits + misses
        used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        memory_pct = round(100 * used / limit, 1) if limit else None
        samples = sorted(state.latency_ms)
        latency = {"samples": len(samples), "min": round(samples[0], 3), "avg": round(sum(samples) / len(samples), 3),
                   "p50": round(samples[len(samples) // 2], 3), "max": round(samples[-1], 3)}
        keyspace = {k: v for k, v in info.items() if k.startswith("db") and isinstance(v, dict)}
        data = {
            "redis_version": info.get("redis_version"),
            "uptime_s": info.get("uptime_in_seconds"),
            "used_memory": used,
            "used_memory_human": info.get("used_memory_human"),
            "used_memory_peak_human": info.get("used_memory_peak_human"),
            "maxmemory": limit,
            "maxmemory_policy": info.get("maxmemory_policy"),
            "memory_pct": memory_pct,
            "fragmentation_ratio": info.get("mem_fragmentation_ratio"),
            "hits": hits,
            "misses": misses,
            "hit_rate_pct": round(100 * hits / lookups, 1) if lookups else None,
            "evicted_keys": int(info.get("evicted_keys", 0)),
            "expired_keys": int(info.get("expired_keys", 0)),
            "connected_clients": int(info.get("connected_clients", 0)),
            "blocked_clients": int(info.get("blocked_clients", 0)),
            "keyspace": keyspace,
            "latency_ms": latency,
        }
        severity = Severity.OK
        notes = []
        if memory_pct is not None:
            level = state.memory_threshold.evaluate(memory_pct)
            severity = Severity.worst([severity, level])
            if level != Severity.OK:
                notes.append(f"memory {memory_pct:g} % of maxmemory")
        level = state.latency_threshold.evaluate(latency["avg"])
        severity = Severity.worst([severity, level])
        if level != Severity.OK:
            notes.append(f"latency {latency['avg']:.2f} ms average from here")
        if data["evicted_keys"] and limit and data["maxmemory_policy"] != "noeviction":
            notes.append(f"{data['evicted_keys']} keys evicted since start (cache smaller than its working set)")
        reason = (f"memory {data['used_memory_human']}"
                  + (f" ({memory_pct:g} % of {limit} bytes)" if memory_pct is not None else " (no maxmemory)")
                  + f", hit rate {data['hit_rate_pct'] if lookups else '-'} %"
                  + f", evictions {data['evicted_keys']}, clients {data['connected_clients']}"
                  + f", latency avg {latency['avg']:.2f} ms max {latency['max']:.2f} ms ({len(samples)} pings)")
        if notes:
            reason += "; " + "; ".join(notes)
        return Plan.nothing(reason, severity=severity, data=data)


# ------------------------------------------------------------------ cache.keys / cache.delete


@dataclass
class KeysState:
    db: int
    pattern: str
    keys: list[dict[str, Any]]
    complete: bool  # SCAN finished (False: stopped at the cap; more may match)
    visited: int
    protected: list[str] = field(default_factory=list)
    limit: int = 0

    @property
    def stopped(self) -> str:
        """Why the listing may be incomplete ('' when SCAN went all the way round)."""
        if self.complete:
            return ""
        if len(self.keys) + len(self.protected) >= self.limit:
            return f"stopped at --limit {self.limit}; more may match"
        return f"SCAN stopped after visiting about {self.visited} keys (redis.scan_cap); more may match"


def scan(session: RedisSession, pattern: str, *, limit: int, cap: int) -> tuple[list[str], bool, int]:
    """SCAN MATCH pattern until the cursor returns to 0, `limit` keys matched or about `cap` keys visited."""
    client = session.client
    found: list[str] = []
    seen: set[str] = set()
    cursor, visited = 0, 0
    while True:
        cursor, batch = client.scan(cursor=cursor, match=pattern, count=SCAN_COUNT)
        visited += SCAN_COUNT
        for key in batch:
            if key not in seen:  # SCAN may return a key twice
                seen.add(key)
                found.append(key)
        if int(cursor) == 0:
            return found[:limit], len(found) <= limit, visited
        if len(found) >= limit or visited >= cap:
            return found[:limit], False, visited


def describe_keys(session: RedisSession, keys: list[str]) -> list[dict[str, Any]]:
    """Type, TTL (seconds, None = no expiry) and memory use of each key, in one round trip per 500 keys."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(keys), BATCH):
        chunk = keys[i:i + BATCH]
        pipe = session.client.pipeline(transaction=False)
        for key in chunk:
            pipe.type(key)
            pipe.pttl(key)
            pipe.memory_usage(key)
        replies = pipe.execute(raise_on_error=False)
        for n, key in enumerate(chunk):
            kind, pttl, size = replies[3 * n:3 * n + 3]
            if kind == "none":
                continue  # expired or deleted since SCAN saw it
            out.append({"key": key, "type": kind,
                        "ttl_s": None if not isinstance(pttl, int) or pttl < 0 else round(pttl / 1000, 1),
                        "bytes": size if isinstance(size, int) else None})
    return out


class _KeysStep(Step[KeysState]):
    scope = "env"
    needs = ("redis",)
    default_limit = 100

    def __init__(self, pattern: str, limit: int | None = None, db: int | None = None) -> None:
        self.pattern = _pattern(pattern)
        self.limit = self.default_limit if limit is None else int(limit)
        if self.limit < 1:
            raise UsageError(f"--limit must be at least 1, not {self.limit}")
        _check_db(db)
        self.db = db

    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [redis_target(ctx, self.db)]

    def check(self, ctx: Context, target: EnvTarget) -> KeysState:
        session = ctx.redis(self.db)
        settings = ctx.env.redis
        assert settings is not None

        def read() -> KeysState:
            keys, complete, visited = scan(session, self.pattern, limit=self.limit, cap=settings.scan_cap)
            protected = _protected(ctx, session.db)
            held = sorted(k for k in keys if k in protected)
            described = describe_keys(session, [k for k in keys if k not in protected])
            return KeysState(session.db, self.pattern, described, complete, visited, held, self.limit)

        return redis_call(session, read)


class CacheKeys(_KeysStep):
    """List keys matching a pattern with type, TTL and size (SCAN with a cap, never KEYS)."""

    name = "cache.keys"
    read_only = True

    def plan(self, state: KeysState) -> Plan:
        keys = sorted(state.keys, key=lambda k: k["key"])
        listed = keys + [{"key": k, "type": "list", "ttl_s": None, "bytes": None, "note": "Celery queue"}
                         for k in state.protected]
        more = f" ({state.stopped})" if state.stopped else ""
        total = sum(k["bytes"] or 0 for k in keys)
        return Plan.nothing(
            f"{len(listed)} key(s) match {state.pattern!r} in db {state.db}{more}, {total} bytes",
            severity=Severity.OK,
            data={"db": state.db, "pattern": state.pattern, "keys": listed, "complete": state.complete,
                  "bytes": total},
        )


class CacheDelete(_KeysStep):
    """UNLINK the keys matching a pattern: exactly the previewed ones, in batches of 500."""

    name = "cache.delete"
    destructive = True
    irreversible = "deleted cache entries are gone (the application re-creates them on its next miss)"
    default_limit = 10_000

    def __init__(self, pattern: str, limit: int | None = None, db: int | None = None) -> None:
        super().__init__(pattern, limit, db)
        if set(self.pattern) <= {"*"}:
            raise UsageError(f"--pattern {self.pattern!r} matches every key: that is a flush, not a delete",
                             hint="name a narrower pattern (e.g. 'orders:*'), or use cache.flush --db N")

    def plan(self, state: KeysState) -> Plan:
        keys = sorted(k["key"] for k in state.keys)
        notes = []
        if state.protected:
            notes.append(f"left alone: Celery queue(s) {', '.join(state.protected)} (use celery.purge)")
        if state.stopped:
            notes.append(f"{state.stopped}: re-run after this one")
        if not keys:
            return Plan.nothing(f"no key matches {state.pattern!r} in db {state.db}"
                                + ("; " + "; ".join(notes) if notes else ""), data={"deleted": 0})
        size = sum(k["bytes"] or 0 for k in state.keys)
        shown = keys[:SHOWN]
        return Plan(
            changes=(Change(
                f"unlink {len(keys)} key(s) matching {state.pattern!r} in db {state.db} ({size} bytes)",
                before={"count": len(keys), "keys": shown + ([f"... {len(keys) - SHOWN} more"]
                                                             if len(keys) > SHOWN else [])},
                after={"count": 0}, destructive=True, params={"keys": keys}),),
            reason="; ".join(notes) or None,
            data={"db": state.db, "pattern": state.pattern, "matched": len(keys)},
        )

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        session = ctx.redis(self.db)
        keys = list(plan.changes[0].params["keys"])
        deleted = 0
        for i in range(0, len(keys), BATCH):
            batch = keys[i:i + BATCH]
            deleted += int(redis_call(session, lambda b=batch, n=i: session.change(
                "UNLINK", *b, summary=f"unlink keys {n + 1}-{n + len(b)} of {len(keys)} matching "
                                      f"{self.pattern!r} in db {session.db}")))
        gone = len(keys) - deleted
        return Outcome(reason=f"unlinked {deleted} of {len(keys)} previewed key(s)"
                              + (f"; {gone} had already expired or been deleted" if gone else ""),
                       data={"deleted": deleted, "previewed": len(keys)})

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        """UNLINK's reply is the proof; a re-scan could see keys the application re-created meanwhile."""


# ------------------------------------------------------------------ cache.flush


@dataclass
class FlushState:
    db: int
    keys: int
    queues: dict[str, int]


class CacheFlush(Step[FlushState]):
    """FLUSHDB of the named database only, after showing its key count; never FLUSHALL."""

    name = "cache.flush"
    scope = "env"
    destructive = True
    irreversible = "flushed keys cannot be restored (the cache refills from the database on misses)"
    needs = ("redis",)

    def __init__(self, db: int, include_queues: bool = False) -> None:
        if db is None or isinstance(db, bool):
            raise UsageError("cache.flush needs --db N: name the database to flush (never all of them)")
        self.db = int(db)
        _check_db(self.db)
        self.include_queues = include_queues

    def preflight(self, ctx: Context) -> None:
        """No I/O. The runbook's FLUSHDB is never a side effect: it runs only with --yes, on every tier."""
        super().preflight(ctx)
        if not ctx.check and not ctx.assume_yes:
            raise ConfirmationRequired(
                f"cache.flush deletes every key of Redis db {self.db} on {ctx.env.name}; it needs --yes",
                hint=f"preview the key count: invoke cache.flush --env {ctx.env.name} --db {self.db} --check; "
                     "then re-run with --yes")

    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [redis_target(ctx, self.db)]

    def check(self, ctx: Context, target: EnvTarget) -> FlushState:
        session = ctx.redis(self.db)
        client = session.client

        def read() -> FlushState:
            selected = _selected_db(client)
            if selected is not None and selected != self.db:  # what the server says, not what we asked for
                raise StepError(f"{target}: the connection is on db {selected}, not db {self.db}: nothing flushed",
                                hint="check redis.url in the inventory (a proxy may ignore SELECT)")
            queues = {}
            for key in sorted(_protected(ctx, self.db)):
                if client.type(key) == "list":
                    queues[key] = int(client.llen(key))
            return FlushState(self.db, int(client.dbsize()), {k: v for k, v in queues.items() if v})

        state = redis_call(session, read)
        if state.queues and not self.include_queues:
            held = ", ".join(f"{k} ({v} message(s))" for k, v in state.queues.items())
            raise StepError(f"{target}: db {self.db} holds the Celery queue(s) {held}; flushing it would delete "
                            "queued tasks: nothing flushed",
                            hint=f"delete cache keys by pattern instead (invoke cache.delete --pattern 'PREFIX*' "
                                 f"--db {self.db}), or add --include-queues if losing those tasks is intended")
        return state

    def plan(self, state: FlushState) -> Plan:
        if state.keys == 0:
            return Plan.nothing(f"db {state.db} is already empty", data={"keys": 0})
        queues = "".join(f"; includes Celery queue {k} ({v} message(s))" for k, v in state.queues.items())
        return Plan(changes=(Change(f"flush db {state.db}: delete its {state.keys} key(s){queues}",
                                    before={"db": state.db, "keys": state.keys, "queues": state.queues},
                                    after={"db": state.db, "keys": 0}, destructive=True),),
                    data={"db": state.db, "keys": state.keys})

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        session = ctx.redis(self.db)
        redis_call(session, lambda: session.change("FLUSHDB", "ASYNC", summary=plan.changes[0].summary))
        return Outcome(reason=f"flushed db {self.db} ({plan.data['keys']} key(s))", data={"flushed": plan.data["keys"]})

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        """FLUSHDB's OK is the proof; the application may write new keys into the db at once."""


def _selected_db(client: Any) -> int | None:
    """The database the server says this connection uses (CLIENT INFO, Redis >= 6.2), None if unknown."""
    import redis.exceptions as rex

    try:
        return int(client.client_info()["db"])
    except rex.ResponseError:
        return None
