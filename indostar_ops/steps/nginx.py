"""nginx on the web hosts: config test + reload, and maintenance mode (runbook "Planned Maintenance").

Reloads always go through `nginx -t` first: a config that fails the test is
never reloaded, its error is shown, and the running nginx keeps serving.

Maintenance mode (the `nginx` strategy) is a snippet every server block includes,
installed once with the page, plus a flag file: while the flag exists nginx
answers 503 with the page. `maintenance.on` / `.off` only create / remove the flag
(no reload) and then prove it with an HTTP request to the host.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..connectors.shell import sh
from ..errors import StepError, StepValueError, UsageError, VerificationFailed
from ..severity import Severity
from ..step import Change, Outcome, Plan, Receipt, Step, unified_diff
from ..templates import render_template

if TYPE_CHECKING:
    from ..context import Context, HostSession
    from ..inventory import Environment, HostTarget, NginxSettings

__all__ = [
    "MARKER",
    "InstallMaintenancePage",
    "NginxMaintenanceOff",
    "NginxMaintenanceOn",
    "NginxMaintenanceStatus",
    "nginx_test",
    "nginx_test_and_reload",
    "probe_site",
    "require_nginx_strategy",
]

S = TypeVar("S")

MARKER = "indostar-maintenance-page"  # in the page's <meta>; how a probe recognises the page
PAGE_NAME = "maintenance.html"
STABLE_PROBES = 3  # consecutive answers that must agree before on/off count as verified

_MISSING = 3
_READ = 'if [ -e "$1" ]; then exec cat -- "$1"; else exit 3; fi'
# $1 staged file, $2 destination: atomic replace, creating the directory if needed
_INSTALL = 'mkdir -p -- "$(dirname -- "$2")" && mv -f -- "$1" "$2"'
_SAFE_PATH = re.compile(r"^/[\w./@+,=-]*$")
_SAFE_URI = re.compile(r"^/[\w./@+,=%~-]*$")


# ---------------------------------------------------------------- test + reload


def nginx_test(host: HostSession, settings: NginxSettings) -> tuple[bool, str]:
    """`nginx -t`: (passed, its output). Reads only."""
    result = host.read([*settings.command, "-t"], ok=range(256))
    return result.exit_code == 0, result.output


def nginx_test_and_reload(host: HostSession, settings: NginxSettings, why: str) -> None:
    """Reload nginx only if `nginx -t` passes; otherwise fail with nginx's own error and reload nothing."""
    ok, output = nginx_test(host, settings)
    if not ok:
        raise StepError(
            f"{host.target.name}: nginx -t failed, nginx NOT reloaded (still running the previous config):\n"
            + output.strip(),
            hint=f"fix the config, check with: {' '.join([*settings.command, '-t'])}",
        )
    host.change(settings.reload_command or [*settings.command, "-s", "reload"], f"reload nginx ({why})")


# ---------------------------------------------------------------- probing


@dataclass(frozen=True)
class Probe:
    url: str | None
    status: int | None = None
    page: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in {"url": self.url, "status": self.status, "maintenance_page": self.page,
                                  "error": self.error}.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any) -> Probe:
        return cls(data.get("url"), data.get("status"), bool(data.get("maintenance_page")), data.get("error"))

    def describe(self) -> str:
        if self.url is None:
            return "no probe_url configured, not checked over HTTP"
        if self.error:
            return f"{self.url} unreachable ({self.error})"
        return f"{self.url} answers {self.status}" + (" with the maintenance page" if self.page else "")


def probe_site(ctx: Context, target: HostTarget) -> Probe:
    """GET the host's probe URL (default: the environment's site URL); never raises for HTTP errors."""
    settings = target.settings.nginx
    url = settings.probe_url or ctx.env.urls.site
    if not url:
        return Probe(None)
    headers = {"Host": settings.probe_host} if settings.probe_host else {}
    headers["Cache-Control"] = "no-cache"
    try:
        status, body = ctx.http().get(url, timeout=5, headers=headers)
    except (OSError, ValueError) as exc:
        return Probe(url, error=str(getattr(exc, "reason", exc)))
    return Probe(url, status, status == 503 and MARKER.encode() in body)


