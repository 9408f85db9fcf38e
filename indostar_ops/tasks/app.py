"""Runbook "Application Down / 502", "Slow Response Times", "High Error Rate": the application's components.

Works on the platform the inventory names (kubernetes, compose, ecs, or the sandbox's local processes).
"""

from __future__ import annotations

from invoke import task

from ._help import common

_COMPONENT = "component (inventory platform.components), e.g. backend or celery-worker"
_TIMEOUT = "seconds to wait for the rollout (default: platform.rollout_timeout)"


def _timeout(value: str) -> float | None:
    from ..errors import UsageError

    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"--timeout {value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise UsageError(f"--timeout {value!r} must be positive")
    return seconds


def _int(name: str, value: str) -> int | None:
    from ..errors import UsageError

    if value in ("", None):
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--{name} {value!r} is not a whole number") from None


@task(help=common(changes=False, component="only these components, comma-separated (default: all)"))
def status(c, env=None, check=False, json=False, component=""):
    """Instances of each component: ready, restarts, last termination (OOMKilled...), node, age, CPU/memory."""
    from ..cli import run_steps
    from ..steps.app import AppStatus

    chosen = [x for x in component.split(",") if x] or None
    run_steps("app.status", env=env, check=check, json=json, monitoring=True,
              build=lambda _e: [AppStatus(chosen)])


@task(help=common(changes=False, component=_COMPONENT, tail="lines per instance (default 100)",
                  since="only lines newer than this, e.g. 10m, 1h", grep="only lines matching this regex"))
def logs(c, env=None, check=False, json=False, component="backend", tail=100, since="", grep=""):
    """The last lines of a component's logs from every instance (kubectl/docker compose logs --tail)."""
    from ..cli import run_steps
    from ..steps.app import AppLogs

    run_steps("app.logs", env=env, check=check, json=json,
              build=lambda _e: [AppLogs(component, tail=int(tail), since=since or None, grep=grep or None)])


@task(help=common(changes=False, url="URL to probe (default: the inventory's urls.health)",
                  timeout="seconds before giving up (default 10)"))
def health(c, env=None, check=False, json=False, url="", timeout=""):
    """GET the health endpoint: DNS, connect, TLS, first byte and total time against the thresholds."""
    from ..cli import run_steps
    from ..steps.app import AppHealth

    run_steps("app.health", env=env, check=check, json=json, monitoring=True,
              build=lambda _e: [AppHealth(url or None, timeout=_timeout(timeout) or 10.0)])


@task(help=common(component=_COMPONENT, timeout=_TIMEOUT))
def restart(c, env=None, check=False, json=False, yes=False, component="backend", timeout=""):
    """Rolling restart (refuses a paused deployment), wait for the rollout, verify readiness."""
    from ..cli import run_steps
    from ..steps.app import AppRestart

    run_steps("app.restart", env=env, check=check, json=json, yes=yes,
              build=lambda _e: [AppRestart(component, timeout=_timeout(timeout))])


@task(help=common(component=_COMPONENT, replicas="the new replica count",
                  expect="refuse unless the current count is this (what you saw in app.status)",
                  timeout=_TIMEOUT, no_undo_on_failure="keep the new count even if it never becomes ready"))
def scale(c, replicas, env=None, check=False, json=False, yes=False, component="backend", expect="", timeout="",
          no_undo_on_failure=False):
    """Scale a component (compare-and-set with --expect), wait until ready; undone if it never gets ready."""
    from ..cli import run_steps
    from ..steps.app import AppScale

    def build(_e):
        return [AppScale(component, replicas=_int("replicas", replicas), expect=_int("expect", expect),
                         timeout=_timeout(timeout), undo_on_failure=not no_undo_on_failure)]

    run_steps("app.scale", env=env, check=check, json=json, yes=yes, build=build)


@task(help=common(component=_COMPONENT, memory="memory limit, e.g. 4Gi", cpu="CPU limit, e.g. 2000m",
                  request_memory="memory request", request_cpu="CPU request",
                  container="container (default: the one named like the deployment)", timeout=_TIMEOUT))
def resources(c, env=None, check=False, json=False, yes=False, component="backend", memory="", cpu="",
              request_memory="", request_cpu="", container="", timeout=""):
    """Set a component's CPU/memory limits (Kubernetes), show the diff, wait for the rollout."""
    from ..cli import run_steps
    from ..steps.app import AppResources

    run_steps("app.resources", env=env, check=check, json=json, yes=yes, build=lambda _e: [AppResources(
        component, memory=memory or None, cpu=cpu or None, request_memory=request_memory or None,
        request_cpu=request_cpu or None, container=container or None, timeout=_timeout(timeout))])


@task(help=common(component=_COMPONENT, to_revision="roll back to this revision (default: the highest below "
                                                    "the current one)", timeout=_TIMEOUT))
def rollback(c, env=None, check=False, json=False, yes=False, component="backend", to_revision="", timeout=""):
    """Roll back to the previous revision (the highest below the current), showing the image diff; wait, verify."""
    from ..cli import run_steps
    from ..steps.app import AppRollback

    run_steps("app.rollback", env=env, check=check, json=json, yes=yes, build=lambda _e: [AppRollback(
        component, to_revision=_int("to-revision", to_revision), timeout=_timeout(timeout))])
