"""Runbook "Out of Disk Space", immediate: clean old logs and temp files, without the runbook's foot-guns.

The runbook says `find /var/log -name "*.log" -mtime +7 -delete` (which deletes
*active* logs of every service) and an `rm -rf` of everything under /tmp (which breaks running
programs). Here:

* only the inventory's directories are searched (`log_dirs`, `tmp_dirs`), each one
  resolved ON THE HOST (`realpath -e`, in the same round trip as the listing) and refused,
  with both paths named, when the resolved path is a system directory (`/`, `/tmp`, `/etc`,
  anything under `/usr`...) or not a directory: a symlinked alias of `/etc` is `/etc`;
* `find REAL -xdev -type f`: symlinks inside a root are never followed and other
  filesystems mounted below it are not entered;
* logs: only *rotated* files go (`app.log.1`, `app.log.2.gz`, `app.log-20240501`,
  `app.log.2024-05-01`...); a name matching an active pattern (`*.log`) never does;
* age comes from the host's own clock and file mtimes, to the second;
* check mode previews the exact list and total size; apply deletes exactly that
  list, re-checking on the host that each file's directory still resolves to itself
  and each file's age, so a directory swapped for a symlink or a file written since
  the plan is spared.
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
from ..units import describe_age, human_bytes, parse_age

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import HostTarget

__all__ = ["FORBIDDEN_ROOTS", "SYSTEM_TREES", "CleanupRotatedLogs", "CleanupTempFiles", "check_root",
           "forbidden_reason", "is_rotated_log", "parse_age"]


# Directories that are never a cleanup root, however the inventory is written.
FORBIDDEN_ROOTS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/cache", "/var/lib", "/var/log",
    "/var/spool", "/var/tmp", "/var/www",
})
# Nothing under these is ever cleaned either (a root of /usr/lib/x or /etc/app is refused).
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys",
                "/usr")

_COMPRESSED = re.compile(r"\.(gz|bz2|xz|zst|lz4|Z)$")
_ROTATION = re.compile(
    r"(\.\d+"                                                  # app.log.1
    r"|[.-]\d{8}(\d{2}(\d{2}(\d{2})?)?)?"                      # app.log-20240501, -2024050113
    r"|[.-]\d{4}-\d{2}-\d{2}([_T.-]\d{2}([-:]?\d{2}){0,2})?"   # app.log.2024-05-01, _13-00
    r"|-\d{10})$",                                             # app.log-1714521600 (dateformat %s)
)

# $1 prefilter in minutes, $2 forbidden roots, $3 system trees (space-separated), then the roots.
# Every root is resolved first (realpath -e); if any resolves to a forbidden place or a non-directory
# nothing is listed. stdout, NUL-terminated: "now\t<epoch>"; per root "real\t<i>\t<path>" or
# "missing\t<i>", and "notdir\t<i>" / "forbidden\t<i>"; then per listed root "root\t<i>" followed by
# "<size>\t<mtime>\t<path>" records.
_LIST = r"""
m=$1; exact=$2; trees=$3; shift 3; n=$#; bad=0; i=0
set -f
printf 'now\t%s\0' "$(date +%s)"
for r do
  i=$((i + 1))
  if ! real=$(realpath -e -- "$r" 2>/dev/null); then printf 'missing\t%s\0' "$i"; set -- "$@" ""; continue; fi
  printf 'real\t%s\t%s\0' "$i" "$real"
  why=
  if [ ! -d "$real" ]; then why=notdir; fi
  for f in $exact; do [ "$real" = "$f" ] && why=forbidden; done
  for t in $trees; do case "$real/" in "$t"/*) why=forbidden;; esac; done
  if [ -n "$why" ]; then printf '%s\t%s\0' "$why" "$i"; bad=1; fi
  set -- "$@" "$real"
done
shift "$n"
[ "$bad" = 0 ] || exit 0
i=0
for real do
  i=$((i + 1))
  [ -n "$real" ] || continue
  printf 'root\t%s\0' "$i"
  find "$real" -xdev -type f -mmin "+$m" -printf '%s\t%T@\t%p\0'
done
"""

# $1 cutoff (epoch s), then the paths. A path whose directory no longer resolves to itself (swapped
# for a symlink since the plan) is reported as "moved\t<path>" and kept; the others are deleted if
# still a regular file (not a symlink) last modified at or before the cutoff: "<size>\t<path>" each.
_DELETE = r"""
c=$1; shift; n=$#; last=; ok=
for p do
  d=${p%/*}
  if [ "$d" != "$last" ]; then
    last=$d; ok=
    r=$(realpath -e -- "$d" 2>/dev/null) && [ "$r" = "$d" ] && ok=1
  fi
  if [ -n "$ok" ]; then set -- "$@" "$p"; else printf 'moved\t%s\0' "$p"; fi
done
shift "$n"
[ "$#" -gt 0 ] || exit 0
find -P "$@" -maxdepth 0 -type f ! -newermt "@$c" -printf '%s\t%p\0' -delete
"""
_DELETE_BATCH = 2000  # paths per command line (well under ARG_MAX)


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


def forbidden_reason(path: str) -> str | None:
    """Why a (resolved) directory may never be a cleanup root, or None."""
    if path in FORBIDDEN_ROOTS:
        return "a system directory"
    tree = next((t for t in SYSTEM_TREES if path.startswith(t + "/")), None)
    return f"inside the system directory {tree}" if tree else None


def check_root(host: str, root: str, what: str) -> str:
    """The configured string, before anything connects: absolute, normalised, not a system directory.

    This is only the first layer: the host resolves every root (symlinks) and the same rule is
    applied to the resolved path in check().
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in root):
        raise UsageError(f"{host}: {what} {root!r} contains a control character", hint=f"fix {what} in the inventory")
    normal = posixpath.normpath(root) if root else ""
    if not normal.startswith("/") or normal.startswith("//"):
        raise UsageError(f"{host}: {what} {root!r} is not an absolute path", hint=f"fix {what} in the inventory")
    why = forbidden_reason(normal)
    if why:
        raise UsageError(
            f"{host}: refusing to clean {normal!r} ({what}): {why}; configure the application's own "
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
    roots: list[str]  # resolved on the host: what is really listed and cleaned
    older_than: int
    now: float
    resolved: dict[str, str] = field(default_factory=dict)  # configured -> resolved, where they differ
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
    irreversible = "deleted files are gone (the preview in --check lists them first)"
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

    def preflight(self, ctx: Context) -> None:
        """The configured roots, as strings, before anything connects: a relative or system root is exit 2."""
        super().preflight(ctx)
        for target in self.targets(ctx):
            for root in getattr(target.settings, self.roots_setting):
                check_root(target.name, root, self.roots_setting)

    def eligible_name(self, target: HostTarget, name: str) -> str | None:
        """None if a file of this name may go, else why it is kept."""
        raise NotImplementedError

    def check(self, ctx: Context, target: HostTarget) -> CleanupState:
        what = self.roots_setting
        configured = getattr(target.settings, what)
        roots = list(dict.fromkeys(check_root(target.name, r, what) for r in configured))
        prefilter = max(0, self.older_than // 60 - 1)
        result = ctx.host(target).read(
            sh(_LIST, str(prefilter), " ".join(sorted(FORBIDDEN_ROOTS)), " ".join(SYSTEM_TREES), *roots), ok=(0, 1))
        records = result.stdout.split("\0")
        if not records or not records[0].startswith("now\t"):
            raise StepError(f"{target.name}: could not list {', '.join(roots)}: {result.output}")
        real: dict[int, str] = {}
        refused: list[str] = []
        listing: list[str] = []
        for record in records[1:]:
            tag, _, rest = record.partition("\t")
            if tag == "real":
                index, _, path = rest.partition("\t")
                real[int(index) - 1] = path
            elif tag in {"notdir", "forbidden"} and rest.isdigit():
                refused.append(self._refusal(target, roots[int(rest) - 1], real.get(int(rest) - 1, "?"), tag))
            else:
                listing.append(record)
        # The same rule again on the resolved paths here: the plan never contains a forbidden root.
        for index, path in real.items():
            why = forbidden_reason(path)
            message = self._refusal(target, roots[index], path, "forbidden")
            if why and message not in refused:
                refused.append(message)
        if refused:
            raise StepValueError("\n".join(refused), hint=f"fix {what} in the inventory of {ctx.env.name!r}")
        state = CleanupState(target, [real[i] for i in sorted(real)], self.older_than,
                             float(records[0].split("\t")[1]),
                             resolved={roots[i]: p for i, p in real.items() if p != roots[i]},
                             missing=[r for i, r in enumerate(roots) if i not in real])
        root, seen = "", set[str]()
        for record in listing:
            parts = record.split("\t", 2)
            if len(parts) == 2 and parts[0] == "root":
                root = real[int(parts[1]) - 1]
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

    def _refusal(self, target: HostTarget, root: str, real: str, tag: str) -> str:
        shown = f"{root!r}" + (f" resolves to {real!r} on the host and" if real != root else "")
        if tag == "notdir":
            return f"{target.name}: {self.roots_setting} {shown} is not a directory: refusing to clean it"
        why = forbidden_reason(real) or "a system directory"
        return (f"{target.name}: {self.roots_setting} {shown} is {why}: refusing to clean it; configure the "
                "application's own directory instead (e.g. /var/log/indostar)")

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
        if state.resolved:
            data["resolved"] = state.resolved
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
                        destructive=True, params={"paths": [c.path for c in files], "roots": state.roots,
                                                  "cutoff": state.cutoff})
        return Plan([change], data=data)

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> Outcome:
        change = plan.changes[0]
        paths: list[str] = list(change.params["paths"])
        roots: list[str] = list(change.params["roots"])
        # The plan is data: re-check every root and every path before acting on any of them.
        bad_roots = [r for r in roots if not r.startswith("/") or forbidden_reason(posixpath.normpath(r))]
        prefixes = tuple(r.rstrip("/") + "/" for r in roots)
        outside = [p for p in paths if not p.startswith(prefixes) or "/../" in p or "/./" in p
                   or any(ord(c) < 32 for c in p)]
        if bad_roots or outside or not roots:
            raise StepError(f"{target.name}: refusing to delete: "
                            + (f"forbidden root(s) {', '.join(bad_roots)}" if bad_roots else
                               f"{len(outside)} planned path(s) outside {', '.join(roots) or '(no roots)'}, "
                               f"e.g. {outside[0] if outside else '?'}") + "; nothing was deleted",
                            hint="re-run the step: a plan comes from check(), never from elsewhere")
        host = ctx.host(target)
        deleted: dict[str, int] = {}
        moved: list[str] = []
        for start in range(0, len(paths), _DELETE_BATCH):
            batch = paths[start:start + _DELETE_BATCH]
            result = host.change(sh(_DELETE, str(change.params["cutoff"]), *batch),
                                 change.summary if start == 0 else f"{change.summary} (continued)", ok=(0, 1))
            for record in result.stdout.split("\0"):
                size, _, path = record.partition("\t")
                if size == "moved":
                    moved.append(path)
                elif size.isdigit() and path:
                    deleted[path] = int(size)
        spared = [p for p in paths if p not in deleted]
        reason = f"deleted {len(deleted)} {self.noun} ({human_bytes(sum(deleted.values()))})" + (
            f"; spared {len(spared)} changed, moved or gone since the plan" if spared else "")
        return Outcome(reason, {"deleted": len(deleted), "deleted_bytes": sum(deleted.values()), "spared": spared,
                                "moved": moved})


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