def _wait_for(ctx: Context, target: HostTarget, want_page: bool) -> Probe:
    """Poll until the site shows (or stops showing) the maintenance page on STABLE_PROBES requests in a row.

    A reload is asynchronous and old workers keep answering for a moment, so one
    good answer right after a reload does not yet mean every request gets it.
    """
    deadline = time.monotonic() + target.settings.nginx.probe_wait_s
    streak = 0
    while True:
        probe = probe_site(ctx, target)
        if probe.url is None:
            return probe
        streak = streak + 1 if probe.error is None and probe.page == want_page else 0
        if streak >= STABLE_PROBES or time.monotonic() > deadline:
            return probe
        time.sleep(0.1 if streak else 0.2)


# ---------------------------------------------------------------- maintenance


def require_nginx_strategy(env: Environment, groups: Sequence[str] | None = ("web",)) -> None:
    """maintenance.* act on nginx only when the environment says so; other strategies are refused loudly."""
    strategy = env.maintenance.strategy
    if strategy == "nginx":
        _sandbox_guard(env, groups)
        return
    if strategy == "alb":
        raise UsageError(
            f"environment {env.name!r} uses maintenance.strategy 'alb', which is not implemented yet; "
            "nothing was changed",
            hint="use the load balancer's fixed-response rule by hand, or set maintenance.strategy: nginx",
        )
    raise UsageError(f"environment {env.name!r} has maintenance.strategy {strategy!r}: no maintenance mode to toggle",
                     hint="set maintenance.strategy: nginx in the inventory")


class _NginxStrategyStep(Step[S]):
    """A maintenance step: acts on the web hosts, and only if the environment's strategy is nginx."""

    def __init__(self, groups: Sequence[str] | None = ("web",)) -> None:
        self.groups = groups

    def targets(self, ctx: Context) -> list[HostTarget]:
        require_nginx_strategy(ctx.env, self.groups)  # also when a playbook, not the task, runs the step
        return ctx.env.hosts(self.groups)


def _sandbox_guard(env: Environment, groups: Sequence[str] | None) -> None:
    """The sandbox's hosts are this machine: never let its maintenance mode touch the system nginx's files."""
    if env.tier != "sandbox":
        return
    from ..inventory import sandbox_root

    root = str(sandbox_root()).rstrip("/") + "/"
    for host in env.hosts(groups):
        s = host.settings.nginx
        outside = [p for p in (s.maintenance_snippet, s.maintenance_flag, s.maintenance_page_dir)
                   if not p.startswith(root)]
        if host.connection == "local" and outside:
            raise UsageError(
                f"sandbox host {host.name}: nginx maintenance paths {', '.join(outside)} are outside the sandbox "
                f"({root}); refusing to touch this machine's own nginx",
                hint="give the sandbox its own nginx settings under ${sandbox_root} in inventory/sandbox.yaml",
            )


def _safe(target: HostTarget, value: str, what: str, pattern: re.Pattern[str] = _SAFE_PATH) -> str:
    if not pattern.match(value) or "/../" in value + "/":
        raise StepValueError(
            f"{target.name}: nginx.{what} {value!r} must be an absolute path of letters, digits and ./_-@+,= "
            "(it is written into the nginx config)",
            hint=f"fix nginx.{what} in the inventory",
        )
    return value


def render_maintenance(ctx: Context, target: HostTarget) -> tuple[str, str]:
    """(snippet, page) for this host, from templates/nginx-maintenance.conf.j2 and maintenance.html.j2."""
    s = target.settings.nginx
    snippet = render_template(
        "nginx-maintenance.conf.j2", env=ctx.env.name, host=target.name,
        snippet=_safe(target, s.maintenance_snippet, "maintenance_snippet"),
        flag=_safe(target, s.maintenance_flag, "maintenance_flag"),
        page_dir=_safe(target, s.maintenance_page_dir, "maintenance_page_dir"),
        exempt=[_safe(target, uri, "maintenance_exempt", _SAFE_URI) for uri in s.maintenance_exempt],
    )
    window = ctx.env.maintenance.window
    page = render_template("maintenance.html.j2", marker=MARKER, window_end=window.end,
                           timezone=ctx.env.timezone)
    return snippet, page


@dataclass(frozen=True)
class InstallState:
    host: HostTarget
    snippet: str | None
    page: str | None
    want_snippet: str
    want_page: str


