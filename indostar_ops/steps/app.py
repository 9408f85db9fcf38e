"""Runbook "Application Down / 502", "Slow Response Times", "High Error Rate", "Useful Commands".

The application's components (backend, celery-worker) on whatever platform the
inventory names (`indostar_ops.platform`): status with monitoring severities,
logs, the health endpoint's timing breakdown, and the changes an operator makes
during an incident: rolling restart, scale, resources, rollback. Every change
waits for the rollout through the one poller and verifies readiness; a change
that times out names the stuck instances and the command that undoes it.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import StepError, UsageError, WaitTimeout
from ..platform.base import (
    Instance,
    PlatformBackend,
    Revision,
    Rollout,
    backend_class,
    backend_for,
    format_bytes,
    parse_cpu,
    parse_memory,
    resource_name,
)
from ..poll import wait_until
from ..severity import Severity
from ..step import Change, EnvTarget, Outcome, Plan, Receipt, Step

if TYPE_CHECKING:
    from ..context import Context

__all__ = [
    "AppHealth",
    "AppLogs",
    "AppResources",
    "AppRestart",
    "AppRollback",
    "AppScale",
    "AppStatus",
    "parse_duration",
]

MEMORY_WARN = 0.9  # memory use above this share of the limit is a WARNING (OOMKilled is next)


def parse_duration(text: str) -> float:
    """'90s', '10m', '2h', '1h30m' -> seconds; UsageError otherwise."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise UsageError(f"{text!r} is not a duration", hint="e.g. --since 10m, 1h, 90s, 1h30m")
    h, m, s = (int(g or 0) for g in match.groups())
    return float(h * 3600 + m * 60 + s)


class _PlatformStep(Step[Any]):
    """One target per component: the platform resource (deployment/backend, compose service, ECS service)."""

    scope = "env"
    needs: ClassVar[tuple[str, ...]] = ("platform",)
    capability: ClassVar[str | None] = None
    component: str

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        cls = backend_class(ctx.env)
        if self.capability and self.capability not in cls.capabilities:
            raise UsageError(f"{self.name}: the {cls.kind} platform of {ctx.env.name!r} does not support "
                             f"{self.capability}")
        for component in self._components(ctx):
            resource_name(ctx.env, component)

    def _components(self, ctx: Context) -> list[str]:
        return [self.component]

    def targets(self, ctx: Context) -> list[EnvTarget]:
        cls = backend_class(ctx.env)
        return [EnvTarget(f"{cls.resource_kind}/{resource_name(ctx.env, c)}", kind=cls.resource_kind, id=c)
                for c in self._components(ctx)]

    @staticmethod
    def _component(target: EnvTarget) -> str:
        return str(target.id)

    def _timeout(self, ctx: Context, timeout: float | None) -> float:
        return float(timeout if timeout is not None else getattr(ctx.env.platform, "rollout_timeout", 600))

    def _wait_rollout(self, ctx: Context, backend: PlatformBackend, component: str, what: str,
                      timeout: float | None, undo: str | None) -> Rollout:
        """Wait for the rollout; on timeout (or a ProgressDeadlineExceeded) name the stuck instances and the undo."""
        settings = ctx.env.platform
        try:
            rollout = wait_until(
                ctx, what, lambda: backend.rollout_status(component), lambda r: r.done or r.failed,
                timeout=self._timeout(ctx, timeout), every=float(getattr(settings, "poll_interval", 2)),
                describe=lambda r: r.detail,
            )
        except WaitTimeout as exc:
            raise self._stuck(ctx, backend, component, exc.message, undo) from None
        if rollout.failed:
            raise self._stuck(ctx, backend, component, f"{what}: {rollout.detail}", undo)
        return rollout

    def _stuck(self, ctx: Context, backend: PlatformBackend, component: str, message: str,
               undo: str | None) -> WaitTimeout:
        try:
            stuck = [i for i in backend.instances(component) if i.problem]
        except StepError:
            stuck = []
        listing = "; ".join(f"{i.name}: {i.problem}" + (f" (last: {i.last_termination_reason}, {i.restarts} restarts)"
                                                          if i.last_termination_reason else "") for i in stuck[:10])
        return WaitTimeout(message + (f"\nstuck: {listing}" if listing else ""),
                           hint=(f"undo with: {undo}" if undo else "look at the instances' events and logs")
                           + f"; logs: invoke app.logs --env {ctx.env.name} --component {component} --tail 100")


