"""Runbook "Out of Disk Space": `docker system df`, and pruning only what was asked for.

The runbook's `docker system prune` with `-a` and `--volumes` deletes every unused image and
every unused volume (i.e. data) in one go. Here each class is pruned with its own
command, only when asked for: by default dangling images, stopped containers and
build cache; volumes only with an explicit flag (and `--yes` on production tiers);
optionally only when the Docker filesystem is over the disk warning threshold.
Space reclaimed is read from Docker's own "Total reclaimed space" lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfirmationRequired, StepError, UsageError
from ..facts import filesystems
from ..step import Change, Outcome, Plan, Step
from ..units import human_bytes

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import HostTarget

__all__ = ["CLASSES", "DockerDiskUsage", "DockerPrune", "human_size", "parse_size", "parse_system_df"]

# prune class -> (`docker system df` type, prune argv after `docker`, what it removes)
CLASSES: dict[str, tuple[str, list[str], str]] = {
    "containers": ("Containers", ["container", "prune", "--force"], "stopped containers"),
    "images": ("Images", ["image", "prune", "--force"], "dangling images"),
    "build-cache": ("Build Cache", ["builder", "prune", "--force"], "build cache"),
    "volumes": ("Local Volumes", ["volume", "prune", "--force"], "unused anonymous volumes"),
}
DEFAULT_CLASSES = ("containers", "images", "build-cache")

_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kKMGTP]?i?B)?\s*$")
_FACTORS = {"": 1, "B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "PB": 1000**5,
            "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_RECLAIMED = re.compile(r"^Total reclaimed space:\s*(\S+)\s*$", re.MULTILINE)
_NO_ENGINE = ("Cannot connect to the Docker daemon", "Is the docker daemon running", "error during connect")


def human_size(size: float) -> str:
    """Bytes -> docker's own notation (go-units HumanSize: decimal units, 4 significant digits)."""
    return human_bytes(size, decimal=True)


def parse_size(text: str) -> int:
    """Docker's human sizes ('3.12GB', '409.6MB', '0B', '1.2GB (58%)') -> bytes (decimal units, as docker)."""
    match = _SIZE.match(text.split("(")[0])
    if not match:
        raise ValueError(f"not a docker size: {text!r}")
    return int(float(match.group(1)) * _FACTORS[match.group(2) or ""])


@dataclass(frozen=True)
class UsageRow:
    type: str
    total: int
    active: int
    size_bytes: int
    reclaimable_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "total": self.total, "active": self.active, "size_bytes": self.size_bytes,
                "reclaimable_bytes": self.reclaimable_bytes}


def parse_system_df(output: str) -> dict[str, UsageRow]:
    """`docker system df --format '{{json .}}'` (one JSON object per line) -> rows by type."""
    rows: dict[str, UsageRow] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        rows[item["Type"]] = UsageRow(item["Type"], int(item.get("TotalCount") or 0), int(item.get("Active") or 0),
                                      parse_size(item.get("Size") or "0B"), parse_size(item.get("Reclaimable") or "0B"))
    return rows


def docker_read(ctx: Context, target: HostTarget, args: Sequence[str]) -> str:
    """Run a read-only docker command; 'not installed' and 'no engine' become clear step errors."""
    command = [*target.settings.docker.command, *args]
    result = ctx.host(target).read(command, ok=range(256))
    if result.exit_code == 0:
        return result.stdout
    _raise_docker_error(target, result.exit_code, result.output)
    raise AssertionError("unreachable")


def _raise_docker_error(target: HostTarget, code: int, output: str) -> None:
    if code in (126, 127) or "command not found" in output or "No such file or directory" in output:
        raise StepError(f"{target.name}: docker is not installed (the docker CLI was not found on the host)",
                        hint="install Docker, or set docker.enabled: false for this host in the inventory")
    if any(marker in output for marker in _NO_ENGINE):
        raise StepError(f"{target.name}: docker is installed but no engine is reachable: {output.strip()}",
                        hint=f"start the daemon on {target.name} (systemctl start docker) and retry")
    raise StepError(f"{target.name}: docker exited {code}: {output.strip()}")


@dataclass
class DockerState:
    host: HostTarget
    enabled: bool
    rows: dict[str, UsageRow] = field(default_factory=dict)
    disk_pct: int | None = None
    warning_pct: float | None = None


def _usage_data(rows: dict[str, UsageRow]) -> dict[str, Any]:
    return {"usage": [row.as_dict() for row in rows.values()],
            "reclaimable_bytes": sum(row.reclaimable_bytes for row in rows.values())}


class DockerDiskUsage(Step[DockerState]):
    """Docker disk use per type (images, containers, volumes, build cache) and what is reclaimable."""

    name = "docker.df"
    read_only = True

    def __init__(self, groups: Sequence[str] | None = None) -> None:
        self.groups = groups

    def check(self, ctx: Context, target: HostTarget) -> DockerState:
        if not target.settings.docker.enabled:
            return DockerState(target, enabled=False)
        rows = parse_system_df(docker_read(ctx, target, ["system", "df", "--format", "{{json .}}"]))
        return DockerState(target, enabled=True, rows=rows)

    def plan(self, state: DockerState) -> Plan:
        if not state.enabled:
            return Plan.nothing("docker is disabled for this host in the inventory (docker.enabled: false)")
        parts = [f"{r.type.lower()} {human_size(r.size_bytes)} ({human_size(r.reclaimable_bytes)} reclaimable)"
                 for r in state.rows.values()]
        return Plan.nothing("; ".join(parts) or "docker reports nothing", data=_usage_data(state.rows))


