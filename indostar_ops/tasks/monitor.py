"""Runbook "Monitoring and Alerts" and "Slow Response Times": CloudWatch metrics and alarms."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(changes=False, minutes="time range ending now, in minutes (default 180)",
                  period="seconds per data point (default 300)"))
def metrics(c, env=None, check=False, json=False, minutes=180, period=300):
    """ALB TargetResponseTime p50/p95/p99, 5XX counts, IndoStar/Application Errors, RDS CPU.

    Each statistic is the worst period in the range (Sum: the total over the range); a table on the
    console, every number in --json. Exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN against the inventory's thresholds (p95 response
    time, 5XX rate, CPU); UNKNOWN when there is no data.
    """
    from ..cli import run_steps
    from ..steps.aws.cloudwatch import MonitorMetrics

    run_steps("monitor.metrics", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [MonitorMetrics(int(minutes), int(period))])


@task(help=common(changes=False))
def alarms(c, env=None, check=False, json=False):
    """CloudWatch alarms currently in ALARM; exit 0 none, 1 only our warning-level ones, 2 otherwise."""
    from ..cli import run_steps
    from ..steps.aws.cloudwatch import MonitorAlarms

    run_steps("monitor.alarms", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [MonitorAlarms()])


@task(name="apply-alarms", help=common())
def apply_alarms(c, env=None, check=False, json=False, yes=False):
    """Create/update the alert-threshold table's alarms (warning + critical); ours only, never deletes."""
    from ..cli import run_steps
    from ..steps.aws.cloudwatch import ApplyAlarms

    run_steps("monitor.apply-alarms", env=env, check=check, json=json, yes=yes, build=lambda _env: [ApplyAlarms()])


# -- monitor.check / monitor.report (engineer "diagnose"; indostar_ops/steps/monitor_check.py) ------------------


@task(name="check", help=common(changes=False, timeout="seconds each source may take before its rows are "
                                                       "UNKNOWN (default: diagnose.probe_timeout_s)"))
def check_(c, env=None, check=False, json=False, timeout=None):
    """The runbook's alert-threshold table + business metrics vs live values; exit 0/1/2/3 (Nagios)."""
    from ..cli import run_steps
    from ..steps.monitor_check import MonitorCheck

    run_steps("monitor.check", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [MonitorCheck(timeout=float(timeout) if timeout else None)])


@task(help=common(changes=False, since="period ending now (e.g. 24h, 6h, 7d; default 24h)",
                  out="directory for report.html (SVG charts), data.csv and data.json "
                      "(default ./monitor-report-ENV)"))
def report(c, env=None, check=False, json=False, since="24h", out=None):
    """The monitored values over time: a self-contained HTML page of SVG charts, plus CSV and JSON data."""
    import sys
    from pathlib import Path

    from ..cli import run_steps
    from ..steps.monitor_check import MonitorReport, write_report

    result = run_steps("monitor.report", env=env, check=check, json=json,
                       build=lambda _env: [MonitorReport(since=since)])
    if not result.results or result.results[0].status != "ok":
        return
    target = Path(out or f"monitor-report-{result.env}")
    if check:
        sys.stderr.write(f"check mode: not writing {target}/\n")
        return
    for path in write_report(result.env, result.results[0].data, target):
        sys.stderr.write(f"wrote {path}\n")
