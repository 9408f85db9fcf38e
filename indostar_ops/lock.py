"""The environment's maintenance lock, shared by every operator's machine.

One window (or locked playbook run) per environment at a time. The holder record says who
(`user@host`), which run, since when, and until when the lease lasts; the run renews the lease
while it lives and releases it at the very end. Backends, chosen in the inventory
(`maintenance.lock.backend`):

- `file`: an flock'ed JSON file (one machine: the sandbox, a shared jump host);
- `postgres`: a session advisory lock plus a holder row in an ops schema of the application
  database (a crashed client's session ends, so its advisory lock goes with it);
- `dynamodb`: a conditional put with a lease, as Terraform's S3 backend locks state.

Rules, the same for every backend:
- nobody holds it (or the holder released it): take it;
- a live holder (file locked, advisory lock held, or an unexpired DynamoDB lease): refuse, naming it;
- the same run id (`--resume`) whose process is gone: take it over, it is ours;
- a stale holder (its process is gone, or its lease expired): refuse unless `--break-lock`, which
  says exactly what it breaks (and the journal records it).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IndostarError, StepError, UsageError

if TYPE_CHECKING:
    from .context import Context
    from .inventory import Environment

__all__ = ["Holder", "LockHeld", "LockKeeper", "LockLost", "open_lock"]


class LockHeld(UsageError):
    """Another run holds the environment's lock (exit 2: nothing was run)."""


