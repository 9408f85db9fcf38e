"""nginx on the web hosts: config test + reload, and maintenance mode (runbook "Planned Maintenance").

Reloads always go through `nginx -t` first: a config that fails the test is
never reloaded, its error is shown, and the running nginx keeps serving.

Maintenance mode (the `nginx` strategy) is a snippet every server block includes,
installed once with the page, plus a flag file: while the flag exists nginx
answers 503 with the page. `maintenance.on` / `.off` only create / remove the flag
(no reload) and then prove it with an HTTP request to the host (`probe_url`, optionally with the
site's name as SNI + Host, a CA bundle and verify options, as certs.check has). Every path written
into the nginx config is typed at inventory load; every write checks on the host that its directory
resolves to itself (no write through a symlinked directory).
"""

from __future__ import annotations

import posixpath
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..connectors.shell import sh
from ..errors import StepError, UsageError, VerificationFailed, WaitTimeout
from ..facts import WRITE_GUARD, WRITE_GUARD_EXIT, read_optional, written_path_error
from ..nginxctl import nginx_reload, nginx_test, test_command
from ..poll import wait_until
from ..severity import Severity
from ..step import Change, Outcome, Plan, Receipt, Step, unified_diff
from ..templates import render_template
from ..tls import http_get

if TYPE_CHECKING:
    from ..context import Context, HostSession
    from ..inventory import Environment, HostTarget

__all__ = [
    "MARKER",
    "InstallMaintenancePage",
    "NginxMaintenanceOff",
    "NginxMaintenanceOn",
    "NginxMaintenanceStatus",
    "probe_site",
    "require_nginx_strategy",
]

S = TypeVar("S")

MARKER = "indostar-maintenance-page"  # in the page's <meta>; how a probe recognises the page
PAGE_NAME = "maintenance.html"
STABLE_PROBES = 3  # consecutive answers that must agree before on/off count as verified

# $1 the path to write; each script first checks that its directory resolves to itself (facts.WRITE_GUARD)
_MKDIR = WRITE_GUARD + 'guard "$1" && mkdir -p -- "$(dirname -- "$1")"'
_TOUCH = WRITE_GUARD + 'guard "$1" && mkdir -p -- "$(dirname -- "$1")" && touch -- "$1"'
_REMOVE = WRITE_GUARD + 'guard "$1" && rm -f -- "$1"'
# $1 staged file, $2 destination: atomic replace
_INSTALL = WRITE_GUARD + 'guard "$2" && mv -f -- "$1" "$2"'


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
    """GET the host's probe URL (default: the environment's site URL); never raises for HTTP errors.

    `probe_host` is the site's name: the Host header and, over https, the SNI name that is verified
    (against `probe_ca_file`, else the system store; `probe_verify: false` accepts any certificate).
    """
    settings = target.settings.nginx
    url = settings.probe_url or ctx.env.urls.site
    if not url:
        return Probe(None)
    try:
        status, body = http_get(url, server_name=settings.probe_host, ca_file=settings.probe_ca_file,
                                verify=settings.probe_verify, headers={"Cache-Control": "no-cache"}, timeout=5)
    except ssl.SSLCertVerificationError as exc:
        return Probe(url, error=f"certificate does not verify ({exc.reason}): {exc.verify_message}")
    except (OSError, ValueError) as exc:
        return Probe(url, error=str(getattr(exc, "reason", None) or exc))
    return Probe(url, status, status == 503 and MARKER.encode() in body)


def _wait_for(ctx: Context, target: HostTarget, want_page: bool) -> Probe:
    """Poll until the site shows (or stops showing) the maintenance page on STABLE_PROBES requests in a row.

    A reload is asynchronous and old workers keep answering for a moment, so one
    good answer right after a reload does not yet mean every request gets it.
    Returns the last answer either way: verify() judges it.
    """
    seen: list[Probe] = []

    def probe() -> Probe:
        seen.append(probe_site(ctx, target))
        return seen[-1]

    def stable(last: Probe) -> bool:
        recent = seen[-STABLE_PROBES:]
        return last.url is None or (len(recent) == STABLE_PROBES and all(
            p.error is None and p.page == want_page for p in recent))

    try:
        return wait_until(ctx, f"{target.name}: site {'shows' if want_page else 'no longer shows'} the maintenance "
                          "page", probe, stable, timeout=target.settings.nginx.probe_wait_s, every=0.15,
                          describe=Probe.describe)
    except WaitTimeout:
        return seen[-1]


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


