"""Runbook "Out of Disk Space", immediate: clean old logs and temp files, without the runbook's foot-guns.

The runbook says `find /var/log -name "*.log" -mtime +7 -delete` (which deletes
*active* logs of every service) and an `rm -rf` of everything under /tmp (which breaks running
programs). Here:

* only the inventory's directories are searched (`log_dirs`, `tmp_dirs`), each one
  checked to be a real, specific directory (never `/`, `/tmp`, `/var/log`...);
* `find -H ROOT -xdev -type f`: symlinks inside a root are never followed and
  other filesystems mounted below it are not entered;
* logs: only *rotated* files go (`app.log.1`, `app.log.2.gz`, `app.log-20240501`,
  `app.log.2024-05-01`...); a name matching an active pattern (`*.log`) never does;
* age comes from the host's own clock and file mtimes, to the second;
* check mode previews the exact list and total size; apply deletes exactly that
  list, re-checking each file's age on the host so a file written since the plan
  is spared.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..connectors.shell import sh
from ..errors import StepError, StepValueError, UsageError
from ..step import Change, Outcome, Plan, Step
from .disk_report import human_bytes

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import HostTarget

__all__ = ["CleanupRotatedLogs", "CleanupTempFiles", "is_rotated_log", "parse_age"]

_UNITS = {"d": 86400, "h": 3600, "m": 60}
_AGE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")

# Directories that are never a cleanup root, however the inventory is written.
FORBIDDEN_ROOTS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/cache", "/var/lib", "/var/log",
    "/var/spool", "/var/tmp", "/var/www",
})

_COMPRESSED = re.compile(r"\.(gz|bz2|xz|zst|lz4|Z)$")
_ROTATION = re.compile(
    r"(\.\d+"                                                  # app.log.1
    r"|[.-]\d{8}(\d{2}(\d{2}(\d{2})?)?)?"                      # app.log-20240501, -2024050113
    r"|[.-]\d{4}-\d{2}-\d{2}([_T.-]\d{2}([-:]?\d{2}){0,2})?"   # app.log.2024-05-01, _13-00
    r"|-\d{10})$",                                             # app.log-1714521600 (dateformat %s)
)

# $1 prefilter in minutes, then roots. stdout: "now\t<epoch>", then per root either
# "root\t<i>" followed by "<size>\t<mtime>\t<path>" records, or "missing\t<i>"; all NUL-terminated.
_LIST = r"""
m=$1; shift; i=0
printf 'now\t%s\0' "$(date +%s)"
for r do
  i=$((i + 1))
  if [ ! -d "$r" ]; then printf 'missing\t%s\0' "$i"; continue; fi
  printf 'root\t%s\0' "$i"
  find -H "$r" -xdev -type f -mmin "+$m" -printf '%s\t%T@\t%p\0'
done
"""

# $1 cutoff (epoch s); stdin: NUL-separated paths. Deletes each path that is still a regular
# file (not a symlink) last modified at or before the cutoff; prints "<size>\t<path>" per deletion.
_DELETE = r"""
xargs -0 -r sh -c 'c=$1; shift; find -P "$@" -maxdepth 0 -type f ! -newermt "@$c" -printf "%s\t%p\0" -delete' \
  sh "$1"
"""


def parse_age(text: str) -> int:
    """'7d' / '12h' / '90m' -> seconds (at least one minute)."""
    match = _AGE.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"invalid age {text!r}", hint="use a positive number with d, h or m, e.g. --older-than 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def describe_age(seconds: int) -> str:
    for unit, size in _UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def is_rotated_log(name: str, active_patterns: Sequence[str]) -> bool:
    """True for a rotated copy of an active log (`app.log.1`, `app.log.2.gz`, `app.log-20240501`...)."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in active_patterns):
        return False
    base = _COMPRESSED.sub("", name)
    compressed = base != name
    stripped = _ROTATION.sub("", base)
    if stripped == base and not compressed:
        return False
    return any(fnmatch.fnmatchcase(stripped, pattern) for pattern in active_patterns)


def check_root(host: str, root: str, what: str) -> str:
    """A normalised absolute directory that is specific enough to clean; anything else is refused."""
    normal = posixpath.normpath(root) if root else ""
    if not normal.startswith("/") or normal.startswith("//") or any(c in root for c in "\0\n"):
        raise StepValueError(f"{host}: {what} {root!r} is not an absolute path", hint=f"fix {what} in the inventory")
    if normal in FORBIDDEN_ROOTS:
        raise StepValueError(
            f"{host}: refusing to clean {normal!r} wholesale ({what}); configure the application's own "
            "directory instead (e.g. /var/log/indostar)",
            hint=f"fix {what} in the inventory",
        )
    return normal


@dataclass(frozen=True)
class Candidate:
    path: str
    size: int
    mtime: float

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.size, "age_days": round((now - self.mtime) / 86400, 2)}


@dataclass
class CleanupState:
    host: HostTarget
    roots: list[str]
    older_than: int
    now: float
    eligible: list[Candidate] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def cutoff(self) -> int:
        return int(self.now - self.older_than)


