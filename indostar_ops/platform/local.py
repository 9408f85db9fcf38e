"""The sandbox's platform: the demo application as processes on this machine.

Layout under `platform.root`:

    releases/<n>/demo/*.py      the demo app's code (a copy of indostar_ops/sandbox_app)
    releases/<n>/config.json    that release's configuration
    releases/<n>/release.json   number, created, change cause
    state.json                  per component: desired replicas, current release, release history
    run/<instance>.pid          {"pid", "start", "release", "port"}: a process is ours only if its
                                pid *and* its kernel start time match (a recycled pid is not ours)
    run/<instance>.ready        written by a Celery worker once it consumes (its readiness probe)
    logs/<instance>.log         stdout+stderr of each process, appended, one marker line per start
    secrets/                    the webhook secret (0600), generated once

Components: `backend` (uvicorn, replica N on port ports.backend + N - 1, ready when
GET /health answers 200) and `celery-worker` (a Celery worker on the inventory's Redis).
A release is a directory of code and config; `rollback` points a component at an
earlier release and replaces its processes. Every change (start, stop, release switch,
desired count) goes through `_write`, the backend's one journaled, check-mode-guarded path.
Waits go through `poll.wait_until`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..errors import StepError, UsageError
from ..poll import wait_until
from .base import Instance, LogLine, PlatformBackend, Revision, Rollout

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import Environment
    from ..inventory.model import LocalPlatform as LocalSettings

__all__ = ["LocalPlatform", "publish_release", "stop_all"]

T = TypeVar("T")

COMPONENTS = ("backend", "celery-worker")
APP_SOURCE = Path(__file__).resolve().parent.parent / "sandbox_app"
STOP_TIMEOUT_S = 20
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class LocalPlatform(PlatformBackend):
    kind: ClassVar[str] = "local"
    resource_kind: ClassVar[str] = "process group"
    capabilities: ClassVar[frozenset[str]] = frozenset({"logs", "restart", "scale", "rollback", "metrics"})

    def __init__(self, ctx: Context, settings: LocalSettings) -> None:
        super().__init__(ctx, settings)
        self.root = Path(settings.root)

    def where(self, component: str) -> str:
        return f"{self.root} ({self.resource(component)} processes on this machine)"

    # -- state ------------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.root / "state.json"

    def _state(self) -> dict[str, Any]:
        """The recorded state; the first use provisions release 1 and starts the processes (like racking a server)."""
        if not self._state_file.is_file():
            provision(self.ctx.env, self.settings, self.ctx)
        state: dict[str, Any] = json.loads(self._state_file.read_text())
        if state.get("stopped"):  # `sandbox.stop` stopped the stack: the next use starts it again as recorded
            resume(self.ctx.env, self.settings, self.ctx)
            state = json.loads(self._state_file.read_text())
        return state

    def _save(self, state: dict[str, Any]) -> None:
        temp = self._state_file.with_suffix(".tmp")
        temp.write_text(json.dumps(state, indent=2, sort_keys=True))
        temp.replace(self._state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time on this platform root (two operators, two steps)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, summary: str, fn: Callable[[], T], **detail: Any) -> T:
        """The one write path: refused in check mode, journaled (action.start/end) like every backend's."""
        self.ctx._guard(summary)
        with self.ctx.action("process", summary, platform=str(self.root), **detail) as end:
            result = fn()
            if isinstance(result, dict):
                end.update({k: v for k, v in result.items() if isinstance(v, str | int | float | bool)})
            return result

    # -- reads ------------------------------------------------------------------------

    def instances(self, component: str) -> list[Instance]:
        name = self.resource(component)
        state = self._state()
        desired = int(state["components"][component]["replicas"])
        out = []
        indexes = sorted(set(range(1, desired + 1)) | set(self._recorded(name)))
        for index in indexes:
            out.append(self._instance(component, name, index, desired))
        return out

    def _recorded(self, name: str) -> list[int]:
        found = []
        for pidfile in (self.root / "run").glob(f"{name}-*.pid"):
            suffix = pidfile.stem.rsplit("-", 1)[-1]
            if suffix.isdigit():
                found.append(int(suffix))
        return found

    def _instance(self, component: str, name: str, index: int, desired: int) -> Instance:
        instance = f"{name}-{index}"
        record = _read_pidfile(self.root / "run" / f"{instance}.pid")
        if record is None:
            return Instance(name=instance, component=component, ready=False, status="not started",
                            node=socket.gethostname())
        pid = int(record["pid"])
        alive = _ours(record)
        started = float(record.get("started", 0))
        if not alive:
            return Instance(name=instance, component=component, ready=False, status=f"exited (pid {pid})",
                            last_termination_reason=_last_error(self.root / "logs" / f"{instance}.log"),
                            node=socket.gethostname(), revision=str(record.get("release")),
                            age_s=None)
        ready = self._ready(component, instance, record)
        where = f"port {record['port']}" if record.get("port") else "worker"
        extra = "" if index <= desired else ", beyond the desired count"
        cpu, rss = _usage(pid)
        return Instance(
            name=instance, component=component, ready=ready,
            status=f"running (pid {pid}, {where}{extra})" if ready else f"starting (pid {pid}, {where})",
            node=socket.gethostname(), age_s=round(time.time() - started, 1) if started else None,
            image=f"release {record.get('release')}", revision=str(record.get("release")),
            cpu_millicores=cpu, memory_bytes=rss,
        )

    def _ready(self, component: str, instance: str, record: dict[str, Any]) -> bool:
        if component == "backend":
            return _health(int(record["port"]), self.settings.health_path) == 200
        ready = self.root / "run" / f"{instance}.ready"
        try:
            return ready.read_text().split()[0] == str(record["pid"])
        except (OSError, IndexError):
            return False

    def logs(self, component: str, *, tail: int = 100, since_s: float | None = None,
             grep: str | None = None) -> list[LogLine]:
        """The last `tail` lines of each instance's log (`since_s` counts only lines written since that long ago)."""
        name = self.resource(component)
        lines: list[LogLine] = []
        for index in sorted(self._recorded(name)):
            instance = f"{name}-{index}"
            path = self.root / "logs" / f"{instance}.log"
            if not path.is_file():
                continue
            if since_s is not None and path.stat().st_mtime < time.time() - since_s:
                continue
            text = _tail(path, tail)
            lines += [LogLine(instance, line) for line in text]
        return self.filter_lines(lines, grep)

    def replicas(self, component: str) -> tuple[int, int]:
        instances = self.instances(component)
        desired = int(self._state()["components"][component]["replicas"])
        return desired, sum(1 for i in instances if i.ready)

    def rollout_status(self, component: str) -> Rollout:
        state = self._state()
        entry = state["components"][component]
        desired, release = int(entry["replicas"]), str(entry["current"])
        instances = self.instances(component)
        wanted = [i for i in instances if int(i.name.rsplit("-", 1)[-1]) <= desired]
        updated = [i for i in wanted if i.revision == release and not i.status.startswith(("exited", "not"))]
        ready = [i for i in updated if i.ready]
        extra = [i for i in instances if i not in wanted and i.status.startswith(("running", "starting"))]
        figures = {"desired": desired, "updated": len(updated), "ready": len(ready), "available": len(ready)}
        dead = [i for i in wanted if i.status.startswith("exited")]
        if dead:
            return Rollout(False, f"{', '.join(i.name for i in dead)} exited: "
                                  f"{dead[0].last_termination_reason or 'see app.logs'}", failed=True, **figures)
        if len(updated) < desired:
            return Rollout(False, f"{len(updated)} of {desired} processes run release {release}", **figures)
        if extra:
            return Rollout(False, f"{len(extra)} process(es) beyond the desired {desired} still running", **figures)
        if len(ready) < desired:
            return Rollout(False, f"{len(ready)} of {desired} processes ready", **figures)
        return Rollout(True, f"{len(ready)}/{desired} processes of release {release} ready", **figures)

    def revisions(self, component: str) -> list[Revision]:
        self.resource(component)
        current = int(self._state()["components"][component]["current"])
        out = []
        for meta in sorted((self.root / "releases").glob("*/release.json")):
            if not meta.parent.name.isdigit():
                continue  # a release being published (.N.tmp) or set aside
            info = json.loads(meta.read_text())
            number = int(info["number"])
            out.append(Revision(number=number, images={component: f"release {number}"}, name=str(meta.parent),
                                current=number == current, created=info.get("created"),
                                change_cause=info.get("change_cause")))
        return sorted(out, key=lambda r: r.number)

    # -- writes -----------------------------------------------------------------------

    def scale(self, component: str, replicas: int, *, summary: str, expect: int | None = None,
              dry_run: bool = False) -> None:
        name = self.resource(component)
        if not 0 <= replicas <= 8:
            raise UsageError(f"the sandbox runs 0 to 8 {name} processes, not {replicas}")
        if dry_run:
            return
        with self._locked():
            state = self._state()
            entry = state["components"][component]
            current = int(entry["replicas"])
            if expect is not None and current != expect:
                raise StepError(f"{self.target(component)}: desired count is {current}, not the expected {expect}: "
                                "someone changed it meanwhile; nothing was changed",
                                hint="look again (app.status) and re-run with the --expect you see")

            def apply() -> dict[str, Any]:
                started: list[int] = []
                try:
                    for index in range(1, replicas + 1):
                        if not self._running(name, index):
                            self._start(component, name, index, int(entry["current"]))
                            started.append(index)
                except BaseException:
                    for index in started:  # all or nothing: the recorded count stays what it was
                        self._stop(name, index)
                    raise
                stopped = [self._stop(name, i) for i in sorted(self._recorded(name), reverse=True) if i > replicas]
                entry["replicas"] = replicas
                self._save(state)
                return {"desired": replicas, "was": current, "started": len(started),
                        "stopped": len([s for s in stopped if s])}

            self._write(summary, apply, component=component, replicas=replicas)

    def restart(self, component: str, *, summary: str, dry_run: bool = False) -> dict[str, Any]:
        """Replace the processes one at a time: stop, start from the current release, wait for readiness."""
        name = self.resource(component)
        if dry_run:
            return {}
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._locked():
            state = self._state()
            entry = state["components"][component]
            self._write(summary, lambda: self._replace_all(component, name, int(entry["replicas"]),
                                                           int(entry["current"])),
                        component=component, release=int(entry["current"]))
        return {"restartedAt": stamp}

    def rollback(self, component: str, revision: Revision, *, summary: str, dry_run: bool = False) -> None:
        name = self.resource(component)
        release = self.root / "releases" / str(revision.number)
        if not (release / "release.json").is_file():
            raise StepError(f"{self.target(component)}: release {revision.number} is gone ({release})",
                            hint="list the releases with app.rollback --check")
        if dry_run:
            return
        with self._locked():
            state = self._state()
            entry = state["components"][component]

            def apply() -> dict[str, Any]:
                previous = int(entry["current"])
                entry["current"] = revision.number
                entry.setdefault("history", []).append(revision.number)
                self._save(state)
                self._replace_all(component, name, int(entry["replicas"]), revision.number)
                return {"from_release": previous, "to_release": revision.number}

            self._write(summary, apply, component=component, release=revision.number)

    def deploy(self, *, summary: str, change_cause: str = "", config: dict[str, Any] | None = None) -> int:
        """Publish a new release from the packaged demo code and roll every component onto it."""
        with self._locked():
            state = self._state()

            def apply() -> dict[str, Any]:
                number = publish_release(self.ctx.env, self.settings, change_cause=change_cause, config=config)
                for entry in state["components"].values():
                    entry["current"] = number
                    entry.setdefault("history", []).append(number)
                self._save(state)
                for component, entry in state["components"].items():
                    self._replace_all(component, self.resource(component), int(entry["replicas"]), number)
                return {"release": number}

            return int(self._write(summary, apply)["release"])

    # -- process control (only ever called inside _write) -----------------------------

    def _running(self, name: str, index: int) -> bool:
        record = _read_pidfile(self.root / "run" / f"{name}-{index}.pid")
        return record is not None and _ours(record)

    def _replace_all(self, component: str, name: str, replicas: int, release: int) -> dict[str, Any]:
        pids = []
        for index in range(1, replicas + 1):
            self._stop(name, index)
            pids.append(self._start(component, name, index, release))
            self._await_ready(component, f"{name}-{index}")
        for index in sorted(self._recorded(name), reverse=True):
            if index > replicas:
                self._stop(name, index)
        return {"replaced": len(pids), "release": release}

    def _await_ready(self, component: str, instance: str) -> None:
        def probe() -> tuple[bool, str]:
            record = _read_pidfile(self.root / "run" / f"{instance}.pid")
            if record is None or not _ours(record):
                raise StepError(f"{instance} exited while starting: "
                                f"{_last_error(self.root / 'logs' / f'{instance}.log') or 'no error logged'}",
                                hint=f"see {self.root / 'logs' / f'{instance}.log'} (invoke app.logs "
                                     f"--component {component})")
            return self._ready(component, instance, record), f"pid {record['pid']}"

        what = f"{instance} " + ("answering " + self.settings.health_path if component == "backend" else "consuming")
        wait_until(self.ctx, what, probe, done=lambda v: v[0], timeout=self.settings.rollout_timeout,
                   every=self.settings.poll_interval, describe=lambda v: ("ready " if v[0] else "starting ") + v[1],
                   hint=f"see {self.root / 'logs' / f'{instance}.log'}")

    def _start(self, component: str, name: str, index: int, release: int) -> int:
        return start_process(self.ctx.env, self.settings, component, name, index, release)

    def _stop(self, name: str, index: int) -> bool:
        return stop_process(self.root, f"{name}-{index}", self.ctx)