# ---------------------------------------------------------------------------------- status


@dataclass
class _Status:
    component: str
    instances: list[Instance]
    desired: int
    ready: int
    expected: int | None
    metrics: bool


class AppStatus(_PlatformStep):
    """Instances of each component: readiness, restarts, last termination reason, node, age, CPU/memory use."""

    name = "app.status"
    read_only = True

    def __init__(self, components: list[str] | None = None) -> None:
        self.components = list(components) if components else None

    def _components(self, ctx: Context) -> list[str]:
        settings = ctx.env.platform
        return self.components or list(getattr(settings, "components", {}) or {})

    def check(self, ctx: Context, target: EnvTarget) -> _Status:
        backend = backend_for(ctx)
        component = self._component(target)
        instances = backend.instances(component)
        desired, ready = backend.replicas(component)
        return _Status(component, instances, desired, ready, backend.expected_replicas(component),
                       any(i.memory_bytes is not None for i in instances))

    def plan(self, state: _Status) -> Plan:
        sev, notes = Severity.OK, []
        if state.desired > 0 and state.ready == 0:
            sev = Severity.CRITICAL
            notes.append(f"no ready instance of {state.desired}")
        elif state.ready < state.desired:
            sev = Severity.WARNING
            notes.append(f"{state.ready}/{state.desired} ready")
        if state.expected is not None and state.desired < state.expected:
            sev = Severity.worst([sev, Severity.WARNING])
            notes.append(f"desired {state.desired} is below the inventory's {state.expected}")
        for i in state.instances:
            problem = i.problem
            if problem:
                sev = Severity.worst([sev, Severity.WARNING])
                notes.append(f"{i.name}: {problem}" + (f" ({i.restarts} restarts)" if i.restarts else ""))
            elif i.last_termination_reason == "OOMKilled":
                sev = Severity.worst([sev, Severity.WARNING])
                notes.append(f"{i.name}: restarted after OOMKilled ({i.restarts} restarts)")
            if i.memory_bytes and i.memory_limit_bytes and i.memory_bytes > MEMORY_WARN * i.memory_limit_bytes:
                sev = Severity.worst([sev, Severity.WARNING])
                notes.append(f"{i.name}: memory {format_bytes(i.memory_bytes)} of "
                             f"{format_bytes(i.memory_limit_bytes)} limit")
        rows = [_row(i) for i in state.instances]
        head = f"{state.ready}/{state.desired} ready" + (f"; {'; '.join(notes)}" if notes else "")
        return Plan.nothing(
            "\n".join([head, *rows]), severity=sev,
            data={"component": state.component, "desired": state.desired, "ready": state.ready,
                  "expected": state.expected, "metrics": state.metrics,
                  "instances": [i.as_dict() for i in state.instances]},
        )


def _row(i: Instance) -> str:
    usage = ""
    if i.cpu_millicores is not None:
        usage = f" cpu {i.cpu_millicores:.0f}m" + (f"/{i.cpu_limit_millicores:.0f}m" if i.cpu_limit_millicores else "")
    if i.memory_bytes is not None:
        usage += f" mem {format_bytes(i.memory_bytes)}" + (
            f"/{format_bytes(i.memory_limit_bytes)}" if i.memory_limit_bytes else "")
    age = f" age {_age(i.age_s)}" if i.age_s is not None else ""
    reason = f" {i.waiting_reason}" if i.waiting_reason else ""
    last = f" last={i.last_termination_reason}" if i.last_termination_reason else ""
    return (f"  {i.name} {'ready' if i.ready else 'NOT READY'} {i.status}{reason} restarts={i.restarts}{last}"
            f"{' node=' + i.node if i.node else ''}{age}{usage}")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