class _AgedFileCleanup(Step[CleanupState]):
    """Delete files older than an age under configured roots; subclasses choose roots and which names go."""

    destructive = True
    roots_setting: ClassVar[str]
    noun: ClassVar[str]
    preview_lines: ClassVar[int] = 200

    def __init__(self, older_than: int | str, groups: Sequence[str] | None = None) -> None:
        """`older_than`: seconds, or a duration such as '7d' (as playbooks write it)."""
        if isinstance(older_than, str):
            older_than = parse_age(older_than)
        if older_than < 60:
            raise StepValueError(f"{self.name}: the age must be at least one minute")
        self.older_than = older_than
        self.groups = groups

    def eligible_name(self, target: HostTarget, name: str) -> str | None:
        """None if a file of this name may go, else why it is kept."""
        raise NotImplementedError

    def check(self, ctx: Context, target: HostTarget) -> CleanupState:
        configured = getattr(target.settings, self.roots_setting)
        roots = list(dict.fromkeys(check_root(target.name, r, self.roots_setting) for r in configured))
        prefilter = max(0, self.older_than // 60 - 1)
        result = ctx.host(target).read(sh(_LIST, str(prefilter), *roots), ok=(0, 1))
        records = result.stdout.split("\0")
        if not records or not records[0].startswith("now\t"):
            raise StepError(f"{target.name}: could not list {', '.join(roots)}: {result.output}")
        state = CleanupState(target, roots, self.older_than, float(records[0].split("\t")[1]))
        root, seen = "", set[str]()
        for record in records[1:]:
            parts = record.split("\t", 2)
            if len(parts) == 2 and parts[0] in {"root", "missing"}:
                root = roots[int(parts[1]) - 1]
                if parts[0] == "missing":
                    state.missing.append(root)
                continue
            if len(parts) != 3 or parts[2] in seen:  # nested roots list a file twice
                continue
            seen.add(parts[2])
            candidate = Candidate(parts[2], int(parts[0]), float(parts[1]))
            why = self._keep_reason(target, root, candidate, state)
            if why is None:
                state.eligible.append(candidate)
            else:
                state.kept[why] = state.kept.get(why, 0) + 1
        state.warnings = [line for line in result.stderr.splitlines() if line][:20]
        return state

    def _keep_reason(self, target: HostTarget, root: str, c: Candidate, state: CleanupState) -> str | None:
        if not c.path.startswith(root.rstrip("/") + "/") or "/../" in c.path or "\ufffd" in c.path:
            return "unexpected path"
        if c.mtime > state.cutoff:
            return "too recent"
        return self.eligible_name(target, posixpath.basename(c.path))

    def plan(self, state: CleanupState) -> Plan:
        age = describe_age(state.older_than)
        where = ", ".join(state.roots) or "(no directories configured)"
        data: dict[str, Any] = {"roots": state.roots, "older_than": age, "kept_despite_age": state.kept}
        if state.missing:
            data["missing"] = state.missing
        if state.warnings:
            data["warnings"] = state.warnings
        if not state.eligible:
            return Plan.nothing(f"no {self.noun} older than {age} under {where}", data=data)
        files = sorted(state.eligible, key=lambda c: c.path)
        total = sum(c.size for c in files)
        lines = [f"-{c.path}  ({human_bytes(c.size)}, {(state.now - c.mtime) / 86400:.1f} days old)"
                 for c in files[: self.preview_lines]]
        if len(files) > self.preview_lines:
            lines.append(f"-... and {len(files) - self.preview_lines} more (see --json)")
        data.update(files=[c.as_dict(state.now) for c in files], total_bytes=total, cutoff=state.cutoff)
        summary = f"delete {len(files)} {self.noun} older than {age} ({human_bytes(total)}) under {where}"
        change = Change(summary, before=[c.path for c in files], after=None, diff="\n".join(lines) + "\n",
                        destructive=True)
        return Plan([change], data=data)

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> Outcome:
        paths: list[str] = list(plan.changes[0].before)
        roots = [r.rstrip("/") + "/" for r in plan.data["roots"]]
        if not all(p.startswith(tuple(roots)) for p in paths):  # the plan is data: re-check before acting
            raise StepError(f"{target.name}: refusing to delete a path outside {', '.join(roots)}")
        result = ctx.host(target).change(
            sh(_DELETE, str(plan.data["cutoff"])), plan.changes[0].summary,
            stdin="".join(p + "\0" for p in paths), ok=(0, 123),
        )
        deleted = {}
        for record in result.stdout.split("\0"):
            size, _, path = record.partition("\t")
            if size.isdigit() and path:
                deleted[path] = int(size)
        spared = [p for p in paths if p not in deleted]
        reason = f"deleted {len(deleted)} {self.noun} ({human_bytes(sum(deleted.values()))})" + (
            f"; spared {len(spared)} changed or gone since the plan" if spared else "")
        return Outcome(reason, {"deleted": len(deleted), "deleted_bytes": sum(deleted.values()), "spared": spared})


class CleanupRotatedLogs(_AgedFileCleanup):
    """Delete rotated logs older than an age under the inventory's log directories (never active logs)."""

    name = "logs.cleanup"
    roots_setting = "log_dirs"
    noun = "rotated log(s)"

    def eligible_name(self, target: HostTarget, name: str) -> str | None:
        patterns = target.settings.log_patterns
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return "active log"
        return None if is_rotated_log(name, patterns) else "not a rotated log"


class CleanupTempFiles(_AgedFileCleanup):
    """Delete files older than an age under the inventory's temp directories (files only, never the dirs)."""

    name = "tmp.cleanup"
    roots_setting = "tmp_dirs"
    noun = "temp file(s)"

    def eligible_name(self, target: HostTarget, name: str) -> str | None:
        return None