class DockerPrune(Step[DockerState]):
    """Prune only the Docker object classes asked for and report the space reclaimed."""

    name = "docker.prune"
    destructive = True
    idempotent = False  # new dangling images/containers can appear at any time; apply reports what it freed

    def __init__(self, classes: Sequence[str] = DEFAULT_CLASSES, *, all_images: bool = False,
                 until: str | None = None, only_over_warning: bool = False,
                 groups: Sequence[str] | None = None) -> None:
        unknown = [c for c in classes if c not in CLASSES]
        if unknown or not classes:
            raise UsageError(f"unknown docker prune class(es) {unknown or classes}",
                             hint=f"choose from {', '.join(CLASSES)}")
        if until is not None and not re.fullmatch(r"\d+[smh]", until):
            raise UsageError(f"invalid --until {until!r}", hint="a Go duration such as 24h or 90m")
        self.classes = [c for c in CLASSES if c in classes]
        self.all_images = all_images
        self.until = until
        self.only_over_warning = only_over_warning
        self.groups = groups

    def preflight(self, ctx: Context) -> None:
        """Volumes hold data: on a production tier they need --yes, even at a terminal (a prompt is not enough)."""
        super().preflight(ctx)
        if "volumes" in self.classes and ctx.env.is_production and not ctx.assume_yes and not ctx.check:
            raise ConfirmationRequired(
                f"pruning volumes deletes data; on production-tier {ctx.env.name!r} it needs --yes, even at a "
                "terminal; nothing was run",
                hint=f"preview with --check, then: invoke docker.prune --env {ctx.env.name} --volumes --yes",
            )

    def check(self, ctx: Context, target: HostTarget) -> DockerState:
        docker = target.settings.docker
        if not docker.enabled:
            return DockerState(target, enabled=False)
        rows = parse_system_df(docker_read(ctx, target, ["system", "df", "--format", "{{json .}}"]))
        state = DockerState(target, enabled=True, rows=rows)
        if self.only_over_warning:
            state.disk_pct = filesystems(ctx.host(target), [docker.data_root])[0].used_pct
            state.warning_pct = ctx.env.thresholds.disk_pct.warning
        return state

    def command(self, klass: str) -> list[str]:
        argv = list(CLASSES[klass][1])
        if klass == "images" and self.all_images:
            argv.insert(2, "--all")
        if self.until and klass in ("containers", "images", "build-cache"):
            argv += ["--filter", f"until={self.until}"]
        return argv

    def plan(self, state: DockerState) -> Plan:
        if not state.enabled:
            return Plan.nothing("docker is disabled for this host in the inventory (docker.enabled: false)")
        data = _usage_data(state.rows)
        if state.disk_pct is not None and state.warning_pct is not None:
            data.update(disk_pct=state.disk_pct, warning_pct=state.warning_pct)
            if state.disk_pct <= state.warning_pct:
                return Plan.nothing(f"{state.host.settings.docker.data_root} is {state.disk_pct}% full, not over the "
                                    f"{state.warning_pct:g}% warning threshold: nothing pruned", data=data)
        changes, skipped = [], []
        for klass in self.classes:
            row = state.rows.get(CLASSES[klass][0])
            reclaimable = row.reclaimable_bytes if row else 0
            what = "all unused images" if klass == "images" and self.all_images else CLASSES[klass][2]
            if reclaimable == 0:
                skipped.append(what)
                continue
            changes.append(Change(f"prune {what} (docker reports {human_size(reclaimable)} reclaimable)",
                                  before=reclaimable, after=self.command(klass), destructive=klass == "volumes"))
        if skipped:
            data["nothing_reclaimable"] = skipped
        if not changes:
            return Plan.nothing(f"nothing reclaimable in {', '.join(skipped)}", data=data)
        return Plan(changes, data=data)

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> Outcome:
        if any(c.destructive for c in plan.changes) and ctx.env.is_production and not ctx.assume_yes:
            raise StepError(f"{target.name}: pruning volumes on a production-tier environment needs --yes",
                            hint="re-run with --volumes --yes after checking the volume list")
        host = ctx.host(target)
        reclaimed: dict[str, int] = {}
        for change in plan.changes:
            argv = [*target.settings.docker.command, *change.after]
            result = host.change(argv, change.summary, ok=range(256))
            if result.exit_code != 0:
                _raise_docker_error(target, result.exit_code, result.output)
            match = _RECLAIMED.search(result.stdout)
            reclaimed[" ".join(change.after[:2])] = parse_size(match.group(1)) if match else 0
        total = sum(reclaimed.values())
        reason = f"reclaimed {human_size(total)} (" + ", ".join(
            f"{what} {human_size(size)}" for what, size in reclaimed.items()) + ")"
        return Outcome(reason, {"reclaimed": reclaimed, "reclaimed_bytes": total,
                                "reclaimed_human": human_size(total)})