# ---------------------------------------------------------------------------------- logs


class AppLogs(_PlatformStep):
    """The last lines of a component's logs from every instance, optionally since a time and matching a pattern."""

    name = "app.logs"
    read_only = True
    capability = "logs"

    def __init__(self, component: str = "backend", tail: int = 100, since: str | None = None,
                 grep: str | None = None) -> None:
        self.component, self.tail, self.since, self.grep = component, tail, since, grep

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        if not 1 <= int(self.tail) <= 10000:
            raise UsageError(f"--tail {self.tail}: give 1..10000 lines")
        if self.since:
            parse_duration(self.since)
        if self.grep:
            from ..platform.base import compile_grep

            compile_grep(self.grep)

    def check(self, ctx: Context, target: EnvTarget) -> list[Any]:
        return backend_for(ctx).logs(self._component(target), tail=int(self.tail),
                                     since_s=parse_duration(self.since) if self.since else None, grep=self.grep)

    def plan(self, state: list[Any]) -> Plan:
        text = "\n".join(f"[{line.instance}] {line.text}" for line in state)
        return Plan.nothing(f"{len(state)} lines" + (f"\n{text}" if text else ""),
                            data={"lines": [{"instance": line.instance, "text": line.text} for line in state]})


# ---------------------------------------------------------------------------------- health


@dataclass
class _Timing:
    url: str
    status: int | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    body: str = ""
    threshold: Any = None


class AppHealth(Step[_Timing]):
    """GET the health endpoint with the runbook's curl timing breakdown: DNS, connect, TLS, first byte, total."""

    name = "app.health"
    scope = "env"
    read_only = True

    def __init__(self, url: str | None = None, timeout: float = 10) -> None:
        self.url, self.timeout = url, timeout

    def preflight(self, ctx: Context) -> None:
        url = self.url or ctx.env.urls.health
        if not url:
            raise UsageError(f"app.health: environment {ctx.env.name!r} has no urls.health",
                             hint=f"add urls: {{health: https://.../health}} to inventory/{ctx.env.name}.yaml or "
                                  "pass --url")
        if not re.match(r"^https?://[^/\s]+", url):
            raise UsageError(f"app.health: {url!r} is not an http(s) URL")

    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [EnvTarget(str(self.url or ctx.env.urls.health), kind="url")]

    def check(self, ctx: Context, target: EnvTarget) -> _Timing:
        timing = measure(target.name, self.timeout)
        timing.threshold = ctx.env.thresholds.response_time_s
        return timing

    def plan(self, state: _Timing) -> Plan:
        threshold = state.threshold
        t = state.timings
        breakdown = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in t.items())
        data = {"url": state.url, "status": state.status, "timings_s": {k: round(v, 4) for k, v in t.items()},
                "threshold_s": {"warning": threshold.warning, "critical": threshold.critical}}
        if state.error:
            return Plan.nothing(f"{state.url}: {state.error}" + (f" ({breakdown})" if breakdown else ""),
                                severity=Severity.CRITICAL, data={**data, "error": state.error})
        sev = threshold.evaluate(t["total"])
        if state.status is None or not 200 <= state.status < 300:
            sev = Severity.CRITICAL
        return Plan.nothing(f"HTTP {state.status} in {t['total'] * 1000:.0f} ms ({breakdown}); "
                            f"thresholds {threshold.warning}s/{threshold.critical}s", severity=sev, data=data)


