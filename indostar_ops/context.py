"""The Context every step receives first: environment, lazily opened connectors, the journal.

Each backend has exactly one write path here (`HostSession.change/upload`,
`DatabaseSession.execute`, `RedisSession.change`, `AwsSession.call`,
`HttpSession.send`). It records the action in the journal and refuses to run
in check mode, so a dry run can never write, whichever backend a step uses.
"""

from __future__ import annotations

import getpass
import sys
import threading
import time
from collections.abc import Callable, Sequence
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
    _connectors: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.env.tier == "sandbox" and self.step is None:
            from .sandbox import prepare

            prepare(self.env)

    def scoped(self, step: str, target: str) -> Context:
        return replace(self, step=step, target=target, actions=[])

    # -- journal ---------------------------------------------------------------

    def record(self, kind: str, summary: str, **detail: Any) -> dict[str, Any]:
        """Record one write action (already performed) for the report and the journal."""
        action = self.env.redactor.data({"kind": kind, "summary": summary, **detail})
        self.actions.append(action)
        if self.journal is not None:
            self.journal.event("action", step=self.step, target=self.target, **action)
        return action

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
        return DatabaseSession(self, self._cached(key, lambda: PostgresConnector(settings, admin=admin)))

    def redis(self) -> RedisSession:
        settings = self.env.redis
        if settings is None:
            raise InventoryError(f"environment {self.env.name!r} has no 'redis' section")
        from .connectors.redis import RedisConnector

        return RedisSession(self, self._cached("redis", lambda: RedisConnector(settings)))

    def aws(self) -> AwsSession:
        settings = self.env.aws
        if settings is None:
            raise InventoryError(f"environment {self.env.name!r} has no 'aws' section")
        if self.env.sandbox is not None:
            from .sandbox import ensure_moto

            ensure_moto(self.env)
        from .connectors.aws import AwsConnector

        connector = self._cached("aws", lambda: AwsConnector(settings))
        return AwsSession(self, connector)

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

    def read(
        self, argv: Sequence[str], *, ok: Sequence[int] = (0,), timeout: float | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        result = self.connector.run(self._argv(argv), timeout=timeout, stdin=stdin)
        if result.exit_code not in ok:
            raise CommandError(self.target.name, render(argv), result.exit_code, result.output)
        return result

    def change(
        self, argv: Sequence[str], summary: str, *, ok: Sequence[int] = (0,), stdin: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        self.ctx._guard(render(argv))
        result = self.connector.run(self._argv(argv), timeout=timeout, stdin=stdin)
        self.ctx.record(
            "command", summary, host=self.target.name, command=render(argv), exit_code=result.exit_code,
            duration=round(result.duration, 3),
        )
        if result.exit_code not in ok:
            raise CommandError(self.target.name, render(argv), result.exit_code, result.output)
        return result

    def upload(self, data: bytes, path: str, summary: str, *, mode: int | None = None) -> None:
        self.ctx._guard(f"upload {path}")
        started = time.monotonic()
        try:
            if self.target.become:
                self._put_as_root(data, path, mode)
            else:
                self.connector.put(data, path, mode)
        except OSError as exc:
            raise StepError(f"{self.target.name}: cannot write {path}: {exc.strerror or exc}",
                            hint="check that the directory exists and is writable for the SSH user") from None
        self.ctx.record("upload", summary, host=self.target.name, path=path, bytes=len(data),
                        duration=round(time.monotonic() - started, 3))


    def _put_as_root(self, data: bytes, path: str, mode: int | None) -> None:
        """Upload as the login user to a private temp file, then `sudo install` it into place."""
        staged = self.connector.run(["mktemp"])
        if not staged.ok:
            raise StepError(f"{self.target.name}: mktemp failed: {staged.output}")
        temp = staged.stdout.strip()
        self.connector.put(data, temp, 0o600)
        script = 'install -m "$1" -- "$2" "$3"; rc=$?; rm -f -- "$2"; exit $rc'
        result = self.connector.run(["sudo", "-n", "--", "sh", "-c", script, "sh",
                                     format(0o644 if mode is None else mode, "o"), temp, path])
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
        started = time.monotonic()
        status = self.connector.execute(query, params)
        self.ctx.record("sql", summary, database=self.where, sql=text, status=status,
                        duration=round(time.monotonic() - started, 3))
        return status


class RedisSession:
    """Redis: `client` for reads, `change` as the only write path."""

    def __init__(self, ctx: Context, connector: Any) -> None:
        self.ctx = ctx
        self.client = connector.client
        self.where = connector.where

    def change(self, *command: Any, summary: str) -> Any:
        text = " ".join(str(c) for c in command)
        self.ctx._guard(text)
        result = self.client.execute_command(*command)
        self.ctx.record("redis", summary, redis=self.where, command=text)
        return result


class AwsSession:
    """AWS: `client(service)` for describe/list/get calls, `call` as the only write path."""

    def __init__(self, ctx: Context, connector: Any) -> None:
        self.ctx = ctx
        self.connector = connector

    def client(self, service: str) -> Any:
        return self.connector.client(service)

    def call(self, service: str, operation: str, *, summary: str, **params: Any) -> Any:
        self.ctx._guard(f"{service}.{operation}")
        started = time.monotonic()
        response = getattr(self.connector.client(service), operation)(**params)
        self.ctx.record("aws", summary, call=f"{service}.{operation}", params=params,
                        duration=round(time.monotonic() - started, 3))
        return response


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
        status, body = _http(method, url, json_body, headers or {}, timeout)
        self.ctx.record("http", summary, method=method, url=url, status=status)
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


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