# -- provisioning and processes (module level: `sandbox.stop` uses them without a Context) ------


def _port(settings: LocalSettings, index: int) -> int:
    return int(settings.ports.get("backend", 18100)) + index - 1


def start_process(env: Environment, settings: LocalSettings, component: str, name: str, index: int,
                  release: int) -> int:
    root = Path(settings.root)
    release_dir = root / "releases" / str(release)
    instance = f"{name}-{index}"
    (root / "run").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    ready = root / "run" / f"{instance}.ready"
    ready.unlink(missing_ok=True)
    port = None
    if component == "backend":
        port = _port(settings, index)
        if _listening(port):
            raise StepError(f"port {port} for {instance} is taken by another program: not started",
                            hint="stop that program, or set platform.ports.backend in the inventory")
        argv = [sys.executable, "-m", "uvicorn", "demo.web:app", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "info"]
    else:
        concurrency = settings.worker_concurrency
        pool = ["--pool", "solo"] if concurrency == 1 else ["--pool", "prefork", "--concurrency", str(concurrency)]
        redis = env.redis
        queues = ",".join(redis.queues) if redis is not None else "celery"
        argv = [sys.executable, "-m", "celery", "-A", "demo.worker", "worker", "--loglevel", "INFO", *pool,
                "--hostname", f"{instance}@%h", "--queues", queues, "--without-gossip", "--without-mingle",
                "--without-heartbeat"]
    log_path = root / "logs" / f"{instance}.log"
    child_env = {**os.environ, "DEMO_CONFIG": str(release_dir / "config.json"), "DEMO_READY_FILE": str(ready),
                 "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        log.write(f"--- {datetime.now(UTC).isoformat(timespec='seconds')} starting {instance} "
                  f"release {release}\n".encode())
        log.flush()
        process = subprocess.Popen(argv, cwd=release_dir, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    record = {"pid": process.pid, "start": _start_ticks(process.pid), "release": release, "port": port,
              "started": time.time(), "component": component}
    (root / "run" / f"{instance}.pid").write_text(json.dumps(record))
    return process.pid


def stop_process(root: Path, instance: str, ctx: Context | None = None) -> bool:
    """SIGTERM the process group we started (verified by pid and start time), wait, then SIGKILL."""
    pidfile = root / "run" / f"{instance}.pid"
    record = _read_pidfile(pidfile)
    if record is None:
        return False
    stopped = False
    if _ours(record):
        pid = int(record["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            wait_until(ctx, f"{instance} (pid {pid}) to exit", lambda: not _ours(record), timeout=STOP_TIMEOUT_S,
                       every=0.1, describe=lambda gone: "exited" if gone else "still running")
        except StepError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _reap(pid)
        stopped = True
    pidfile.unlink(missing_ok=True)
    (root / "run" / f"{instance}.ready").unlink(missing_ok=True)
    return stopped


def stop_all(root: Path) -> list[str]:
    """Stop every demo process under `root` (sandbox.stop); the next use starts them again."""
    done = []
    for pidfile in sorted((root / "run").glob("*.pid")) if (root / "run").is_dir() else []:
        if stop_process(root, pidfile.stem):
            done.append(f"stopped the sandbox demo app's {pidfile.stem}")
    state_file = root / "state.json"
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        state["stopped"] = True
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True))
    return done