def _read_optional(host: HostSession, path: str) -> str | None:
    result = host.read(sh(_READ, path), ok=(0, _MISSING))
    return None if result.exit_code == _MISSING else result.stdout


class InstallMaintenancePage(_NginxStrategyStep[InstallState]):
    """Install the maintenance page and nginx snippet (nginx -t, then reload) if they differ."""

    name = "maintenance.install"

    def check(self, ctx: Context, target: HostTarget) -> InstallState:
        s = target.settings.nginx
        host = ctx.host(target)
        snippet, page = render_maintenance(ctx, target)
        return InstallState(target, _read_optional(host, s.maintenance_snippet),
                            _read_optional(host, posixpath.join(s.maintenance_page_dir, PAGE_NAME)), snippet, page)

    def plan(self, state: InstallState) -> Plan:
        s = state.host.settings.nginx
        page_path = posixpath.join(s.maintenance_page_dir, PAGE_NAME)
        changes, paths = [], []
        if state.page != state.want_page:
            paths.append(page_path)
            changes.append(Change(f"{'create' if state.page is None else 'update'} {page_path}", before=state.page,
                                  after=state.want_page, diff=unified_diff(state.page or "", state.want_page,
                                                                           page_path)))
        if state.snippet != state.want_snippet:
            paths.append(s.maintenance_snippet)
            changes.append(Change(
                f"{'create' if state.snippet is None else 'update'} {s.maintenance_snippet}, then nginx -t and reload",
                before=state.snippet, after=state.want_snippet,
                diff=unified_diff(state.snippet or "", state.want_snippet, s.maintenance_snippet)))
        if not changes:
            return Plan.nothing(f"maintenance page and {s.maintenance_snippet} already installed")
        return Plan(changes, data={"paths": paths})

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> None:
        s = target.settings.nginx
        host = ctx.host(target)
        for change, dest in zip(plan.changes, plan.data["paths"], strict=True):
            _install_file(host, change.after, dest, change.summary)
            if dest != s.maintenance_snippet:
                continue
            ok, output = nginx_test(host, s)
            if not ok:  # put the previous snippet back so nothing broken is left for the next reload
                if change.before is None:
                    host.change(["rm", "-f", "--", dest], f"remove rejected {dest}")
                else:
                    _install_file(host, change.before, dest, f"restore previous {dest}")
                raise StepError(f"{target.name}: nginx -t failed with the maintenance snippet installed; put "
                                f"back the previous {dest}, nginx NOT reloaded:\n{output.strip()}",
                                hint=f"fix the nginx config ({' '.join([*s.command, '-t'])}); {dest} must be "
                                "included at server level")
            host.change(s.reload_command or [*s.command, "-s", "reload"], "reload nginx (maintenance snippet)")


def _install_file(host: HostSession, text: str, dest: str, summary: str) -> None:
    staged = dest + ".indostar-new~"
    host.change(["mkdir", "-p", "--", posixpath.dirname(dest)], f"create {posixpath.dirname(dest)}")
    host.upload(text.encode(), staged, f"stage {staged}", mode=0o644)
    host.change(sh(_INSTALL, staged, dest), summary)


@dataclass(frozen=True)
class FlagState:
    host: HostTarget
    flag_present: bool
    probe: Probe
    snippet_installed: bool | None = None


def _flag_state(ctx: Context, target: HostTarget, *, snippet: bool = False) -> FlagState:
    s = target.settings.nginx
    host = ctx.host(target)
    present = host.read(["test", "-e", s.maintenance_flag], ok=(0, 1)).exit_code == 0
    installed = None
    if snippet:
        installed = _read_optional(host, s.maintenance_snippet) == render_maintenance(ctx, target)[0]
    return FlagState(target, present, probe_site(ctx, target), installed)


