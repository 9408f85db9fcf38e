"""Runbook "Out of Disk Space", diagnosis: `df -h`, then `du | sort` where it is getting full.

Read-only. Severity comes from the inventory's disk thresholds (runbook: warning
above 80 %, critical above 90 %); the largest directories are listed only when
a filesystem is over warning, and `du` runs under a time budget so a huge tree
cannot hang the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..facts import Filesystem
from ..facts import filesystems as read_filesystems
from ..severity import Severity
from ..step import Plan, Step

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import HostTarget, Threshold

__all__ = ["DiskCheck", "parse_du"]

DU_BUDGET_S = 20


@dataclass
class DiskState:
    host: HostTarget
    threshold: Threshold
    filesystems: list[Filesystem]
    largest: list[dict[str, Any]] = field(default_factory=list)
    du_incomplete: bool = False


def parse_du(output: str, limit: int = 10) -> list[dict[str, Any]]:
    """`du -k` lines (size<TAB>path), largest first."""
    sized: list[tuple[int, str]] = []
    for line in output.splitlines():
        size, _, path = line.partition("\t")
        if size.isdigit() and path:
            sized.append((int(size), path))
    sized.sort(reverse=True)
    return [{"path": path, "size_kb": size} for size, path in sized[:limit]]


class DiskCheck(Step[DiskState]):
    """Check disk use on every host against the warning/critical thresholds."""

    name = "disk.check"
    read_only = True

    def __init__(self, groups: list[str] | None = None) -> None:
        self.groups = groups

    def check(self, ctx: Context, target: HostTarget) -> DiskState:
        host = ctx.host(target)
        paths = target.settings.disk_paths
        state = DiskState(target, ctx.env.thresholds.disk_pct, read_filesystems(host, paths))
        if any(ctx.env.thresholds.disk_pct.evaluate(fs.used_pct) != Severity.OK for fs in state.filesystems):
            roots = target.settings.disk_report_roots
            du = host.read(["timeout", str(DU_BUDGET_S), "du", "-x", "-k", "-D", "-d", "1", "--", *roots],
                           ok=(0, 1, 124))
            state.largest = parse_du(du.stdout)
            state.du_incomplete = du.exit_code == 124
        return state

    def plan(self, state: DiskState) -> Plan:
        levels = [state.threshold.evaluate(fs.used_pct) for fs in state.filesystems]
        severity = Severity.worst(levels)
        parts = [f"{fs.mount} {fs.used_pct}% ({levels[i].name})" for i, fs in enumerate(state.filesystems)]
        data: dict[str, Any] = {
            "filesystems": [fs.__dict__ for fs in state.filesystems],
            "warning_pct": state.threshold.warning,
            "critical_pct": state.threshold.critical,
        }
        if state.largest:
            data["largest"] = state.largest
            if state.du_incomplete:
                data["largest_incomplete"] = f"du stopped after {DU_BUDGET_S}s"
        return Plan.nothing("; ".join(parts) or "no filesystems configured", severity=severity, data=data)
