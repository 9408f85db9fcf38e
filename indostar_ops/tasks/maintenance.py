"""Runbook "Planned Maintenance": put the site in maintenance mode and take it out again."""

from __future__ import annotations

from invoke import task

from ._help import common

_GROUPS = "comma-separated web host groups (default: web)"
_STRATEGY = "nginx or alb (default: the inventory's maintenance.strategy)"


def _groups(value: str) -> list[str]:
    return [g for g in value.split(",") if g] or ["web"]


def _alb(environment, strategy: str) -> bool:
    """The inventory's maintenance.strategy (or --strategy) picks the ALB rule instead of nginx."""
    if strategy not in ("", "nginx", "alb"):
        from ..errors import UsageError

        raise UsageError(f"--strategy {strategy!r}: use nginx or alb")
    return (strategy or environment.maintenance.strategy) == "alb"


def _sandbox_nginx(environment) -> None:
    """The sandbox's web host is this machine: its nginx is started on demand, like its moto server."""
    if environment.sandbox is not None:
        from ..sandbox import ensure_nginx

        ensure_nginx(environment)


@task(help=common(groups=_GROUPS, strategy=_STRATEGY))
def on(c, env=None, check=False, json=False, yes=False, groups="web", strategy=""):
    """Maintenance on: install page + nginx snippet once (nginx -t, reload), create the flag, verify 503 + page."""
    from ..cli import run_steps
    from ..steps.nginx import InstallMaintenancePage, NginxMaintenanceOn, require_nginx_strategy

    def build(environment):
        if _alb(environment, strategy):
            from ..steps.aws.alb import AlbMaintenanceOn

            return [AlbMaintenanceOn()]
        require_nginx_strategy(environment, _groups(groups))
        _sandbox_nginx(environment)
        return [InstallMaintenancePage(_groups(groups)), NginxMaintenanceOn(_groups(groups))]

    run_steps("maintenance.on", env=env, check=check, json=json, yes=yes, build=build)


@task(help=common(groups=_GROUPS, strategy=_STRATEGY))
def off(c, env=None, check=False, json=False, yes=False, groups="web", strategy=""):
    """Maintenance off: remove the flag file and verify the upstream answers again (no reload)."""
    from ..cli import run_steps
    from ..steps.nginx import NginxMaintenanceOff, require_nginx_strategy

    def build(environment):
        if _alb(environment, strategy):
            from ..steps.aws.alb import AlbMaintenanceOff

            return [AlbMaintenanceOff()]
        require_nginx_strategy(environment, _groups(groups))
        _sandbox_nginx(environment)
        return [NginxMaintenanceOff(_groups(groups))]

    run_steps("maintenance.off", env=env, check=check, json=json, yes=yes, build=build)


@task(help=common(changes=False, groups=_GROUPS, strategy=_STRATEGY))
def status(c, env=None, check=False, json=False, groups="web", strategy=""):
    """In maintenance? Flag, snippet, what the site answers; exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN."""
    from ..cli import run_steps
    from ..steps.nginx import NginxMaintenanceStatus, require_nginx_strategy

    def build(environment):
        if _alb(environment, strategy):
            from ..steps.aws.alb import AlbMaintenanceStatus

            return [AlbMaintenanceStatus()]
        require_nginx_strategy(environment, _groups(groups))
        _sandbox_nginx(environment)
        return [NginxMaintenanceStatus(_groups(groups))]

    from ..window import window_lines

    run_steps("maintenance.status", env=env, check=check, json=json, build=build, monitoring=True,
              annotate=window_lines, report=_print_notes)


def _sandbox_app(environment) -> None:
    """The sandbox's health URL is its demo app (platform kind local): started on first use, like its nginx."""
    platform = environment.platform
    if getattr(platform, "kind", None) != "local":
        return
    from pathlib import Path

    from ..platform.local import provision, resume

    if (Path(platform.root) / "state.json").is_file():
        resume(environment, platform)
    else:
        provision(environment, platform)


def _print_notes(result, environment) -> None:
    for note in result.notes:
        print(note)


def _names(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


@task(help=common(
    force_window="run outside the environment's maintenance window (an emergency)",
    resume="continue run RUN_ID: finished steps are re-checked and skipped, never repeated",
    only="comma-separated steps or tags of the execute phase to run (others skipped)",
    skip="comma-separated steps or tags of the execute phase to leave out",
    break_lock="take over a STALE lock (its run is gone); shows what it breaks",
    deadline="end earlier than the window: HH:MM (environment's timezone) or +45m",
    serial="host steps: this many hosts (or N%) at a time",
    max_fail_percent="host steps: stop the remaining batches once more than this % of hosts failed",
    playbook="the window's playbook (default maintenance-window)"))
def window(c, env=None, check=False, json=False, yes=False, force_window=False, resume="", only="", skip="",
           break_lock=False, deadline="", serial="", max_fail_percent="", playbook="maintenance-window"):
    """The planned-maintenance window: preflight, backup, enter, execute, verify; then always (off, notify, unlock)."""
    from ..cli import run_steps
    from ..window import (
        TASK,
        WindowOptions,
        batch_options,
        lock_factory,
        print_window_report,
        window_deadline,
        window_lines,
        window_sections,
    )

    options = WindowOptions(force_window=force_window, break_lock=break_lock, deadline=deadline, playbook=playbook)

    def build(environment):
        _sandbox_nginx(environment)
        if environment.sandbox is not None and not check:
            from ..sandbox_services import ensure  # the sandbox's fake outside services

            ensure(environment)
            _sandbox_app(environment)
        return window_sections(environment, _names(only), _names(skip), options)

    def runner(environment):
        from datetime import timedelta

        settings = {"resume": resume or None, "deadline": window_deadline(environment, options),
                    "margin": timedelta(minutes=environment.maintenance.margin_minutes),
                    "lock": lock_factory(environment, options)}
        settings.update(batch_options(serial, max_fail_percent))
        return settings

    run_steps(TASK, env=env, check=check, json=json, yes=yes, build=build, runner=runner,
              report=print_window_report, annotate=window_lines if check else None)


@task(help=common(at="start of the window: 'YYYY-MM-DD HH:MM' in the environment's timezone",
                  duration="how long: 2h, 90m, 1h30m", details="one line for users (optional)"))
def announce(c, at, duration="2h", env=None, check=False, json=False, yes=False, details=""):
    """Post the scheduled-maintenance notice (status page + chat + outbox) and record it for the 24 h check."""
    from ..cli import run_steps
    from ..steps.window import Announce

    run_steps("maintenance.announce", env=env, check=check, json=json, yes=yes,
              build=lambda _environment: [Announce(at, duration, details)])
