"""docker compose backend: services of one project on the inventory's host, over SSH (or locally).

Reads are `docker compose ps/logs` and `docker stats` through `ctx.host(h).read`;
every write (`restart`, `up --scale`) is `ctx.host(h).change` (journaled,
refused in check mode). Compose keeps no revisions, so rollback and resources
are not offered here (the steps refuse them in preflight). Argument lists are
passed as argv (quoted by the connector); the service names and paths are
validated by the inventory model.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import StepError, UsageError
from .base import Instance, LogLine, PlatformBackend, Rollout, parse_cpu, parse_memory

if TYPE_CHECKING:
    from ..inventory import HostTarget

__all__ = ["ComposeBackend"]


class ComposeBackend(PlatformBackend):
    kind: ClassVar[str] = "compose"
    resource_kind: ClassVar[str] = "service"
    capabilities: ClassVar[frozenset[str]] = frozenset({"logs", "restart", "scale", "metrics"})

    def _host(self) -> HostTarget:
        for host in self.ctx.env.hosts():
            if host.name == self.settings.host:
                return host
        raise UsageError(f"platform.host {self.settings.host!r} is not a host of environment {self.ctx.env.name!r}",
                         hint="name one of the hosts under groups: in the inventory")

    def where(self, component: str) -> str:
        return f"{self.settings.host}:{self.settings.project_dir}"

    def _compose(self, *args: str) -> list[str]:
        s = self.settings
        argv = ["docker", "compose", "--project-directory", s.project_dir, "-f", f"{s.project_dir}/{s.compose_file}"]
        if s.project:
            argv += ["-p", s.project]
        return [*argv, *args]

    def _read(self, *args: str) -> str:
        return self.ctx.host(self._host()).read(self._compose(*args)).stdout

    def _change(self, summary: str, *args: str) -> None:
        self.ctx.host(self._host()).change(self._compose(*args), summary)

    # -- reads ----------------------------------------------------------------------

    def _containers(self, component: str) -> list[dict[str, Any]]:
        text = self._read("ps", "--all", "--format", "json", self.resource(component)).strip()
        if not text:
            return []
        try:  # compose >= 2.21 prints one object per line, older versions one JSON array
            rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                    if line.strip()]
        except ValueError:
            raise StepError(f"{self.where(component)}: docker compose ps printed something that is not JSON: "
                            f"{text[:200]!r}", hint="docker compose v2 is needed (docker compose version)") from None
        service = self.resource(component)
        return [r for r in rows if r.get("Service", service) == service]

    def instances(self, component: str) -> list[Instance]:
        rows = self._containers(component)
        stats = self._stats([r["Name"] for r in rows if r.get("State") == "running"])
        inspected = self._inspect([r["Name"] for r in rows])
        now = datetime.now(UTC)
        out = []
        for r in sorted(rows, key=lambda r: r.get("Name", "")):
            state, health = str(r.get("State", "")), str(r.get("Health", ""))
            exit_code = r.get("ExitCode")
            use = stats.get(r.get("Name", ""))
            detail = inspected.get(r.get("Name", ""), {})
            st = detail.get("State") or {}
            last = "OOMKilled" if st.get("OOMKilled") else (f"exited {exit_code}" if state == "exited" else None)
            started = _timestamp(st.get("StartedAt"))
            out.append(Instance(
                name=r.get("Name", "?"), component=component,
                ready=state == "running" and health in ("", "healthy"),
                status=str(r.get("Status") or state), waiting_reason="unhealthy" if health == "unhealthy" else None,
                restarts=int(detail.get("RestartCount") or 0), last_termination_reason=last,
                node=self.settings.host, image=r.get("Image"),
                age_s=(now - started).total_seconds() if started and state == "running" else None,
                cpu_millicores=use[0] if use else None, memory_bytes=use[1] if use else None,
                memory_limit_bytes=use[2] if use else None,
            ))
        return out

    def _inspect(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """`docker inspect`: restart count, OOMKilled, start time (compose ps does not say)."""
        if not names:
            return {}
        result = self.ctx.host(self._host()).read(["docker", "inspect", *names], ok=(0, 1))
        try:
            items = json.loads(result.stdout or "[]")
        except ValueError:
            return {}
        return {str(i.get("Name", "")).lstrip("/"): i for i in items if isinstance(i, dict)}

    def _stats(self, names: list[str]) -> dict[str, tuple[float | None, int | None, int | None]]:
        """`docker stats --no-stream` (the runbook's resource check); empty when the daemon will not say."""
        if not names:
            return {}
        result = self.ctx.host(self._host()).read(["docker", "stats", "--no-stream", "--format", "json", *names],
                                                  ok=(0, 1))
        out: dict[str, tuple[float | None, int | None, int | None]] = {}
        for line in result.stdout.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            used, _, limit = str(row.get("MemUsage", "")).partition("/")
            out[str(row.get("Name"))] = (parse_cpu(row.get("CPUPerc")), parse_memory(used.strip()),
                                         parse_memory(limit.strip()))
        return out

    def logs(self, component: str, *, tail: int = 100, since_s: float | None = None,
             grep: str | None = None) -> list[LogLine]:
        args = ["logs", "--no-color", "--tail", str(int(tail))]
        if since_s:
            args += ["--since", f"{int(since_s)}s"]
        text = self._read(*args, self.resource(component))
        lines = []
        for raw in text.splitlines():
            name, sep, rest = raw.partition("|")
            lines.append(LogLine(name.strip(), rest[1:] if rest.startswith(" ") else rest) if sep
                         else LogLine(self.resource(component), raw))
        return self.filter_lines(lines, grep)

    def replicas(self, component: str) -> tuple[int, int]:
        instances = self.instances(component)
        return len(instances), sum(i.ready for i in instances)

    def rollout_status(self, component: str) -> Rollout:
        instances = self.instances(component)
        desired, ready = len(instances), sum(i.ready for i in instances)
        bad = [f"{i.name}: {i.problem}" for i in instances if i.problem]
        return Rollout(desired == ready, f"{ready}/{desired} containers running and healthy"
                       + (f" ({'; '.join(bad[:3])})" if bad else ""), desired=desired, updated=desired,
                       ready=ready, available=ready)

    # -- writes ----------------------------------------------------------------------

    def scale(self, component: str, replicas: int, *, summary: str, expect: int | None = None) -> None:
        if expect is not None:  # compose has no server-side compare-and-set: re-read right before
            desired, _ = self.replicas(component)
            if desired != expect:
                raise StepError(f"{self.where(component)}: {self.resource(component)} has {desired} containers "
                                f"now, not {expect}; someone else changed it, nothing was done")
        service = self.resource(component)
        self._change(summary, "up", "--detach", "--no-deps", "--no-recreate", "--scale", f"{service}={replicas}",
                     service)

    def restart(self, component: str, *, summary: str) -> dict[str, Any]:
        self._change(summary, "restart", self.resource(component))
        return {}


def _timestamp(value: Any) -> datetime | None:
    """Docker's RFC 3339 with nanoseconds ('2026-11-29T17:01:02.123456789Z') -> aware datetime."""
    if not value or str(value).startswith("0001-"):
        return None
    text = re.sub(r"\.(\d{6})\d+", r".\1", str(value).replace("Z", "+00:00"))  # Python takes microseconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