def render_maintenance(ctx: Context, target: HostTarget) -> tuple[str, str]:
    """(snippet, page) for this host, from templates/nginx-maintenance.conf.j2 and maintenance.html.j2."""
    s = target.settings.nginx
    # The paths and URIs are typed at inventory load (model.NginxPath/NginxUri): letters, digits and ./_-@+,=
    # only, so nothing here can close a quote or add a directive.
    snippet = render_template(
        "nginx-maintenance.conf.j2", env=ctx.env.name, host=target.name, snippet=s.maintenance_snippet,
        flag=s.maintenance_flag, page_dir=s.maintenance_page_dir, exempt=list(s.maintenance_exempt),
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


class InstallMaintenancePage(_NginxStrategyStep[InstallState]):
    """Install the maintenance page and nginx snippet (nginx -t, then reload) if they differ."""

    name = "maintenance.install"

    def check(self, ctx: Context, target: HostTarget) -> InstallState:
        s = target.settings.nginx
        host = ctx.host(target)
        snippet, page = render_maintenance(ctx, target)
        return InstallState(target, read_optional(host, s.maintenance_snippet),
                            read_optional(host, posixpath.join(s.maintenance_page_dir, PAGE_NAME)), snippet, page)

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
                    _write(host, sh(_REMOVE, dest), dest, f"remove rejected {dest}")
                else:
                    _install_file(host, change.before, dest, f"restore previous {dest}")
                raise StepError(f"{target.name}: nginx -t failed with the maintenance snippet installed; put "
                                f"back the previous {dest}, nginx NOT reloaded:\n{output.strip()}",
                                hint=f"fix the nginx config ({test_command(s)}); {dest} must be "
                                "included at server level")
            nginx_reload(host, s, "maintenance snippet")


def _write(host: HostSession, argv: list[str], path: str, summary: str) -> None:
    """One guarded write: refused (both paths named) if `path`'s directory resolves elsewhere on the host."""
    result = host.change(argv, summary, ok=(0, WRITE_GUARD_EXIT))
    if result.exit_code == WRITE_GUARD_EXIT:
        raise written_path_error(host.target.name, "nginx maintenance path", path, result.stderr)


def _install_file(host: HostSession, text: str, dest: str, summary: str) -> None:
    staged = dest + ".indostar-new~"
    _write(host, sh(_MKDIR, dest), dest, f"create {posixpath.dirname(dest)}")
    host.upload(text.encode(), staged, f"stage {staged}", mode=0o644)
    _write(host, sh(_INSTALL, staged, dest), dest, summary)


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
        installed = read_optional(host, s.maintenance_snippet) == render_maintenance(ctx, target)[0]
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
        _write(ctx.host(target), sh(_TOUCH, flag), flag, plan.changes[0].summary)
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
        _write(ctx.host(target), sh(_REMOVE, flag), flag, plan.changes[0].summary)
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
        severity = Severity.OK
        if state.flag_present and not state.snippet_installed:
            problems.append(f"{s.maintenance_snippet} is missing or outdated (run maintenance.on)")
            severity = Severity.WARNING
        if state.probe.url is not None and state.probe.error is None and state.probe.page != state.flag_present:
            problems.append("the site disagrees with the flag")
            severity = Severity.WARNING
        if state.probe.error is not None:  # what users see is unknown: never OK on a probe that did not answer
            problems.append("the site could not be probed, so what users get is unknown (check probe_url, "
                            "probe_host, probe_ca_file)")
            severity = Severity.UNKNOWN
        reason = f"maintenance {mode}: {state.probe.describe()}" + (f"; {'; '.join(problems)}" if problems else "")
        if problems:
            data["problems"] = problems
        return Plan.nothing(reason, severity=severity, data=data)
