"""Runbook "Out of Disk Space", long-term fix: install log rotation for the application's logs.

Render the policy from the inventory, validate it with `logrotate -d` on the
host *before* it replaces anything, keep a backup of a replaced file, and do
nothing at all when the installed file already matches. Every value rendered
into the file (paths, patterns, `su`, names) is typed at inventory load, so
data can never become a directive; the config and backup directories must
resolve to themselves on the host (no write through a symlinked directory).
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..connectors.shell import sh
from ..errors import StepError, VerificationFailed
from ..facts import WRITE_GUARD, WRITE_GUARD_EXIT, read_optional, written_path_error
from ..step import Change, Outcome, Plan, Step, unified_diff
from ..templates import render_template

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import HostTarget

__all__ = ["InstallLogrotate"]

# stdin: the new config; $1 staging path, $2 destination, $3 backup path ('' for none).
# One round trip: check the directories resolve to themselves, stage, validate, back up, install,
# and re-read (sha256) for verify().
_INSTALL = WRITE_GUARD + r"""
guard "$1"; [ -z "$3" ] || guard "$3"
umask 022
cat > "$1" || { rm -f -- "$1"; exit 67; }
out=$(logrotate -d "$1" 2>&1); rc=$?
if [ $rc -ne 0 ] || printf '%s\n' "$out" | grep -q '^error:'; then
    rm -f -- "$1"; printf '%s\n' "$out" | grep -v '^warning: logrotate in debug mode' >&2; exit 65
fi
if [ -n "$3" ] && [ -e "$2" ]; then
    mkdir -p -- "$(dirname -- "$3")" && cp -p -- "$2" "$3" || { rm -f -- "$1"; exit 66; }
fi
mv -f -- "$1" "$2" && sha256sum -- "$2"
"""


@dataclass(frozen=True)
class RotationState:
    host: HostTarget
    current: str | None
    desired: str


class InstallLogrotate(Step[RotationState]):
    """Install the logrotate policy for the application's logs (validated, backed up, only if different)."""

    name = "logs.install-rotation"

    DEFAULT_GROUPS = ("web", "workers")

    def __init__(self, groups: Sequence[str] | None = None) -> None:
        self.groups = groups  # None: the web and workers groups this environment has; named groups must exist

    def targets(self, ctx: Context) -> list[HostTarget]:
        if self.groups is not None:
            return ctx.env.hosts(self.groups)
        present = [g for g in self.DEFAULT_GROUPS if g in ctx.env.groups]
        return ctx.env.hosts(present) if present else []

    def render(self, ctx: Context, host: HostTarget) -> str:
        settings = host.settings
        # log_dirs, log_patterns, su and the names are typed at inventory load (model.py): no quote,
        # newline or control character can reach the file, so no value can add a directive.
        paths = [posixpath.join(d, p) for d in settings.log_dirs for p in settings.log_patterns]
        return render_template("logrotate.j2", env=ctx.env.name, host=host.name, paths=paths,
                               policy=settings.logrotate)

    def check(self, ctx: Context, target: HostTarget) -> RotationState:
        current = read_optional(ctx.host(target), target.settings.logrotate_config)
        return RotationState(target, current, self.render(ctx, target))

    def plan(self, state: RotationState) -> Plan:
        path = state.host.settings.logrotate_config
        if state.current == state.desired:
            return Plan.nothing(f"{path} is already up to date")
        diff = unified_diff(state.current or "", state.desired, path)
        summary = f"create {path}" if state.current is None else f"update {path}"
        return Plan([Change(summary, before=state.current, after=state.desired, diff=diff)],
                    data={"path": path})

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> Outcome:
        host = ctx.host(target)
        settings = target.settings
        dest = settings.logrotate_config
        staged = dest + ".indostar-new~"  # '~' is on logrotate's taboo list: never read as a config
        change = plan.changes[0]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = (posixpath.join(settings.backup_dir, posixpath.basename(dest) + "." + stamp)
                  if change.before is not None else "")
        result = host.change(sh(_INSTALL, staged, dest, backup), change.summary
                             + (f" (backup {backup})" if backup else ""), ok=(0, 65, 66, 67, WRITE_GUARD_EXIT),
                             stdin=change.after)
        if result.exit_code == WRITE_GUARD_EXIT:
            raise written_path_error(target.name, "logrotate_config/backup_dir", dest, result.stderr)
        if result.exit_code == 67:
            raise StepError(f"{target.name}: cannot write {staged}: {result.stderr.strip()}",
                            hint=f"check that {posixpath.dirname(dest)} exists and is writable")
        if result.exit_code == 65:
            raise StepError(f"{target.name}: logrotate -d rejected the rendered config; {dest} left unchanged:\n"
                            + result.stderr.strip(), hint="check the logrotate policy in the inventory")
        if result.exit_code == 66:
            raise StepError(f"{target.name}: could not back up {dest} to {backup}; nothing replaced",
                            hint=f"check that {settings.backup_dir} is writable")
        return Outcome(data={"installed_sha256": result.stdout.split(" ", 1)[0], "backup": backup or None})

    def verify(self, ctx: Context, target: HostTarget, plan: Plan, outcome: Outcome) -> None:
        """The install script re-read the installed file (sha256): it must be exactly what was planned."""
        wanted = hashlib.sha256(plan.changes[0].after.encode()).hexdigest()
        if outcome.data.get("installed_sha256") != wanted:
            raise VerificationFailed(f"{target.name}: {target.settings.logrotate_config} does not hold the planned "
                                     "content after installing it", hint="run again with --check to see the diff")
