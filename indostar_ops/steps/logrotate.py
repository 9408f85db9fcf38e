"""Runbook "Out of Disk Space", long-term fix: install log rotation for the application's logs.

Render the policy from the inventory, validate it with `logrotate -d` on the
host *before* it replaces anything, keep a backup of a replaced file, and do
nothing at all when the installed file already matches.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..connectors.shell import sh
from ..errors import CommandError, StepError, StepValueError, VerificationFailed
from ..step import Change, Outcome, Plan, Step, unified_diff
from ..templates import render_template

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import HostTarget

__all__ = ["InstallLogrotate"]

# stdin: the new config; $1 staging path, $2 destination, $3 backup path ('' for none).
# One round trip: stage, validate, back up, install, and re-read (sha256) for verify().
_INSTALL = r"""
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

    def __init__(self, groups: Sequence[str] | None = ("web", "workers")) -> None:
        self.groups = groups

    def targets(self, ctx: Context) -> list[HostTarget]:
        if self.groups is None:
            return ctx.env.hosts()
        present = [g for g in self.groups if g in ctx.env.groups]
        return ctx.env.hosts(present) if present else []

    def render(self, ctx: Context, host: HostTarget) -> str:
        settings = host.settings
        paths = [posixpath.join(d, p) for d in settings.log_dirs for p in settings.log_patterns]
        for path in paths:
            if any(ch in path for ch in '"\n\r'):
                raise StepValueError(
                    f"{host.name}: log path {path!r} contains a quote or newline, which logrotate cannot take",
                    hint="fix log_dirs/log_patterns in the inventory",
                )
        return render_template("logrotate.j2", env=ctx.env.name, host=host.name, paths=paths,
                               policy=settings.logrotate)

    def check(self, ctx: Context, target: HostTarget) -> RotationState:
        path = target.settings.logrotate_config
        host = ctx.host(target)
        # A plain `cat` (no shell) keeps the common case, nothing to change, at one cheap round trip.
        result = host.read(["cat", "--", path], ok=(0, 1))
        current: str | None = result.stdout
        if result.exit_code == 1:
            if host.read(["test", "-e", path], ok=(0, 1)).exit_code == 0:
                raise CommandError(target.name, f"cat -- {path}", 1, result.output)
            current = None
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
                             + (f" (backup {backup})" if backup else ""), ok=(0, 65, 66, 67), stdin=change.after)
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
