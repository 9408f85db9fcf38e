"""The platform interface every backend implements, and `backend_for(ctx)` that picks one.

A backend answers for the inventory's *components* (`backend`, `celery-worker`),
each mapped to a platform resource (a Deployment, a compose service, an ECS
service, a set of local processes). Reads return the plain dataclasses below.
Writes (`scale`, `restart`, `rollback`, `set_resources`) go through exactly one
journaled, check-mode-guarded path per backend:

- kubernetes: `ctx.kubernetes().change(...)` (server-side `dry_run="All"` is allowed in check mode)
- compose:    `ctx.host(target).change([... "docker", "compose", ...], summary)`
- ecs:        `ctx.aws().call("ecs", ..., summary=)`
- local:      the sandbox backend's own `ctx.host(local).change(...)` / process control

Backends hold no run state: `backend_for(ctx)` builds a cheap object bound to
the (step-scoped) context, so every write is journaled under the right step;
expensive clients are cached on the context (`ctx._cached`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import UsageError
from ..step import EnvTarget
from ..units import IEC_UNITS, human_bytes

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import Environment

__all__ = [
    "BACKENDS",
    "Instance",
    "LogLine",
    "PlatformBackend",
    "Revision",
    "Rollout",
    "backend_class",
    "backend_for",
    "format_bytes",
    "parse_cpu",
    "parse_memory",
]

# kind (the inventory's `platform.kind`) -> "module:Class", imported on first use.
BACKENDS: dict[str, str] = {
    "kubernetes": "indostar_ops.platform.kubernetes:KubernetesBackend",
    "compose": "indostar_ops.platform.compose:ComposeBackend",
    "ecs": "indostar_ops.platform.ecs:EcsBackend",
    "local": "indostar_ops.platform.local:LocalPlatform",
}

# What a backend can do beyond reading instances and replicas; steps refuse in preflight (no I/O).
CAPABILITIES = frozenset({"logs", "restart", "scale", "rollback", "resources", "metrics", "pause"})


@dataclass(frozen=True)
class Instance:
    """One running unit of a component: a pod, a compose container, an ECS task, a local process."""

    name: str
    component: str
    ready: bool
    status: str  # Running / Pending / running / exited / RUNNING ...
    restarts: int = 0
    last_termination_reason: str | None = None  # OOMKilled, Error, Completed...
    waiting_reason: str | None = None  # CrashLoopBackOff, ImagePullBackOff...
    node: str | None = None
    age_s: float | None = None
    image: str | None = None
    revision: str | None = None  # pod-template-hash / task definition / release
    cpu_millicores: float | None = None
    cpu_limit_millicores: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None

    @property
    def problem(self) -> str | None:
        """Why this instance is not healthy, in one phrase, or None."""
        if self.waiting_reason:
            return self.waiting_reason
        if not self.ready:
            return self.last_termination_reason or f"not ready ({self.status})"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class LogLine:
    instance: str
    text: str


@dataclass(frozen=True)
class Revision:
    """A version the component can be rolled back to (ReplicaSet revision, task definition, release)."""

    number: int
    images: Mapping[str, str] = field(default_factory=dict)  # container -> image
    name: str | None = None  # ReplicaSet / task definition ARN / release directory
    current: bool = False
    created: str | None = None
    change_cause: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["images"] = dict(self.images)
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Rollout:
    """Where a rollout stands: `done` when every desired replica runs the newest template and is ready."""

    done: bool
    detail: str
    desired: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    failed: bool = False  # will not finish by waiting (Kubernetes ProgressDeadlineExceeded, ECS circuit breaker)


class PlatformBackend:
    """Base class: component naming and helpers; subclasses implement the reads and the writes."""

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    resource_kind: ClassVar[str] = "service"  # "deployment", "compose service", "ecs service", "process group"

    def __init__(self, ctx: Context, settings: Any) -> None:
        self.ctx = ctx
        self.settings = settings

    # -- naming (no I/O) -------------------------------------------------------------

    @property
    def components(self) -> dict[str, str]:
        return dict(getattr(self.settings, "components", {}) or {})

    def resource(self, component: str) -> str:
        """The platform's name for `component`; UsageError (exit 2) for a component the inventory lacks."""
        return resource_name(self.ctx.env, component)

    def target(self, component: str) -> EnvTarget:
        name = self.resource(component)
        return EnvTarget(f"{self.resource_kind}/{name}", kind=self.resource_kind, id=self.where(component))

    def where(self, component: str) -> str:
        """Where the resource lives, for messages: namespace/context, host:project, cluster."""
        return self.resource(component)

    def expected_replicas(self, component: str) -> int | None:
        return (getattr(self.settings, "replicas", {}) or {}).get(component)

    # -- reads ------------------------------------------------------------------------

    def instances(self, component: str) -> list[Instance]:
        raise NotImplementedError

    def logs(self, component: str, *, tail: int = 100, since_s: float | None = None,
             grep: str | None = None) -> list[LogLine]:
        raise UsageError(f"{self.kind} platform: app.logs is not supported")

    def replicas(self, component: str) -> tuple[int, int]:
        """(desired, ready)."""
        raise NotImplementedError

    def rollout_status(self, component: str) -> Rollout:
        desired, ready = self.replicas(component)
        return Rollout(done=ready >= desired, detail=f"{ready}/{desired} ready", desired=desired,
                       updated=ready, ready=ready, available=ready)

    def revisions(self, component: str) -> list[Revision]:
        """Known revisions, ascending by number; exactly one has `current=True` when any exist."""
        raise UsageError(f"{self.kind} platform: rollback is not supported")

    def paused(self, component: str) -> bool:
        return False

    def resources(self, component: str) -> dict[str, dict[str, dict[str, str]]]:
        """container -> {"requests": {...}, "limits": {...}}."""
        raise UsageError(f"{self.kind} platform: app.resources is not supported",
                         hint="resource requests/limits are managed on Kubernetes only")

    # -- writes (each through the backend's one journaled, check-guarded path) --------

    def scale(self, component: str, replicas: int, *, summary: str, expect: int | None = None) -> None:
        """Set the desired count; with `expect`, compare-and-set: refuse (StepError) if it is not `expect` now."""
        raise UsageError(f"{self.kind} platform: scaling is not supported")

    def restart(self, component: str, *, summary: str) -> dict[str, Any]:
        """Start a rolling restart; returns what identifies it (e.g. the restartedAt stamp)."""
        raise UsageError(f"{self.kind} platform: restart is not supported")

    def rollback(self, component: str, revision: Revision, *, summary: str) -> None:
        raise UsageError(f"{self.kind} platform: rollback is not supported")

    def set_resources(self, component: str, container: str, *, requests: Mapping[str, str],
                      limits: Mapping[str, str], summary: str) -> None:
        raise UsageError(f"{self.kind} platform: app.resources is not supported")

    def validate(self, action: str, component: str, **params: Any) -> str | None:
        """Check mode: let the platform validate a write without storing it (Kubernetes dryRun=All).

        Returns what was validated, or None where the platform has no such thing. Raises like the write would
        (RBAC forbidden, not found)."""
        return None

    # -- shared helpers ---------------------------------------------------------------

    @staticmethod
    def filter_lines(lines: Sequence[LogLine], grep: str | None) -> list[LogLine]:
        """`grep -E` semantics on the fetched tail (the runbook's `kubectl logs --tail=100 | grep`)."""
        if not grep:
            return list(lines)
        pattern = compile_grep(grep)
        return [line for line in lines if pattern.search(line.text)]