def measure(url: str, timeout: float) -> _Timing:
    """One GET with the phases timed separately (what `curl -w` prints), stdlib sockets only."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, tls = parts.hostname or "", parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    out = _Timing(url)
    start = time.perf_counter()
    sock: socket.socket | None = None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        out.timings["dns"] = time.perf_counter() - start
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        sock.connect(address)
        out.timings["connect"] = time.perf_counter() - start
        if tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            out.timings["tls"] = time.perf_counter() - start
        host_header = host if parts.port is None else f"{host}:{port}"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: indostar-ops\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n".encode())
        first = sock.recv(65536)
        out.timings["first_byte"] = time.perf_counter() - start
        chunks = [first]
        deadline = start + timeout
        while chunks[-1] and time.perf_counter() < deadline and sum(map(len, chunks)) < 1 << 20:
            chunks.append(sock.recv(65536))
        out.timings["total"] = time.perf_counter() - start
        raw = b"".join(chunks)
        status_line = raw.split(b"\r\n", 1)[0].decode("latin-1")
        match = re.match(r"HTTP/\d(?:\.\d)? (\d{3})", status_line)
        out.status = int(match.group(1)) if match else None
        out.body = raw.partition(b"\r\n\r\n")[2][:500].decode("utf-8", "replace")
        if out.status is None:
            out.error = f"not an HTTP response: {status_line[:80]!r}"
    except (OSError, ssl.SSLError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        if sock is not None:
            sock.close()
    return out


# ---------------------------------------------------------------------------------- restart


class AppRestart(_PlatformStep):
    """Rolling restart of a component; refuses a paused deployment; waits for the rollout and readiness."""

    name = "app.restart"
    idempotent = False  # every run is a new rollout
    capability = "restart"
    irreversible = "a restart only replaces instances; if the new ones fail, app.rollback returns to the last revision"

    def __init__(self, component: str = "backend", timeout: float | None = None) -> None:
        self.component, self.timeout = component, timeout

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        backend = backend_for(ctx)
        component = self._component(target)
        if backend.paused(component):
            raise StepError(f"{target}: the deployment is paused: a restart would not roll out, nothing was changed",
                            hint="resume it first (`kubectl rollout resume ...`) if the pause is no longer wanted")
        desired, ready = backend.replicas(component)
        state: dict[str, Any] = {"target": str(target), "desired": desired, "ready": ready,
                                 "revision": _current(backend, component)}
        if ctx.check:
            state["validated"] = backend.validate("restart", component)
        return state

    def plan(self, state: dict[str, Any]) -> Plan:
        return Plan(changes=[Change(f"rolling restart of {state['target']} ({state['ready']}/{state['desired']} ready)",
                                    params={"revision": state["revision"]})],
                    data={"validated": state.get("validated")} if state.get("validated") else {})

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        backend = backend_for(ctx)
        component = self._component(target)
        marker = backend.restart(component, summary=f"rolling restart of {target}")
        revision = plan.changes[0].params.get("revision")
        # the undo of a restart that will not finish: back to the revision it replaced, where the restart made a
        # new one (Kubernetes); ECS and the sandbox restart the same revision, so there is nothing to go back to
        undo = (f"invoke app.rollback --env {ctx.env.name} --component {component} --to-revision {revision}"
                if revision is not None and _current(backend, component) != revision else None)
        rollout = self._wait_rollout(ctx, backend, component, f"rollout restart of {target}", self.timeout, undo)
        return Outcome(f"restarted: {rollout.detail}", data={"rollout": rollout.detail, **marker})

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        _verify_ready(ctx, target, self._component(target))


def _current(backend: PlatformBackend, component: str) -> int | None:
    if "rollback" not in backend.capabilities:
        return None
    return next((r.number for r in backend.revisions(component) if r.current), None)


def _verify_ready(ctx: Context, target: EnvTarget, component: str, want: int | None = None) -> None:
    from ..errors import VerificationFailed

    desired, ready = backend_for(ctx).replicas(component)
    if ready < desired or (want is not None and desired != want):
        raise VerificationFailed(f"{target}: {ready}/{desired} ready after the rollout"
                                 + (f" (wanted {want})" if want is not None else ""))


# ---------------------------------------------------------------------------------- scale


class AppScale(_PlatformStep):
    """Scale a component to N replicas (compare-and-set with `expect`), wait until ready; undo = scale back."""

    name = "app.scale"
    capability = "scale"

    def __init__(self, component: str = "backend", replicas: int = 1, expect: int | None = None,
                 timeout: float | None = None, undo_on_failure: bool = True) -> None:
        self.component, self.replicas, self.expect = component, int(replicas), expect
        self.timeout, self.undo_on_failure = timeout, undo_on_failure

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        if not 0 <= self.replicas <= 500:
            raise UsageError(f"app.scale: --replicas {self.replicas} is out of range (0..500)")
        if self.expect is not None and self.expect < 0:
            raise UsageError(f"app.scale: --expect {self.expect} must be >= 0")

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        backend = backend_for(ctx)
        component = self._component(target)
        desired, ready = backend.replicas(component)
        if self.expect is not None and desired != self.expect:
            raise StepError(f"{target}: refused: it has {desired} replicas now, not the {self.expect} you expected; "
                            "someone else may have scaled it", hint="look again (invoke app.status) and re-run with "
                                                                    f"--expect {desired}")
        state = {"target": str(target), "desired": desired, "ready": ready}
        if ctx.check and desired != self.replicas:
            state["validated"] = backend.validate("scale", component, replicas=self.replicas, expect=desired)
        return state

    def plan(self, state: dict[str, Any]) -> Plan:
        desired, ready = state["desired"], state["ready"]
        if desired == self.replicas:
            return Plan.nothing(f"already {desired} replicas ({ready} ready)")
        return Plan(changes=[Change(f"scale {state['target']} from {desired} to {self.replicas} replicas",
                                    before=desired, after=self.replicas, destructive=self.replicas == 0,
                                    params={"from": desired})],
                    data={"validated": state.get("validated")} if state.get("validated") else {})

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        backend = backend_for(ctx)
        component = self._component(target)
        old = int(plan.changes[0].params["from"])
        backend.scale(component, self.replicas, summary=f"scale {target} from {old} to {self.replicas}", expect=old)
        undo_cmd = f"invoke app.scale --env {ctx.env.name} --component {component} --replicas {old}"
        try:
            rollout = self._wait_rollout(ctx, backend, component, f"scale of {target} to {self.replicas}",
                                         self.timeout, None if self.undo_on_failure else undo_cmd)
        except (WaitTimeout, KeyboardInterrupt) as exc:
            if not self.undo_on_failure:
                raise
            interrupted = isinstance(exc, KeyboardInterrupt)
            backend.scale(component, old, expect=self.replicas,
                          summary=f"undo: scale {target} back to {old} ("
                                  + ("interrupted" if interrupted else "not ready in time") + ")")
            if interrupted:
                raise  # Ctrl-C still stops the run; this scale is already undone
            raise StepError(f"{exc}\nundone: {target} scaled back to the recorded {old} replicas",
                            hint="look at the stuck instances (invoke app.status); to keep the new count, "
                                 "re-run with a longer --timeout or --no-undo-on-failure") from None
        return Outcome(f"scaled from {old} to {self.replicas}: {rollout.detail}",
                       receipt=Receipt("app.scale", {"component": component, "replicas": old},
                                       f"scale {target} back to {old} replicas"))

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        _verify_ready(ctx, target, self._component(target), want=self.replicas)


# ---------------------------------------------------------------------------------- resources

_CPU = re.compile(r"^\d+(\.\d+)?m?$")
_MEM = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")


class AppResources(_PlatformStep):
    """Set CPU/memory limits (and requests) of a component's container, with a diff and a rollout wait."""

    name = "app.resources"
    capability = "resources"

    def __init__(self, component: str = "backend", memory: str | None = None, cpu: str | None = None,
                 request_memory: str | None = None, request_cpu: str | None = None,
                 container: str | None = None, timeout: float | None = None) -> None:
        self.component, self.memory, self.cpu = component, memory, cpu
        self.request_memory, self.request_cpu, self.container, self.timeout = request_memory, request_cpu, container, \
            timeout

    def _wanted(self) -> tuple[dict[str, str], dict[str, str]]:
        limits = {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v}
        requests = {k: v for k, v in (("cpu", self.request_cpu), ("memory", self.request_memory)) if v}
        return requests, limits

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        requests, limits = self._wanted()
        if not requests and not limits:
            raise UsageError("app.resources: give --memory and/or --cpu (limits), or --request-memory/--request-cpu")
        for kind, values in (("limit", limits), ("request", requests)):
            for key, value in values.items():
                if not (_CPU if key == "cpu" else _MEM).match(value):
                    raise UsageError(f"app.resources: {key} {kind} {value!r} is not a Kubernetes quantity",
                                     hint="e.g. --cpu 2000m (or 2), --memory 4Gi")
        for key in ("cpu", "memory"):
            if key in requests and key in limits:
                parse = parse_cpu if key == "cpu" else parse_memory
                if (parse(requests[key]) or 0) > (parse(limits[key]) or 0):
                    raise UsageError(f"app.resources: {key} request {requests[key]} exceeds the limit {limits[key]}")

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        backend = backend_for(ctx)
        component = self._component(target)
        container = self.container or backend.container(component)  # type: ignore[attr-defined]
        current = backend.resources(component)
        if container not in current:
            raise StepError(f"{target}: no container {container!r} (has {', '.join(current)})")
        return {"target": str(target), "container": container, "current": current[container]}

    def plan(self, state: dict[str, Any]) -> Plan:
        requests, limits = self._wanted()
        current = state["current"]
        lines, changed = [], False
        for section, wanted in (("requests", requests), ("limits", limits)):
            for key, value in wanted.items():
                now = current.get(section, {}).get(key)
                parse = parse_cpu if key == "cpu" else parse_memory
                if now is not None and parse(now) == parse(value):
                    continue
                changed = True
                lines += [f"-{section}.{key}: {now if now is not None else '(none)'}", f"+{section}.{key}: {value}"]
        if not changed:
            return Plan.nothing(f"{state['target']} container {state['container']} already has these resources")
        return Plan(changes=[Change(
            f"set resources of {state['target']} container {state['container']}",
            before=current, after={"requests": {**current.get("requests", {}), **requests},
                                   "limits": {**current.get("limits", {}), **limits}},
            diff="\n".join(lines) + "\n",
            params={"container": state["container"], "old": current})])

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        backend = backend_for(ctx)
        component = self._component(target)
        params = plan.changes[0].params
        requests, limits = self._wanted()
        backend.set_resources(component, params["container"], requests=requests, limits=limits,
                              summary=plan.changes[0].summary)
        rollout = self._wait_rollout(ctx, backend, component, f"resource change of {target}", self.timeout,
                                     f"invoke app.rollback --env {ctx.env.name} --component {component}")
        old = params["old"]
        return Outcome(f"resources set: {rollout.detail}", receipt=Receipt(
            "app.resources", {"component": component, "container": params["container"],
                              "memory": old.get("limits", {}).get("memory"), "cpu": old.get("limits", {}).get("cpu"),
                              "request_memory": old.get("requests", {}).get("memory"),
                              "request_cpu": old.get("requests", {}).get("cpu")},
            f"restore the previous resources of {target}"))


