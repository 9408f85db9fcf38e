"""Runbook "Out of Disk Space", diagnosis: `du -sh /* | sort -h`, done so it cannot hang or mislead.

Read-only. For each configured root: the largest directories (`du -x`, a few
levels deep) and the largest files (`find -xdev`, sorted on the host so only
the top N cross the wire). The whole report on one host shares one time
budget: a command that runs out of it is killed and its partial result is
reported as incomplete instead of the run hanging on a huge tree. Every root is resolved on the
host first (`realpath -e`, same round trip): du/find measure the resolved directory, and the report
names both paths when they differ.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..connectors.shell import sh
from ..errors import StepValueError, UsageError
from ..step import Plan, Step
from ..units import human_bytes

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import HostTarget

__all__ = ["DiskReport"]

# $1 budget (ms), $2 du depth, $3 top N, then the roots. One deadline for the whole report; each
# command gets an equal share of the time still left, so a slow du cannot starve the finds after it.
# stdout: NUL-separated records: "R\t<index>" starts a root, du lines are "<KB>\t<path>",
# "F\t<index>" starts the sorted file list ("<bytes>\t<path>"), "S\t<index>\t<du rc>" ends
# a root; "M\t<index>" marks a missing root, "N\t<index>" one that is not a directory, and
# "P\t<index>\t<path>" gives a root's resolved path. find's exit code goes to stderr ("find-rc I RC").
_REPORT = r"""
b=$1; depth=$2; n=$3; shift 3
ms() { echo $(( $(date +%s%N) / 1000000 )); }
share() { s=$(( (end - $(ms)) / todo )); [ "$s" -gt 0 ] || s=0; printf '%d.%03d' $((s / 1000)) $((s % 1000)); }
end=$(( $(ms) + b )); todo=$(( $# * 2 )); i=0
for r do
  i=$((i + 1))
  if ! r=$(realpath -e -- "$r" 2>/dev/null); then printf 'M\t%s\0' "$i"; todo=$((todo - 2)); continue; fi
  printf 'P\t%s\t%s\0' "$i" "$r"
  if [ ! -d "$r" ]; then printf 'N\t%s\0' "$i"; todo=$((todo - 2)); continue; fi
  printf 'R\t%s\0' "$i"
  t=$(share); todo=$((todo - 1))
  if [ "$t" != 0.000 ]; then timeout -s KILL "$t" du -0 -x -k -d "$depth" -- "$r"; rc=$?; else rc=124; fi
  [ "$rc" -eq 137 ] && rc=124
  printf 'F\t%s\0' "$i"
  t=$(share); todo=$((todo - 1))
  if [ "$t" != 0.000 ]; then
    { timeout -s KILL "$t" find "$r" -xdev -type f -printf '%s\t%p\0'; echo "find-rc $i $?" >&2; } \
      | sort -z -rn | head -z -n "$n"
  else
    echo "find-rc $i 124" >&2
  fi
  printf 'S\t%s\t%s\0' "$i" "$rc"
done
"""

_FIND_RC = re.compile(r"^find-rc (\d+) (\d+)$", re.MULTILINE)


@dataclass
class RootReport:
    root: str
    resolved: str | None = None  # the root's real path on the host, when it differs
    missing: bool = False
    not_dir: bool = False
    total_bytes: int | None = None
    dirs: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"root": self.root}
        if self.resolved:
            out["resolved"] = self.resolved
        if self.missing or self.not_dir:
            out["missing" if self.missing else "not_a_directory"] = True
            return out
        out.update(total_bytes=self.total_bytes, largest_dirs=self.dirs, largest_files=self.files)
        if self.incomplete:
            out["incomplete"] = self.incomplete
        return out


@dataclass
class DiskReportState:
    host: HostTarget
    roots: list[RootReport]
    budget_s: float
    warnings: list[str] = field(default_factory=list)


def parse_report(stdout: str, stderr: str, roots: Sequence[str], top: int) -> list[RootReport]:
    """Turn the NUL-separated records of `_REPORT` into one RootReport per root."""
    reports = [RootReport(root) for root in roots]
    find_rc = {int(i): int(rc) for i, rc in _FIND_RC.findall(stderr)}
    current: RootReport | None = None
    mode = ""
    for record in stdout.split("\0"):
        tag, _, rest = record.partition("\t")
        if tag in {"R", "F", "S", "M", "N", "P"} and rest.split("\t")[0].isdigit():
            index = int(rest.split("\t")[0]) - 1
            current = reports[index]
            if tag == "M":
                current.missing = True
            elif tag == "N":
                current.not_dir = True
            elif tag == "P":
                real = rest.split("\t", 1)[1]
                current.resolved = real if real != current.root else None
                continue
            elif tag == "S":
                if rest.split("\t")[1] == "124":
                    current.incomplete.append("du")
                if find_rc.get(index + 1) in (124, 137, None):
                    current.incomplete.append("find")
            mode = tag
            continue
        if current is None or not tag.isdigit() or not rest:
            continue
        if mode == "R":
            size_kb = int(tag)
            if rest.rstrip("/") == (current.resolved or current.root).rstrip("/"):
                current.total_bytes = size_kb * 1024
            else:
                current.dirs.append({"path": rest, "bytes": size_kb * 1024})
        elif mode == "F":
            current.files.append({"path": rest, "bytes": int(tag)})
    for report in reports:
        report.dirs = sorted(report.dirs, key=lambda d: d["bytes"], reverse=True)[:top]
        report.files = sorted(report.files, key=lambda f: f["bytes"], reverse=True)[:top]
    return reports


class DiskReport(Step[DiskReportState]):
    """Largest directories and files under the configured roots (du | sort), within a time budget."""

    name = "disk.report"
    read_only = True

    def __init__(self, groups: Sequence[str] | None = None, *, roots: Sequence[str] | None = None,
                 top: int = 10, depth: int = 2, budget_s: float = 20) -> None:
        if top < 1 or depth < 1 or budget_s <= 0:
            raise StepValueError("disk.report needs --top >= 1, --depth >= 1 and a positive --budget")
        self.groups = groups
        self.roots = list(roots) if roots else None
        self.top = top
        self.depth = depth
        self.budget_s = budget_s

    def preflight(self, ctx: Context) -> None:
        """--roots (a flag, not typed by the inventory): absolute, no control characters; exit 2 otherwise."""
        super().preflight(ctx)
        for root in self.roots or ():
            if any(ord(c) < 32 or ord(c) == 127 for c in root):
                raise UsageError(f"disk.report root {root!r} contains a control character", hint="fix --roots")
            if not root.startswith("/"):
                raise UsageError(f"disk.report root {root!r} is not an absolute path",
                                 hint="--roots takes absolute directories, e.g. --roots /var/log,/srv")

    def check(self, ctx: Context, target: HostTarget) -> DiskReportState:
        roots = self.roots or target.settings.disk_report_roots
        budget = self.budget_s
        result = ctx.host(target).read(
            sh(_REPORT, str(int(budget * 1000)), str(self.depth), str(self.top), *roots),
            ok=(0, 1), timeout=budget + 30,
        )
        warnings = [line for line in result.stderr.splitlines() if line and not _FIND_RC.match(line)]
        return DiskReportState(target, parse_report(result.stdout, result.stderr, roots, self.top), budget,
                               warnings[:20])

    def plan(self, state: DiskReportState) -> Plan:
        lines = []
        for report in state.roots:
            name = report.root + (f" (-> {report.resolved})" if report.resolved else "")
            if report.missing or report.not_dir:
                lines.append(f"{name}: {'does not exist' if report.missing else 'is not a directory'}")
                continue
            total = human_bytes(report.total_bytes) if report.total_bytes is not None else "?"
            note = f" (incomplete: {'/'.join(report.incomplete)} stopped by the {state.budget_s:g}s budget)" \
                if report.incomplete else ""
            lines.append(f"{name}: {total}{note}")
            lines += [f"  dir  {human_bytes(d['bytes']):>7}  {d['path']}" for d in report.dirs[:5]]
            lines += [f"  file {human_bytes(f['bytes']):>7}  {f['path']}" for f in report.files[:5]]
        data: dict[str, Any] = {"roots": [r.as_dict() for r in state.roots], "budget_s": state.budget_s}
        if state.warnings:
            data["warnings"] = state.warnings
        return Plan.nothing("\n".join(lines) or "no roots configured", data=data)
