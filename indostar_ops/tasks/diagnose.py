"""Runbook "Common Issues" 1-7: diagnosis probes -> findings ranked most severe first, each with the next command.

Exit codes are the monitoring ones: 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN (the worst finding).
"""

from __future__ import annotations

from invoke import task

from ._help import common

_HELP = common(changes=False, timeout="seconds each probe may take before it is reported UNKNOWN "
                                      "(default: the inventory's diagnose.probe_timeout_s)",
               only="comma-separated probe names to run (default: all of this issue's)")


def _run(issue: str, env: str | None, check: bool, json: bool, timeout: float | None, only: str) -> None:
    from ..cli import run_steps
    from ..steps.diagnose import Diagnose

    probes = [p for p in only.split(",") if p] or None
    run_steps(f"diagnose.{issue}", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [Diagnose.for_issue(issue, timeout=float(timeout) if timeout else None,
                                                     only=probes)])


@task(name="all", help=_HELP)
def all_(c, env=None, check=False, json=False, timeout=None, only=""):
    """Every diagnosis probe at once (per-probe timeout; a hung probe is UNKNOWN); findings ranked."""
    _run("all", env, check, json, timeout, only)


@task(help=_HELP)
def app_down(c, env=None, check=False, json=False, timeout=None, only=""):
    """Issue 1, Application Down / 502: health endpoint, backend pods, database connection."""
    _run("app-down", env, check, json, timeout, only)


@task(help=_HELP)
def slow(c, env=None, check=False, json=False, timeout=None, only=""):
    """Issue 2, Slow Response Times: slow statements, missing indexes, Redis latency, ALB response time."""
    _run("slow", env, check, json, timeout, only)


@task(help=_HELP)
def payments(c, env=None, check=False, json=False, timeout=None, only=""):
    """Issue 3, Payment Processing Failures: pending payments, Sentry payment errors, Razorpay status."""
    _run("payments", env, check, json, timeout, only)


@task(help=_HELP)
def errors(c, env=None, check=False, json=False, timeout=None, only=""):
    """Issue 4, High Error Rate: Sentry, ALB 5xx rate, providers' status, database connections and locks."""
    _run("errors", env, check, json, timeout, only)


@task(help=_HELP)
def db_pool(c, env=None, check=False, json=False, timeout=None, only=""):
    """Issue 5, Database Connection Pool Exhausted: connections by state vs max_connections, idle, long queries."""
    _run("db-pool", env, check, json, timeout, only)


@task(help=_HELP)
def celery(c, env=None, check=False, json=False, timeout=None, only=""):
    """Issue 6, Celery Workers Not Processing Tasks: queue length, failed tasks, Redis, worker pods."""
    _run("celery", env, check, json, timeout, only)


@task(help=_HELP)
def disk(c, env=None, check=False, json=False, timeout=None, only=""):
    """Issue 7, Out of Disk Space: df on every host vs the thresholds, largest directories when over."""
    _run("disk", env, check, json, timeout, only)