def compile_grep(grep: str) -> re.Pattern[str]:
    try:
        return re.compile(grep)
    except re.error as exc:
        raise UsageError(f"--grep {grep!r} is not a valid regular expression: {exc}",
                         hint="e.g. --grep 'webhook|ERROR'") from None


def resource_name(env: Environment, component: str) -> str:
    settings = env.platform
    if settings is None:
        raise UsageError(f"environment {env.name!r} has no 'platform' section",
                         hint=f"add 'platform:' (kind: kubernetes|compose|ecs|local) to inventory/{env.name}.yaml")
    components = dict(getattr(settings, "components", {}) or {})
    if component not in components:
        raise UsageError(
            f"environment {env.name!r}: unknown component {component!r}",
            hint=f"known components: {', '.join(components) or '(none)'} (platform.components in the inventory)",
        )
    return components[component]


def backend_class(env: Environment) -> type[PlatformBackend]:
    """The backend class for `env.platform.kind`, imported now (no I/O, no client libraries)."""
    settings = env.platform
    if settings is None:
        raise UsageError(f"environment {env.name!r} has no 'platform' section",
                         hint=f"add 'platform:' (kind: kubernetes|compose|ecs|local) to inventory/{env.name}.yaml")
    kind = str(settings.kind)
    try:
        spec = BACKENDS[kind]
    except KeyError:
        raise UsageError(f"environment {env.name!r}: unknown platform kind {kind!r}",
                         hint=f"known kinds: {', '.join(sorted(BACKENDS))}") from None
    module, _, attr = spec.partition(":")
    cls: type[PlatformBackend] = getattr(importlib.import_module(module), attr)
    return cls


def backend_for(ctx: Context) -> PlatformBackend:
    """A backend bound to this (step-scoped) context; clients are cached on the context."""
    return backend_class(ctx.env)(ctx, ctx.env.platform)


# -- quantities (Kubernetes notation; docker stats prints the same binary suffixes) ----------

_MEM_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "B": 1, "kB": 10**3,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_memory(value: str | None) -> int | None:
    """'512Mi' -> 536870912, '1.5GiB' -> ..., '' / None / unknown suffix -> None."""
    if not value:
        return None
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _MEM_SUFFIX:
        return None
    return int(float(match.group(1)) * _MEM_SUFFIX[match.group(2)])


def parse_cpu(value: str | None) -> float | None:
    """CPU in millicores: '250m' -> 250, '2' -> 2000, '1500000n' -> 1.5, '12.5%' (docker stats) -> 125."""
    if not value:
        return None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) * 10
        if text.endswith("n"):
            return float(text[:-1]) / 1e6
        if text.endswith("u"):
            return float(text[:-1]) / 1e3
        if text.endswith("m"):
            return float(text[:-1])
        return float(text) * 1000
    except ValueError:
        return None


def format_bytes(value: int | None) -> str:
    """Memory as Kubernetes and docker stats write it ('1.5GiB')."""
    return human_bytes(value, units=IEC_UNITS)
