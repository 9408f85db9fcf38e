"""Runbook "Celery Workers Not Processing Tasks": status, restart, scale, retry failed tasks, purge one queue."""

from __future__ import annotations

from invoke import task

from ._help import common
from ._help import float_flag as _float
from ._help import int_flag as _int


@task(help=common(changes=False, interval="seconds between the two queue-length samples (default 2)"))
def status(c, env=None, check=False, json=False, interval=2.0):
    """Workers, queue lengths (LLEN), failed tasks; WARNING if a queue grows while workers are ready. Exit 0/1/2/3."""
    from ..cli import run_steps
    from ..steps.celery import CeleryStatus

    run_steps("celery.status", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [CeleryStatus(interval=_float(interval, "--interval") or 0.0)])


@task(help=common(timeout="seconds to wait for the rollout (default: platform.rollout_timeout)"))
def restart(c, env=None, check=False, json=False, yes=False, timeout=None):
    """Rolling restart of the Celery workers; waits until they are ready again."""
    from ..cli import run_steps
    from ..steps.celery import CeleryRestart

    run_steps("celery.restart", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [CeleryRestart(timeout=_float(timeout, "--timeout"))])


@task(help=common(replicas="worker count wanted (required)",
                  expect="refuse unless the current count is this (compare-and-set)",
                  timeout="seconds to wait until they are ready (default: platform.rollout_timeout)"))
def scale(c, replicas=None, env=None, check=False, json=False, yes=False, expect=None, timeout=None):
    """Scale the Celery workers to N; waits until ready; undone to the recorded count if it does not finish."""
    from ..cli import run_steps
    from ..steps.celery import CeleryScale

    def build(_env):
        count = _int(replicas, "--replicas")
        if count is None:
            from ..errors import UsageError

            raise UsageError("celery.scale needs --replicas N", hint="see the current count with invoke celery.status")
        return [CeleryScale(count, expect=_int(expect, "--expect"), timeout=_float(timeout, "--timeout"))]

    run_steps("celery.scale", env=env, check=check, json=json, yes=yes, build=build)


@task(name="retry-failed",
      help=common(limit="re-queue at most this many failed tasks (oldest first)",
                  task="only failed tasks of this task name, e.g. demo.send_mail"))
def retry_failed(c, env=None, check=False, json=False, yes=False, limit=None, task=None):
    """Re-queue the failed tasks recorded in redis.failed_queue, previewed per task name. Never a purge."""
    from ..cli import run_steps
    from ..steps.celery import CeleryRetryFailed

    run_steps("celery.retry-failed", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [CeleryRetryFailed(limit=_int(limit, "--limit"), task=task)])


@task(help=common(queue="the one queue whose messages are deleted (required; a name from redis.queues)"))
def purge(c, queue="", env=None, check=False, json=False, yes=False):
    """DELETE every message queued in one named queue: preview with --check, then --yes (on every tier)."""
    from ..cli import run_steps
    from ..steps.celery import CeleryPurge

    run_steps("celery.purge", env=env, check=check, json=json, yes=yes, build=lambda _env: [CeleryPurge(queue)])
