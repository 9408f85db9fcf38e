"""The Context every step receives first: environment, lazily opened connectors, the journal.

Each backend has exactly one write path here (`HostSession.change/upload`,
`DatabaseSession.execute`, `RedisSession.change`, `AwsSession.call`,
`KubernetesSession.change`, `HttpSession.send`). It journals `action.start` (with an idempotency key)
before acting and `action.end` after, and refuses to run in check mode. The
read handles are read-only themselves: check-mode SQL sessions run with
`default_transaction_read_only=on`, the boto3 clients refuse anything but
Describe/List/Get (a botocore hook), and the Redis client refuses writes.
"""

from __future__ import annotations

import getpass
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .connectors.shell import CommandResult, HostConnector, render, with_path_prefix
from .errors import CheckModeViolation, CommandError, InventoryError, StepError

if TYPE_CHECKING:
    from .inventory import Environment, HostTarget
    from .journal import Journal

__all__ = ["Context"]


@dataclass
class Context:
    """Run-wide state passed explicitly; `scoped()` gives a step/target its own action list."""

    env: Environment
    check: bool = False
    assume_yes: bool = False
    interactive: bool = field(default_factory=lambda: sys.stdin.isatty())
    user: str = field(default_factory=lambda: _whoami())
    journal: Journal | None = None
    step: str | None = None
    target: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    confirm: Callable[[str], bool] | None = None
    step_id: str | None = None  # phase/name/hash(args): the step instance, for idempotency keys
    deadline: float | None = None  # time.monotonic() by which waits must end (the window's end)
    progress: Callable[[Any], None] | None = None  # receives poll.Progress events (console bar)
    _connectors: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.env.tier == "sandbox" and self.step is None:
            from .sandbox import prepare

            prepare(self.env)

    def scoped(self, step: str, target: str, step_id: str | None = None) -> Context:
        return replace(self, step=step, target=target, step_id=step_id, actions=[])

    # -- journal ---------------------------------------------------------------

    @contextmanager
    def action(self, kind: str, summary: str, **detail: Any) -> Iterator[dict[str, Any]]:
        """Journal the intent (`action.start`, idempotency key) before a write and the end after.

        A command that timed out, or a run killed mid-write, still shows what may have run.
        The body may add result fields (exit code, status) to the yielded dict.
        """
        key = f"{self.journal.run_id if self.journal else 'nojournal'}/{self.step_id or self.step}/" \
              f"{self.target}/{next(_ACTION_SEQ)}"
        if self.journal is not None:
            self.journal.event("action.start", step=self.step, target=self.target, key=key, kind=kind,
                               summary=summary, **detail)
        result: dict[str, Any] = {}
        started = time.monotonic()
        try:
            yield result
        except BaseException as exc:
            self._end(key, kind, summary, detail, result, started, error=f"{type(exc).__name__}: {exc}")
            raise
        self._end(key, kind, summary, detail, result, started)

    def _end(self, key: str, kind: str, summary: str, detail: dict[str, Any], result: dict[str, Any],
             started: float, error: str | None = None) -> None:
        record = {"kind": kind, "summary": summary, **detail, **result,
                  "duration": round(time.monotonic() - started, 3)}
        if error is not None:
            record["error"] = error
        action = self.env.redactor.data(record)
        self.actions.append(action)
        if self.journal is not None:
            self.journal.event("action.end", step=self.step, target=self.target, key=key, **action)

    def _guard(self, what: str) -> None:
        if self.check:
            raise CheckModeViolation(
                f"{self.target or self.env.name}: {self.step or 'step'} tried to write in check mode ({what}); "
                "nothing was executed",
            )

    # -- connectors --------------------------------------------------------------

    def _cached(self, key: str, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._connectors:
                self._connectors[key] = factory()
            return self._connectors[key]

    def host(self, target: HostTarget) -> HostSession:
        def factory() -> HostConnector:
            if target.connection == "local":
                from .connectors.local import LocalConnector

                return LocalConnector(target.name, self.env.ssh.command_timeout)
            from .connectors.ssh import SSHConnector

            return SSHConnector(target, self.env.ssh)

        return HostSession(self, target, self._cached(f"host:{target.name}", factory))

    def postgres(self, *, admin: bool = False) -> DatabaseSession:
        settings = self.env.database
        if settings is None:
            raise InventoryError(f"environment {self.env.name!r} has no 'database' section")
        from .connectors.postgres import PostgresConnector

        key = "postgres:admin" if admin else "postgres"
        if self.env.sandbox is not None and key not in self._connectors:
            from .sandbox import ensure_database

            ensure_database(self.env)
        return DatabaseSession(self, self._cached(
            key, lambda: PostgresConnector(settings, admin=admin, read_only=self.check)))

    def redis(self, db: int | None = None) -> RedisSession:
        """The inventory's Redis; `db` opens another logical database of the same server (cache.flush --db N)."""
        settings = self.env.redis
        if settings is None:
            raise InventoryError(f"environment {self.env.name!r} has no 'redis' section")
        from .connectors.redis import RedisConnector

        key = "redis" if db is None else f"redis:{db}"
        return RedisSession(self, self._cached(key, lambda: RedisConnector(settings, db=db)))

    def aws(self) -> AwsSession:
        settings = self.env.aws
        if settings is None:
            raise InventoryError(f"environment {self.env.name!r} has no 'aws' section")
        if self.env.sandbox is not None:
            from .sandbox import ensure_moto

            ensure_moto(self.env)
        from .connectors.aws import AwsConnector

        connector = self._cached("aws", lambda: AwsConnector(settings, read_only=self.check))
        return AwsSession(self, connector)

    def kubernetes(self) -> KubernetesSession:
        """The Kubernetes API of the inventory's platform (kubeconfig context + namespace)."""
        settings = self.env.platform
        if settings is None or settings.kind != "kubernetes":
            raise InventoryError(f"environment {self.env.name!r} has no 'platform' of kind kubernetes")
        from .platform.kubernetes import KubernetesConnector

        return KubernetesSession(self, self._cached(
            "kubernetes", lambda: KubernetesConnector(settings, read_only=self.check)))

    def http(self) -> HttpSession:
        return HttpSession(self)

    def close(self) -> None:
        with self._lock:
            connectors, self._connectors = list(self._connectors.values()), {}
        for connector in connectors:
            try:
                connector.close()
            except Exception:  # noqa: BLE001, S112 - closing is best effort, the run result stands
                continue

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class HostSession:
    """Commands on one host: `read` for probes, `change`/`upload` as the only write path."""

    def __init__(self, ctx: Context, target: HostTarget, connector: HostConnector) -> None:
        self.ctx = ctx
        self.target = target
        self.connector = connector

    def _argv(self, argv: Sequence[str]) -> list[str]:
        argv = with_path_prefix(argv, self.target.settings.path_prefix)
        return ["sudo", "-n", "--", *argv] if self.target.become else argv

    def _run(self, argv: Sequence[str], *, timeout: float | None = None, stdin: str | None = None,
             raw: bool = False) -> CommandResult:
        result = self.connector.run(argv if raw else self._argv(argv), timeout=timeout, stdin=stdin)
        if (self.target.become or raw) and result.exit_code == 1 and "sudo: a password is required" in result.stderr:
            raise StepError(
                f"{self.target.name}: sudo wants a password for {self.target.user} (become runs commands "
                "through sudo -n); nothing was run",
                hint=f"give {self.target.user} passwordless sudo on {self.target.name} (a sudoers drop-in, see the "
                "README's 'Reaching hosts'), or set become: false for this host",
            )
        return result

    def read(
        self, argv: Sequence[str], *, ok: Sequence[int] = (0,), timeout: float | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        result = self._run(argv, timeout=timeout, stdin=stdin)
        if result.exit_code not in ok:
            raise CommandError(self.target.name, render(argv), result.exit_code, result.output)
        return result

    def change(
        self, argv: Sequence[str], summary: str, *, ok: Sequence[int] = (0,), stdin: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        self.ctx._guard(render(argv))
        with self.ctx.action("command", summary, host=self.target.name, command=render(argv)) as end:
            result = self._run(argv, timeout=timeout, stdin=stdin)
            end["exit_code"] = result.exit_code
        if result.exit_code not in ok:
            raise CommandError(self.target.name, render(argv), result.exit_code, result.output)
        return result

    def upload(self, data: bytes, path: str, summary: str, *, mode: int | None = None) -> None:
        self.ctx._guard(f"upload {path}")
        with self.ctx.action("upload", summary, host=self.target.name, path=path, bytes=len(data)):
            try:
                if self.target.become:
                    self._put_as_root(data, path, mode)
                else:
                    self.connector.put(data, path, mode)
            except ConnectionError:
                raise  # unreachable or dropped: the runner reports it as such
            except OSError as exc:
                raise StepError(f"{self.target.name}: cannot write {path}: {exc.strerror or exc}",
                                hint="check that the directory exists and is writable for the SSH user") from None

    def _put_as_root(self, data: bytes, path: str, mode: int | None) -> None:
        """Upload as the login user to a private temp file, then `sudo install` it into place."""
        staged = self.connector.run(["mktemp"])
        if not staged.ok:
            raise StepError(f"{self.target.name}: mktemp failed: {staged.output}")
        temp = staged.stdout.strip()
        self.connector.put(data, temp, 0o600)
        script = 'install -m "$1" -- "$2" "$3"; rc=$?; rm -f -- "$2"; exit $rc'
        result = self._run(["sudo", "-n", "--", "sh", "-c", script, "sh",
                            format(0o644 if mode is None else mode, "o"), temp, path], raw=True)
        if not result.ok:
            raise StepError(f"{self.target.name}: sudo install of {path} failed: {result.output}",
                            hint="the SSH user needs passwordless sudo (ssh.become) on this host")


class DatabaseSession:
    """SQL: `fetch` for reads, `execute` as the only write path (SQL text is journaled)."""

    def __init__(self, ctx: Context, connector: Any) -> None:
        self.ctx = ctx
        self.connector = connector

    @property
    def where(self) -> str:
        return str(self.connector.where)

    def fetch(self, query: Any, params: Any = None) -> list[dict[str, Any]]:
        return self.connector.fetch(query, params)

    def sql_text(self, query: Any) -> str:
        return query if isinstance(query, str) else query.as_string(self.connector.connection())

    def execute(self, query: Any, params: Any = None, *, summary: str) -> str:
        text = self.sql_text(query)
        self.ctx._guard(text)
        with self.ctx.action("sql", summary, database=self.where, sql=text) as end:
            status = self.connector.execute(query, params)
            end["status"] = status
        return status


class RedisSession:
    """Redis: `client` for reads (it refuses writes), `change` as the only write path."""

    def __init__(self, ctx: Context, connector: Any) -> None:
        self.ctx = ctx
        self.client = connector.reader
        self._writer = connector.client
        self.where = connector.where
        self.db: int = connector.db

    def change(self, *command: Any, summary: str) -> Any:
        text = " ".join(str(c) for c in command)
        if len(text) > 500:
            text = text[:500] + f"... ({len(command)} arguments)"
        self.ctx._guard(text)
        with self.ctx.action("redis", summary, redis=self.where, command=text):
            return self._writer.execute_command(*command)


class AwsSession:
    """AWS: `client(service)` for Describe/List/Get (it refuses writes), `call` as the only write path."""

    def __init__(self, ctx: Context, connector: Any) -> None:
        self.ctx = ctx
        self.connector = connector

    def client(self, service: str) -> Any:
        return self.connector.client(service)

    def call(self, service: str, operation: str, /, *, summary: str, journal_params: bool = True,
             **params: Any) -> Any:
        """One write. `journal_params=False` keeps a payload (a page body, a config file) out of the journal.

        In check mode only an EC2-style `DryRun=True` request is sent (AWS validates it, changes nothing).
        """
        if params.get("DryRun"):
            return getattr(self.connector.client(service), operation)(**params)
        self.ctx._guard(f"{service}.{operation}")
        shown = params if journal_params else {k: "<not journaled>" for k in params}
        with self.ctx.action("aws", summary, call=f"{service}.{operation}", params=shown), self.connector.writing():
            return getattr(self.connector.client(service), operation)(**params)


class KubernetesSession:
    """Kubernetes: `core`/`apps`/`custom` API objects for reads (they refuse writes), `change` as the only write path.

    In check mode only server-side dry runs (`dry_run="All"`) pass: the API server validates them
    (RBAC, admission, schema) and stores nothing.
    """

    def __init__(self, ctx: Context, connector: Any) -> None:
        self.ctx = ctx
        self.connector = connector
        self.core, self.apps, self.custom = connector.core, connector.apps, connector.custom
        self.namespace = connector.namespace
        self.where = connector.where

    def change(self, api: str, method: str, *, summary: str, resource: str, journal_body: bool = True,
               **kwargs: Any) -> Any:
        call = getattr(getattr(self, api), method)
        if kwargs.get("dry_run") == "All":
            return call(namespace=self.namespace, **kwargs)
        self.ctx._guard(f"kubernetes {method} {resource}")
        body = kwargs.get("body") if journal_body else "<not journaled>"
        with self.ctx.action("kubernetes", summary, call=method, resource=resource, namespace=self.namespace,
                             context=self.connector.context_name, body=body), self.connector.writing():
            return call(namespace=self.namespace, **kwargs)


class HttpSession:
    """HTTP with a timeout on every request: `get` for probes, `send` as the only write path."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def get(self, url: str, *, timeout: float = 10, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return _http("GET", url, None, headers or {}, timeout)

    def send(
        self, method: str, url: str, *, summary: str, json_body: Any = None,
        headers: dict[str, str] | None = None, timeout: float = 10,
    ) -> tuple[int, bytes]:
        self.ctx._guard(f"{method} {url}")
        with self.ctx.action("http", summary, method=method, url=url) as end:
            status, body = _http(method, url, json_body, headers or {}, timeout)
            end["status"] = status
        return status, body


def _http(method: str, url: str, json_body: Any, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    import json
    import urllib.error
    import urllib.request

    data = None if json_body is None else json.dumps(json_body).encode()
    if data is not None:
        headers = {"Content-Type": "application/json", **headers}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


_ACTION_SEQ = itertools.count(1)


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