# ---------------------------------------------------------------------------------- rollback


class AppRollback(_PlatformStep):
    """Roll back to the highest revision below the current one (or --to-revision N); wait and verify."""

    name = "app.rollback"
    idempotent = False  # a second run would go back one more revision
    capability = "rollback"

    def __init__(self, component: str = "backend", to_revision: int | None = None,
                 timeout: float | None = None) -> None:
        self.component, self.to_revision, self.timeout = component, to_revision, timeout

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        backend = backend_for(ctx)
        component = self._component(target)
        if backend.paused(component):
            raise StepError(f"{target}: the deployment is paused: a rollback would not roll out, nothing was changed",
                            hint="resume it first if the pause is no longer wanted")
        revisions = backend.revisions(component)
        current = next((r for r in revisions if r.current), None)
        if current is None:
            raise StepError(f"{target}: cannot tell the current revision (no revision matches the deployment)")
        chosen = choose_revision(revisions, current, self.to_revision, str(target))
        state = {"target": str(target), "current": current, "chosen": chosen,
                 "revisions": [r.number for r in revisions]}
        if ctx.check:
            state["validated"] = backend.validate("rollback", component, revision=chosen)
        return state

    def plan(self, state: dict[str, Any]) -> Plan:
        current: Revision = state["current"]
        chosen: Revision = state["chosen"]
        diff = []
        for name in sorted(set(current.images) | set(chosen.images)):
            before, after = current.images.get(name), chosen.images.get(name)
            if before != after:
                diff += [f"-{name}: {before or '(none)'}", f"+{name}: {after or '(none)'}"]
        if not diff:
            diff = [f" images unchanged ({', '.join(f'{k}: {v}' for k, v in chosen.images.items())})"]
        return Plan(changes=[Change(
            f"roll back {state['target']} from revision {current.number} to {chosen.number}",
            before={"revision": current.number, "images": dict(current.images)},
            after={"revision": chosen.number, "images": dict(chosen.images)},
            diff="\n".join(diff) + "\n",
            params={"revision": chosen.as_dict(), "from": current.number})],
            data={"revisions": state["revisions"], **({"validated": state["validated"]}
                                                       if state.get("validated") else {})})

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        backend = backend_for(ctx)
        component = self._component(target)
        params = plan.changes[0].params
        raw = params["revision"]
        chosen = Revision(number=raw["number"], images=dict(raw.get("images", {})), name=raw.get("name"))
        backend.rollback(component, chosen, summary=plan.changes[0].summary)
        previous = int(params["from"])
        undo = f"invoke app.rollback --env {ctx.env.name} --component {component} --to-revision {previous}"
        rollout = self._wait_rollout(ctx, backend, component, f"rollback of {target} to revision {chosen.number}",
                                     self.timeout, undo)
        return Outcome(f"rolled back to revision {chosen.number}: {rollout.detail}",
                       data={"images": dict(chosen.images)},
                       receipt=Receipt("app.rollback", {"component": component, "to_revision": previous},
                                       f"roll {target} forward again to revision {previous}"))

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        from ..errors import VerificationFailed

        component = self._component(target)
        _verify_ready(ctx, target, component)
        wanted = dict(plan.changes[0].params["revision"].get("images", {}))
        current = next((r for r in backend_for(ctx).revisions(component) if r.current), None)
        if current is None or dict(current.images) != wanted:
            raise VerificationFailed(f"{target}: after the rollback it runs "
                                     f"{dict(current.images) if current else 'nothing known'}, not {wanted}")


def choose_revision(revisions: list[Revision], current: Revision, to_revision: int | None, what: str) -> Revision:
    """--to-revision N, or the highest revision below the current one (numbers need not be contiguous)."""
    if to_revision is not None:
        found = next((r for r in revisions if r.number == to_revision), None)
        if found is None:
            raise StepError(f"{what}: no revision {to_revision}; known: {', '.join(str(r.number) for r in revisions)}",
                            hint="a rolled-back revision is renumbered as the newest one")
        if found.current:
            raise StepError(f"{what}: revision {to_revision} is the current one; nothing to roll back to")
        return found
    older = [r for r in revisions if r.number < current.number]
    if not older:
        raise StepError(f"{what}: no revision older than the current {current.number} to roll back to "
                        f"(known: {', '.join(str(r.number) for r in revisions)})",
                        hint="the platform keeps a limited history (revisionHistoryLimit)")
    return max(older, key=lambda r: r.number)
