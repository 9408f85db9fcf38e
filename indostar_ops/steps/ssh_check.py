"""Can every host be reached, and how: `ssh.check`, a monitoring step for before a window.

For each host it walks the route the other steps use (jump hosts first, then the host)
and reports, in words, the first hop that fails and why: DNS, TCP, no SSH banner, a host
key unknown or changed, forwarding refused by a jump host, authentication (which methods
the server offers and which keys were tried). On a host it reached it also runs
`sudo -n true` when `become` is on (a sudo that wants a password fails here, not halfway
through a change) and compares the host's clock with this machine's.

Read-only. As a monitoring task (`invoke ssh.check`, `strict=False`) every host gets a severity:
OK, WARNING (clock skew above `max_skew_s`), CRITICAL (a hop fails, or sudo refuses). As a gate
(`strict=True`, the default for playbooks and library use) a host that cannot be reached is
status `unreachable` and one whose sudo refuses is `failed`, so a window's gated phases do not
start. A maintenance playbook's preflight runs it for only the groups the window touches, e.g.
``{step: ssh.check, with: {groups: [web]}}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import StepError, UsageError
from ..severity import Severity
from ..step import Plan, Step

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import HostTarget

__all__ = ["SSHCheck"]

DEFAULT_MAX_SKEW_S = 5.0


@dataclass
class ReachState:
    host: str
    user: str
    route: list[str] = field(default_factory=list)
    local: bool = False
    failed_hop: str | None = None
    stage: str | None = None
    reason: str | None = None
    hint: str | None = None
    connect_s: float | None = None
    become: bool = False
    sudo: str | None = None  # "ok" or why not
    skew_s: float | None = None
    max_skew_s: float = DEFAULT_MAX_SKEW_S


class SSHCheck(Step[ReachState]):
    """Reach every host hop by hop (DNS, TCP, banner, host key, auth), then sudo -n and clock skew."""

    name = "ssh.check"
    read_only = True

    def __init__(self, groups: list[str] | None = None, max_skew_s: float = DEFAULT_MAX_SKEW_S,
                 strict: bool = True) -> None:
        self.groups = groups
        self.max_skew_s = max_skew_s
        self.strict = strict

    def preflight(self, ctx: Context) -> None:
        if not isinstance(self.max_skew_s, int | float) or self.max_skew_s <= 0:
            raise UsageError(f"ssh.check: max_skew_s must be a positive number of seconds, not {self.max_skew_s!r}")
        super().preflight(ctx)

    def check(self, ctx: Context, target: HostTarget) -> ReachState:
        state = ReachState(target.name, target.user, become=target.become, max_skew_s=float(self.max_skew_s))
        if target.connection == "local":
            state.local = True
            return state
        from ..connectors.ssh import SSHUnreachable

        connector: Any = ctx.host(target).connector
        started = time.monotonic()
        try:
            route = connector.route
            state.route = [hop.label for hop in route.jumps] + [route.host.label]
            state.user = route.host.user
            connector.connect()
        except SSHUnreachable as exc:
            if self.strict:
                raise
            state.failed_hop, state.stage, state.reason, state.hint = exc.hop, exc.stage, exc.detail, exc.hint
            return state
        state.connect_s = round(time.monotonic() - started, 3)

        before = time.time()
        clock = connector.run(["date", "-u", "+%s.%N"])
        after = time.time()
        try:
            state.skew_s = round(float(clock.stdout.strip().replace("N", "0")) - (before + after) / 2, 3)
        except ValueError:
            state.skew_s = None
        if target.become:
            sudo = connector.run(["sudo", "-n", "true"])
            if sudo.ok:
                state.sudo = "ok"
            elif "password is required" in sudo.stderr:
                state.sudo = f"sudo wants a password for {state.user} (become needs passwordless sudo: sudo -n)"
            elif sudo.exit_code == 127:
                state.sudo = "sudo is not installed"
            else:
                last = sudo.output.splitlines()[-1] if sudo.output else ""
                state.sudo = f"sudo -n true exited {sudo.exit_code}: {last}"
            if self.strict and state.sudo != "ok":
                raise StepError(f"{target.name}: {state.sudo}",
                                hint=f"give {state.user} passwordless sudo on {target.name} (see the README's "
                                "'Reaching hosts'), or set become: false for this host")
        return state

    def plan(self, state: ReachState) -> Plan:
        data: dict[str, Any] = {"user": state.user, "route": state.route, "become": state.become}
        if state.local:
            return Plan.nothing("local connection (no SSH)", severity=Severity.OK, data={"local": True})
        if state.failed_hop is not None:
            data.update(failed_hop=state.failed_hop, stage=state.stage, reason=state.reason, hint=state.hint)
            which = "the host itself" if state.failed_hop == state.route[-1] else state.failed_hop
            data["failed_at"] = which
            return Plan.nothing(f"cannot reach {state.failed_hop}: {state.reason}"
                                + (f" (next: {state.hint})" if state.hint else ""),
                                severity=Severity.CRITICAL, data=data)
        data.update(connect_s=state.connect_s, clock_skew_s=state.skew_s, sudo=state.sudo)
        via = f" via {' -> '.join(state.route[:-1])}" if len(state.route) > 1 else ""
        parts = [f"reachable as {state.user}{via} in {state.connect_s:.2f} s"]
        severity = Severity.OK
        if state.become:
            parts.append("sudo -n: ok" if state.sudo == "ok" else f"sudo -n: {state.sudo}")
            if state.sudo != "ok":
                severity = Severity.CRITICAL
        if state.skew_s is None:
            parts.append("clock: could not read the host's time")
            severity = Severity.UNKNOWN if severity == Severity.OK else severity
        else:
            parts.append(f"clock skew {state.skew_s:+.2f} s")
            if abs(state.skew_s) > state.max_skew_s:
                parts[-1] += f" (more than {state.max_skew_s:g} s: TLS, logs and TOTP disagree)"
                severity = Severity.worst([severity, Severity.WARNING])
        return Plan.nothing("; ".join(parts), severity=severity, data=data)