class LockLost(StepError):
    """Our lease could not be renewed (someone broke the lock, or the backend is gone)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Holder:
    env: str
    holder: str  # user@host
    run_id: str
    since: str  # ISO 8601 UTC
    expires: str  # ISO 8601 UTC: the lease ends here unless renewed
    task: str = ""
    pid: int = 0

    @property
    def expired(self) -> bool:
        return datetime.fromisoformat(self.expires) <= _now()

    def describe(self) -> str:
        lease = "lease expired" if self.expired else "lease until"
        return (f"{self.holder} (run {self.run_id}{', ' + self.task if self.task else ''}) "
                f"since {self.since}, {lease} {self.expires}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Holder:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["pid"] = int(fields.get("pid") or 0)
        return cls(**{k: str(v) if k != "pid" else v for k, v in fields.items()})


def new_holder(env: Environment, user: str, run_id: str, lease: float, task: str = "") -> Holder:
    now = _now()
    return Holder(env=env.name, holder=f"{user}@{socket.gethostname()}", run_id=run_id, since=_iso(now),
                  expires=_iso(now + timedelta(seconds=lease)), task=task, pid=os.getpid())


def decide(env: str, current: Holder | None, alive: bool | None, me: Holder, *, break_lock: bool) -> Holder | None:
    """The one rule: returns the holder we break (None if nothing), or raises LockHeld."""
    if current is None:
        return None
    if alive is None:  # the backend cannot tell: the lease decides
        alive = not current.expired
    hint_resume = f"invoke maintenance.window --env {env} --resume {current.run_id}"
    if current.run_id == me.run_id:
        if alive:
            raise LockHeld(f"environment {env!r}: run {me.run_id} is still running elsewhere: {current.describe()}",
                           hint="wait for it to finish (or for its lease to expire), then resume")
        return None  # a resumed run takes back its own lock
    if alive:
        raise LockHeld(f"environment {env!r} is locked by {current.describe()}",
                       hint="wait for that window to end; invoke maintenance.status --env "
                            f"{env} shows it")
    if not break_lock:
        raise LockHeld(f"environment {env!r} has a stale lock: {current.describe()}; its run is gone "
                       "but did not release it",
                       hint=f"resume that run ({hint_resume}), or take the lock over with --break-lock")
    return current


# ---------------------------------------------------------------- backends


class _Backend:
    kind = "?"

    def __init__(self, env: Environment, ctx: Context) -> None:
        self.env = env
        self.ctx = ctx

    def where(self) -> str:
        raise NotImplementedError

    def acquire(self, me: Holder, *, break_lock: bool) -> Holder | None:
        raise NotImplementedError

    def renew(self, me: Holder) -> None:
        raise NotImplementedError

    def release(self, me: Holder) -> None:
        raise NotImplementedError

    def holder(self) -> Holder | None:
        raise NotImplementedError

    def close(self) -> None:
        return None

    def _journal(self, event: str, **fields: Any) -> None:
        if self.ctx.journal is not None:
            self.ctx.journal.event(event, backend=self.kind, where=self.where(), **fields)


_RECORD = 4096


class FileLock(_Backend):
    """`<dir>/<env>.lock`: flock while the run lives; the JSON record says who holds it."""

    kind = "file"

    def __init__(self, env: Environment, ctx: Context) -> None:
        super().__init__(env, ctx)
        settings = env.maintenance.lock
        from .journal import journal_dir

        directory = Path(settings.path) if settings.path else journal_dir(env) / "locks"
        self.path = directory / f"{env.name}.lock"
        self._fd: int | None = None

    def where(self) -> str:
        return str(self.path)

    def _read(self, fd: int) -> Holder | None:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return None if data.get("released") else Holder.from_dict(data)

    def _write(self, fd: int, record: dict[str, Any]) -> None:
        """One fixed-size write: a reader sees the old record or the new one, never an empty file."""
        data = json.dumps(record, indent=1).encode()
        if len(data) > _RECORD - 1:
            raise StepError(f"{self.path}: lock record too large ({len(data)} bytes)")
        os.pwrite(fd, data + b" " * (_RECORD - 1 - len(data)) + b"\n", 0)
        os.ftruncate(fd, _RECORD)
        os.fsync(fd)

    def acquire(self, me: Holder, *, break_lock: bool) -> Holder | None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = self._read(fd)
            os.close(fd)
            decide(self.env.name, current or replace(me, holder="an unknown process", run_id="?"), True, me,
                   break_lock=break_lock)
            raise AssertionError("unreachable") from None
        try:
            broken = decide(self.env.name, self._read(fd), False, me, break_lock=break_lock)
            self._write(fd, asdict(me))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return broken

    def renew(self, me: Holder) -> None:
        if self._fd is None:
            raise LockLost(f"{self.path}: lock not held")
        current = self._read(self._fd)
        if current is None or current.run_id != me.run_id:
            raise LockLost(f"{self.path}: the lock now says {current.describe() if current else 'nobody'}")
        self._write(self._fd, asdict(me))

    def release(self, me: Holder) -> None:
        if self._fd is None:
            return
        try:
            current = self._read(self._fd)
            if current is None or current.run_id == me.run_id:  # never clobber a record that is not ours
                self._write(self._fd, {**asdict(me), "released": True, "released_at": _iso(_now())})
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def holder(self) -> Holder | None:
        if not self.path.is_file():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return self._read(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class PostgresLock(_Backend):
    """A session advisory lock on a dedicated connection, plus a holder row in `<schema>.window_lock`."""

    kind = "postgres"

    def __init__(self, env: Environment, ctx: Context) -> None:
        super().__init__(env, ctx)
        if env.database is None:
            raise UsageError(f"environment {env.name!r}: maintenance.lock.backend is postgres but there is no "
                             "'database' section", hint="use backend: file or dynamodb, or add the database")
        from .connectors.postgres import PostgresConnector

        self.schema = env.maintenance.lock.schema
        self.connector = PostgresConnector(env.database, admin=True)
        self._key = f"indostar-ops window {env.name}"
        self._held = False

    def where(self) -> str:
        return f"{self.connector.where} {self.schema}.window_lock"

    def _table(self) -> Any:
        from psycopg import sql

        return sql.SQL("{}.window_lock").format(sql.Identifier(self.schema))

    def _ensure_table(self) -> None:
        from psycopg import sql

        self.connector.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        self.connector.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (env text PRIMARY KEY, holder text NOT NULL, run_id text NOT NULL, "
            "task text NOT NULL DEFAULT '', pid integer NOT NULL DEFAULT 0, since timestamptz NOT NULL, "
            "expires timestamptz NOT NULL)").format(self._table()))

    def _row(self) -> Holder | None:
        from psycopg import sql

        exists = self.connector.fetch("SELECT to_regclass(%s) AS t",
                                      (f'"{self.schema}".window_lock',))
        if not exists or exists[0]["t"] is None:
            return None
        rows = self.connector.fetch(sql.SQL("SELECT * FROM {} WHERE env = %s").format(self._table()),
                                    (self.env.name,))
        if not rows:
            return None
        row = rows[0]
        return Holder(env=row["env"], holder=row["holder"], run_id=row["run_id"], since=_iso(row["since"]),
                      expires=_iso(row["expires"]), task=row["task"], pid=row["pid"])

    def acquire(self, me: Holder, *, break_lock: bool) -> Holder | None:
        from psycopg import sql

        got = self.connector.fetch("SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS ok", (self._key,))
        if not got[0]["ok"]:
            current = self._row()
            self.close()
            decide(self.env.name, current or replace(me, holder="an unknown session", run_id="?"), True, me,
                   break_lock=break_lock)
            raise AssertionError("unreachable")
        try:
            broken = decide(self.env.name, self._row(), False, me, break_lock=break_lock)
            self._ensure_table()
            self.connector.execute(sql.SQL(
                "INSERT INTO {} (env, holder, run_id, task, pid, since, expires) VALUES (%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (env) DO UPDATE SET holder = excluded.holder, run_id = excluded.run_id, "
                "task = excluded.task, pid = excluded.pid, since = excluded.since, expires = excluded.expires",
            ).format(self._table()), (me.env, me.holder, me.run_id, me.task, me.pid, me.since, me.expires))
        except BaseException:
            self.close()
            raise
        self._held = True
        return broken

    def renew(self, me: Holder) -> None:
        from psycopg import sql

        status = self.connector.execute(sql.SQL("UPDATE {} SET expires = %s WHERE env = %s AND run_id = %s")
                                        .format(self._table()), (me.expires, me.env, me.run_id))
        if not status.endswith(" 1"):
            current = self._row()
            raise LockLost(f"{self.where()}: the lock now says {current.describe() if current else 'nobody'}")

    def release(self, me: Holder) -> None:
        from psycopg import sql

        try:
            self.connector.execute(sql.SQL("DELETE FROM {} WHERE env = %s AND run_id = %s").format(self._table()),
                                   (me.env, me.run_id))
        finally:
            self.close()  # ending the session drops the advisory lock

    def holder(self) -> Holder | None:
        try:
            return self._row()
        finally:
            if not self._held:  # our own session holds the advisory lock: keep it
                self.close()

    def close(self) -> None:
        self._held = False
        self.connector.close()


class DynamoLock(_Backend):
    """One item per environment in a DynamoDB table (key `lock_id`), written with conditions and a lease."""

    kind = "dynamodb"

    def __init__(self, env: Environment, ctx: Context) -> None:
        super().__init__(env, ctx)
        if env.aws is None:
            raise UsageError(f"environment {env.name!r}: maintenance.lock.backend is dynamodb but there is no "
                             "'aws' section", hint="add aws: {region: ...} or use another lock backend")
        self.table = env.maintenance.lock.table
        self.key = f"indostar-ops/{env.name}"

    def where(self) -> str:
        return f"dynamodb:{self.table}/{self.key}"

    def _item(self, me: Holder) -> dict[str, Any]:
        item = {k: {"S": str(v)} for k, v in asdict(me).items() if k != "pid"}
        return {"lock_id": {"S": self.key}, **item, "pid": {"N": str(me.pid)}}

    def holder(self) -> Holder | None:
        from botocore.exceptions import ClientError

        try:
            got = self.ctx.aws().client("dynamodb").get_item(TableName=self.table, Key={"lock_id": {"S": self.key}},
                                                             ConsistentRead=True)
        except ClientError as exc:
            raise self._explain(exc) from None
        item = got.get("Item")
        if not item:
            return None
        return Holder.from_dict({k: next(iter(v.values())) for k, v in item.items()})

    def _explain(self, exc: Any) -> IndostarError:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            return UsageError(f"lock table {self.table!r} does not exist",
                              hint=f"create it once: aws dynamodb create-table --table-name {self.table} "
                                   "--attribute-definitions AttributeName=lock_id,AttributeType=S "
                                   "--key-schema AttributeName=lock_id,KeyType=HASH --billing-mode PAY_PER_REQUEST")
        return StepError(f"{self.where()}: {exc}")

    def _put(self, me: Holder, condition: str, values: dict[str, Any], summary: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            extra = {"ExpressionAttributeValues": values} if values else {}
            self.ctx.aws().call("dynamodb", "put_item", summary=summary, TableName=self.table, Item=self._item(me),
                                ConditionExpression=condition, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise self._explain(exc) from None
        return True

    def acquire(self, me: Holder, *, break_lock: bool) -> Holder | None:
        # free, or our own run (resume) whose lease ran out
        if self._put(me, "attribute_not_exists(lock_id) OR (run_id = :me AND expires < :now)",
                     {":me": {"S": me.run_id}, ":now": {"S": me.since}}, f"take the lock {self.key}"):
            return None
        current = self.holder()
        if current is None:  # released between our put and our read: try once more
            if self._put(me, "attribute_not_exists(lock_id)", {}, f"take the lock {self.key}"):
                return None
            current = self.holder()
        broken = decide(self.env.name, current, None, me, break_lock=break_lock)
        if broken is None:
            broken = current  # pragma: no cover - decide() only returns None for our own expired run
        # break exactly what we showed: the same run, the same lease
        if not self._put(me, "run_id = :run AND expires = :exp",
                         {":run": {"S": broken.run_id}, ":exp": {"S": broken.expires}},
                         f"break the stale lock of run {broken.run_id} on {self.key}"):
            raise LockHeld(f"environment {self.env.name!r}: the lock changed while breaking it "
                           f"(now {self.holder().describe() if self.holder() else 'free'})",
                           hint="look again with invoke maintenance.status")
        return broken if broken.run_id != me.run_id else None

    def renew(self, me: Holder) -> None:
        if not self._put(me, "run_id = :me", {":me": {"S": me.run_id}}, f"renew the lock lease {self.key}"):
            current = self.holder()
            raise LockLost(f"{self.where()}: the lock now says {current.describe() if current else 'nobody'}")

    def release(self, me: Holder) -> None:
        from botocore.exceptions import ClientError

        try:
            self.ctx.aws().call("dynamodb", "delete_item", summary=f"release the lock {self.key}",
                                TableName=self.table, Key={"lock_id": {"S": self.key}},
                                ConditionExpression="run_id = :me", ExpressionAttributeValues={":me": {"S": me.run_id}})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise self._explain(exc) from None


_BACKENDS: dict[str, type[_Backend]] = {"file": FileLock, "postgres": PostgresLock, "dynamodb": DynamoLock}


def open_lock(env: Environment, ctx: Context) -> _Backend:
    return _BACKENDS[env.maintenance.lock.backend](env, ctx)


class LockKeeper:
    """Takes the lock, renews its lease from a daemon thread while the run lives, releases it."""

    def __init__(self, env: Environment, ctx: Context, run_id: str, *, task: str = "", break_lock: bool = False,
                 lease: float | None = None) -> None:
        self.env = env
        self.ctx = ctx
        self.run_id = run_id
        self.task = task
        self.break_lock = break_lock
        self.lease = lease or env.maintenance.lock.lease_seconds
        self.backend = open_lock(env, ctx)
        self.me: Holder | None = None
        self.broken: Holder | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> str:
        """Take the lock; returns what the report should say. Raises LockHeld."""
        me = new_holder(self.env, self.ctx.user, self.run_id, self.lease, self.task)
        self.broken = self.backend.acquire(me, break_lock=self.break_lock)
        self.me = me
        self.backend._journal("lock.acquire", holder=asdict(me),
                              broke=asdict(self.broken) if self.broken else None)
        self._thread = threading.Thread(target=self._renew_loop, name="lock-renew", daemon=True)
        self._thread.start()
        said = f"lock taken ({self.backend.kind}: {self.backend.where()}) as {me.holder}, lease {self.lease:.0f} s"
        if self.broken is not None:
            said += f"; BROKE the stale lock of {self.broken.describe()}"
        return said

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            assert self.me is not None
            now = _now()
            renewed = replace(self.me, expires=_iso(now + timedelta(seconds=self.lease)))
            try:
                self.backend.renew(renewed)
            except Exception as exc:  # noqa: BLE001 - a lost lease stops new steps, it never crashes the run
                self.lost = str(exc)
                self.backend._journal("lock.lost", error=self.lost)
                return
            self.me = renewed

    def release(self) -> str:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.me is None:
            return "lock not held"
        try:
            self.backend.release(self.me)
        finally:
            self.backend.close()
        self.backend._journal("lock.release", run_id=self.run_id)
        self.me = None
        return f"lock released ({self.backend.kind}: {self.backend.where()})"