class NginxMaintenanceOn(_NginxStrategyStep[FlagState]):
    """Put the web hosts in maintenance: create the flag file, then see nginx answer 503 with the page."""

    name = "maintenance.on"

    def check(self, ctx: Context, target: HostTarget) -> FlagState:
        return _flag_state(ctx, target)

    def plan(self, state: FlagState) -> Plan:
        flag = state.host.settings.nginx.maintenance_flag
        data = {"flag": flag, "probe": state.probe.as_dict()}
        if state.flag_present:
            consistent = state.probe.url is None or state.probe.page
            return Plan.nothing(f"maintenance is already on ({flag} exists; {state.probe.describe()})",
                                severity=None if consistent else Severity.WARNING, data=data)
        return Plan([Change(f"create {flag}: nginx answers 503 with the maintenance page", before=False,
                            after=True)], data=data)

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> Outcome:
        flag = target.settings.nginx.maintenance_flag
        ctx.host(target).change(sh('mkdir -p -- "$(dirname -- "$1")" && touch -- "$1"', flag),
                                plan.changes[0].summary)
        probe = _wait_for(ctx, target, want_page=True)
        return Outcome(data={"probe": probe.as_dict()},
                       receipt=Receipt("maintenance.off", {"groups": list(self.groups or ["web"])},
                                       f"maintenance off on {target.name}"))

    def verify(self, ctx: Context, target: HostTarget, plan: Plan, outcome: Outcome) -> None:
        super().verify(ctx, target, plan, outcome)
        probe = Probe.from_dict(outcome.data["probe"])
        if probe.url is not None and not probe.page:
            s = target.settings.nginx
            raise VerificationFailed(
                f"{target.name}: {s.maintenance_flag} exists but {probe.describe()} after "
                f"{s.probe_wait_s:g}s, not 503 with the maintenance page",
                hint=f"check that every server block includes {s.maintenance_snippet} "
                f"({' '.join(s.command)} -T | grep -F {s.maintenance_snippet}); undo with: invoke maintenance.off",
            )


class NginxMaintenanceOff(_NginxStrategyStep[FlagState]):
    """Take the web hosts out of maintenance: remove the flag file, then see the upstream answer again."""

    name = "maintenance.off"

    def check(self, ctx: Context, target: HostTarget) -> FlagState:
        return _flag_state(ctx, target)

    def plan(self, state: FlagState) -> Plan:
        flag = state.host.settings.nginx.maintenance_flag
        data = {"flag": flag, "probe": state.probe.as_dict()}
        if not state.flag_present:
            return Plan.nothing(f"maintenance is already off ({flag} absent; {state.probe.describe()})",
                                severity=Severity.WARNING if state.probe.page else None, data=data)
        return Plan([Change(f"remove {flag}: nginx passes requests to the upstream again", before=True,
                            after=False)], data=data)

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> Outcome:
        flag = target.settings.nginx.maintenance_flag
        ctx.host(target).change(["rm", "-f", "--", flag], plan.changes[0].summary)
        probe = _wait_for(ctx, target, want_page=False)
        return Outcome(data={"probe": probe.as_dict()},
                       receipt=Receipt("maintenance.on", {"groups": list(self.groups or ["web"])},
                                       f"maintenance on again on {target.name}"))

    def verify(self, ctx: Context, target: HostTarget, plan: Plan, outcome: Outcome) -> None:
        super().verify(ctx, target, plan, outcome)
        probe = Probe.from_dict(outcome.data["probe"])
        if probe.url is not None and (probe.page or probe.error):
            raise VerificationFailed(f"{target.name}: flag removed but {probe.describe()}",
                                     hint="check nginx and the upstream (invoke maintenance.status)")


class NginxMaintenanceStatus(_NginxStrategyStep[FlagState]):
    """Report whether each web host is in maintenance (flag file, snippet, what the site answers)."""

    name = "maintenance.status"
    read_only = True

    def check(self, ctx: Context, target: HostTarget) -> FlagState:
        return _flag_state(ctx, target, snippet=True)

    def plan(self, state: FlagState) -> Plan:
        s = state.host.settings.nginx
        mode = "on" if state.flag_present else "off"
        data: dict[str, Any] = {"maintenance": mode, "flag": s.maintenance_flag, "snippet": s.maintenance_snippet,
                                "snippet_installed": state.snippet_installed, "probe": state.probe.as_dict()}
        problems = []
        if state.flag_present and not state.snippet_installed:
            problems.append(f"{s.maintenance_snippet} is missing or outdated (run maintenance.on)")
        if state.probe.url is not None and state.probe.error is None and state.probe.page != state.flag_present:
            problems.append("the site disagrees with the flag")
        reason = f"maintenance {mode}: {state.probe.describe()}" + (f"; {'; '.join(problems)}" if problems else "")
        if problems:
            data["problems"] = problems
        return Plan.nothing(reason, severity=Severity.WARNING if problems else Severity.OK, data=data)