def resume(env: Environment, settings: LocalSettings, ctx: Context | None = None) -> None:
    """Start the recorded processes of a stopped sandbox stack (each component on its current release)."""
    root = Path(settings.root)
    with open(root / "provision.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads((root / "state.json").read_text())
        if not state.get("stopped"):
            return
        backend = _bare(ctx, settings)
        for component, entry in state["components"].items():
            name = settings.components[component]
            for index in range(1, int(entry["replicas"]) + 1):
                if not backend._running(name, index):
                    start_process(env, settings, component, name, index, int(entry["current"]))
        for component, entry in state["components"].items():
            for index in range(1, int(entry["replicas"]) + 1):
                backend._await_ready(component, f"{settings.components[component]}-{index}")
        state.pop("stopped")
        backend._save(state)


def _bare(ctx: Context | None, settings: LocalSettings) -> LocalPlatform:
    """A backend for provisioning, which runs before (and outside) any step."""
    backend = LocalPlatform.__new__(LocalPlatform)
    PlatformBackend.__init__(backend, ctx, settings)  # type: ignore[arg-type]
    backend.root = Path(settings.root)
    return backend


def provision(env: Environment, settings: LocalSettings, ctx: Context | None = None) -> None:
    """First use: check the sandbox extra, publish releases 1 and 2, start the processes on 2, record the state."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "celery") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"the sandbox platform runs the demo app, which needs {', '.join(missing)}",
                         hint="install the sandbox extra: scripts/bootstrap.sh sandbox (or pip install "
                              "'indostar-ops[sandbox]')")
    if env.sandbox is not None and env.database is not None:
        from ..sandbox import ensure_database

        ensure_database(env)
    root = Path(settings.root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "provision.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two first uses at once provision once
        if (root / "state.json").is_file():
            return
        before = set((root / "releases").iterdir()) if (root / "releases").is_dir() else set()
        try:
            _provision(env, settings, ctx, root)
        except BaseException:
            stop_all(root)  # a half-started stack is not left behind, nor its release
            for path in set((root / "releases").iterdir()) - before:
                shutil.rmtree(path, ignore_errors=True)
            raise


def _provision(env: Environment, settings: LocalSettings, ctx: Context | None, root: Path) -> None:
    # two recorded releases, as a running site has: app.rollback has somewhere to go from the first day
    previous = publish_release(env, settings, change_cause="previous release (sandbox provisioning): cache TTL 30 s",
                               config={"cache_ttl_s": 30})
    number = publish_release(env, settings, change_cause="current release (sandbox provisioning)")
    state = {"components": {c: {"replicas": int(settings.replicas.get(c, 1)), "current": number,
                                "history": [previous, number]} for c in settings.components}}
    backend = _bare(ctx, settings)
    for component, entry in state["components"].items():
        name = settings.components[component]
        for index in range(1, entry["replicas"] + 1):
            start_process(env, settings, component, name, index, number)
    for component, entry in state["components"].items():
        for index in range(1, entry["replicas"] + 1):
            backend._await_ready(component, f"{settings.components[component]}-{index}")
    backend._save(state)


def publish_release(env: Environment, settings: LocalSettings, *, change_cause: str = "",
                    config: dict[str, Any] | None = None) -> int:
    """A new release directory: the packaged demo code plus its config; returns its number."""
    root = Path(settings.root)
    releases = root / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name) for p in releases.iterdir() if p.name.isdigit()]
    number = max(numbers, default=0) + 1
    target = releases / str(number)
    staging = releases / f".{number}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "demo").mkdir(parents=True)
    for source in APP_SOURCE.glob("*.py"):
        shutil.copy2(source, staging / "demo" / source.name)
    (staging / "config.json").write_text(json.dumps(_app_config(env, settings, number, config or {}), indent=2))
    (staging / "release.json").write_text(json.dumps({
        "number": number, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "change_cause": change_cause or f"release {number}"}))
    staging.rename(target)
    return number


def _app_config(env: Environment, settings: LocalSettings, number: int, extra: dict[str, Any]) -> dict[str, Any]:
    root = Path(settings.root)
    secret = root / "secrets" / "razorpay_webhook_secret"
    # the inventory's webhook secret when it has one (payments.razorpay.webhook_secret), so the payments
    # procedures sign what this backend verifies; otherwise one generated for this sandbox
    razorpay = getattr(getattr(env, "payments", None), "razorpay", None)
    reference = getattr(razorpay, "webhook_secret", None)
    wanted = reference.get() if reference is not None else None
    if wanted is not None or not secret.is_file():
        secret.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret.unlink(missing_ok=True)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(wanted if wanted is not None else secrets.token_hex(24))
    db = env.database
    redis = env.redis
    outbox = env.notifications.outbox or str(root / "outbox.jsonl")
    return {
        "release": str(number),
        "redis_url": redis.url if redis is not None else "redis://127.0.0.1:6379/0",
        "database": {"host": db.host, "port": db.port, "name": db.name, "user": db.user} if db else {},
        "outbox": outbox,
        "webhook_secret_file": str(secret),
        "queue": redis.queues[0] if redis is not None and redis.queues else "celery",
        "failed_queue": redis.failed_queue if redis is not None else "celery:failed",
        **extra,
    }


# -- /proc helpers ------------------------------------------------------------------------------


def _read_pidfile(path: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and str(record.get("pid", "")).isdigit() else None


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; the name may contain spaces


def _start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _ours(record: dict[str, Any]) -> bool:
    """Alive, not a zombie, and the same process we started (pid and kernel start time both match)."""
    fields = _stat(int(record["pid"]))
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return record.get("start") is None or int(fields[19]) == int(record["start"])


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _usage(pid: int) -> tuple[float | None, int | None]:
    """Average CPU (millicores since start) and resident memory of the process and its children."""
    fields = _stat(pid)
    if fields is None:
        return None, None
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        busy = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / _TICKS
        alive_s = uptime - int(fields[19]) / _TICKS
        cpu = round(1000 * busy / alive_s, 1) if alive_s > 0 else None
    except (OSError, ValueError, IndexError):
        cpu = None
    rss = int(fields[21]) * _PAGE
    return cpu, rss


def _health(port: int, path: str) -> int | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.3)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int) -> list[str]:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block = min(size, max(lines, 1) * 400)
        while True:
            handle.seek(size - block)
            data = handle.read().decode(errors="replace").splitlines()
            if len(data) > lines or block == size:
                return data[-lines:] if lines else []
            block = min(size, block * 2)


def _last_error(path: Path) -> str | None:
    """The last error-looking line of a process's log, for 'why did it exit'."""
    if not path.is_file():
        return None
    for line in reversed(_tail(path, 50)):
        if any(word in line for word in ("Error", "ERROR", "Traceback", "error:")):
            return line.strip()[:300]
    return None
