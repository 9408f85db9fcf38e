"""Runbook "Planned Maintenance": put the site in maintenance mode and take it out again."""

from __future__ import annotations

from invoke import task

from ._help import common

_GROUPS = "comma-separated web host groups (default: web)"


def _groups(value: str) -> list[str]:
    return [g for g in value.split(",") if g] or ["web"]


def _sandbox_nginx(environment) -> None:
    """The sandbox's web host is this machine: its nginx is started on demand, like its moto server."""
    if environment.sandbox is not None:
        from ..sandbox import ensure_nginx

        ensure_nginx(environment)


@task(help=common(groups=_GROUPS))
def on(c, env=None, check=False, json=False, yes=False, groups="web"):
    """Maintenance on: install page + nginx snippet once (nginx -t, reload), create the flag, verify 503 + page."""
    from ..cli import run_steps
    from ..steps.nginx import InstallMaintenancePage, NginxMaintenanceOn, require_nginx_strategy

    def build(environment):
        require_nginx_strategy(environment, _groups(groups))
        _sandbox_nginx(environment)
        return [InstallMaintenancePage(_groups(groups)), NginxMaintenanceOn(_groups(groups))]

    run_steps("maintenance.on", env=env, check=check, json=json, yes=yes, build=build)


@task(help=common(groups=_GROUPS))
def off(c, env=None, check=False, json=False, yes=False, groups="web"):
    """Maintenance off: remove the flag file and verify the upstream answers again (no reload)."""
    from ..cli import run_steps
    from ..steps.nginx import NginxMaintenanceOff, require_nginx_strategy

    def build(environment):
        require_nginx_strategy(environment, _groups(groups))
        _sandbox_nginx(environment)
        return [NginxMaintenanceOff(_groups(groups))]

    run_steps("maintenance.off", env=env, check=check, json=json, yes=yes, build=build)


@task(help=common(changes=False, groups=_GROUPS))
def status(c, env=None, check=False, json=False, groups="web"):
    """Is each web host in maintenance? Flag file, snippet, and what the site answers."""
    from ..cli import run_steps
    from ..steps.nginx import NginxMaintenanceStatus, require_nginx_strategy

    def build(environment):
        require_nginx_strategy(environment, _groups(groups))
        _sandbox_nginx(environment)
        return [NginxMaintenanceStatus(_groups(groups))]

    run_steps("maintenance.status", env=env, check=check, json=json, build=build)
