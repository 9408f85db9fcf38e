"""Runbook "Monitoring and Alerts": the alert-threshold table against live values, and the same values over time.

`monitor.check` reads every row of the table (response time, error rate, CPU, memory, disk, payment
failures/hour) and the business metrics the inventory names (read-only SQL) at once, each source under
the diagnose probes' timeout (one slow source is UNKNOWN, never a hung check), and exits like a Nagios
plugin: 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN. `monitor.report --since 24h` gathers the series behind
them (CloudWatch, business SQL per bucket) for a self-contained SVG/HTML chart page plus CSV and JSON.
"""

from __future__ import annotations

import html
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..severity import Severity
from ..step import EnvTarget, Plan, Step
from .diagnose.findings import Finding
from .diagnose.probes import Probe

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import Threshold

__all__ = ["MonitorCheck", "MonitorReport", "render_csv", "render_html", "write_report"]


def _row(metric: str, value: float | None, unit: str, threshold: Threshold | None, source: str,
         why: str | None = None) -> Finding:
    if value is None:
        return Finding(metric, Severity.UNKNOWN, why or "no data", evidence={"value": None, "unit": unit,
                                                                             "source": source})
    sev = threshold.evaluate(value) if threshold is not None else Severity.OK
    value = round(float(value), 3)
    evidence: dict[str, Any] = {"value": value, "unit": unit, "source": source}
    if threshold is not None:
        evidence |= {"warning": threshold.warning, "critical": threshold.critical}
    return Finding(metric, sev, f"{value:g} {unit}".strip() + f" ({source})", evidence=evidence)


def _cloudwatch(ctx: Context) -> list[Finding]:
    t = ctx.env.thresholds
    if ctx.env.aws is None or ctx.env.alb is None:
        why = "no aws/alb section in the inventory"
        return [_row("response_time_s", None, "s", t.response_time_s, "CloudWatch", why),
                _row("error_rate_pct", None, "%", t.error_rate_pct, "CloudWatch", why)]
    from .aws.cloudwatch import MonitorMetrics

    step = MonitorMetrics(minutes=15, period=300)
    data = dict(step.plan(step.check(ctx, EnvTarget(ctx.env.name))).data)
    m = data["metrics"]
    rt = m.get("response_time") or {}
    p95 = rt.get("p95") if rt.get("p95") is not None else rt.get("Average")
    out = [_row("response_time_s", p95, "s", t.response_time_s, "ALB TargetResponseTime p95, 15 min",
                "CloudWatch has no TargetResponseTime for the last 15 min")]
    out.append(_row("error_rate_pct", data.get("error_rate_pct"), "%", t.error_rate_pct,
                    "ALB 5XX / requests, 15 min", "CloudWatch has no RequestCount for the last 15 min"))
    cpu = (m.get("rds_cpu") or {}).get("Average")
    if cpu is not None:
        out.append(_row("rds_cpu_pct", cpu, "%", t.cpu_pct, "RDS CPUUtilization, 15 min"))
    return out


def _host_stats(ctx: Context) -> list[Finding]:
    """CPU (vmstat over 1 s), memory (/proc/meminfo) and disk (df) on every host; the worst host counts."""
    from .disk import DiskCheck

    t = ctx.env.thresholds
    hosts = ctx.env.hosts()
    if not hosts:
        return [_row(k, None, "%", th, "hosts", "no hosts in the inventory")
                for k, th in (("cpu_pct", t.cpu_pct), ("memory_pct", t.memory_pct), ("disk_pct", t.disk_pct))]

    def one(host: Any) -> dict[str, Any]:
        session = ctx.host(host)
        lines = session.read(["vmstat", "1", "2"]).stdout.strip().splitlines()
        header, last = next(ln for ln in lines if ln.split()[:2] == ["r", "b"]).split(), lines[-1].split()
        cpu = 100.0 - float(last[header.index("id")])
        info = dict(line.split(":", 1) for line in session.read(["cat", "/proc/meminfo"]).stdout.splitlines()
                    if ":" in line)
        total, avail = (float(info[k].split()[0]) for k in ("MemTotal", "MemAvailable"))
        step = DiskCheck()
        disk = step.check(ctx, host)
        worst_disk = max((fs.used_pct for fs in disk.filesystems), default=None)
        return {"host": host.name, "cpu": cpu, "memory": 100.0 * (total - avail) / total, "disk": worst_disk}

    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        stats = list(pool.map(one, hosts))
    out = []
    for key, metric, threshold in (("cpu", "cpu_pct", t.cpu_pct), ("memory", "memory_pct", t.memory_pct),
                                   ("disk", "disk_pct", t.disk_pct)):
        measured = [s for s in stats if s[key] is not None]
        if not measured:
            out.append(_row(metric, None, "%", threshold, "hosts"))
            continue
        worst = max(measured, key=lambda s: s[key])
        out.append(_row(metric, worst[key], "%", threshold, f"worst host {worst['host']} of {len(stats)}"))
    return out


def _payments(ctx: Context) -> list[Finding]:
    t = ctx.env.thresholds.payment_failures_per_hour
    if ctx.env.payments is None or ctx.env.database is None:
        return [_row("payment_failures_per_hour", None, "/hour", t, "payments table",
                     "no payments/database section in the inventory")]
    from .payments import payment_counts

    return [_row("payment_failures_per_hour", payment_counts(ctx)["failed_1h"], "/hour", t,
                 "failed payments in the last hour")]


def _business(ctx: Context, name: str) -> list[Finding]:
    from ..inventory import Threshold
    from .diagnose.readonly import fetch_read_only

    metric = ctx.env.business_metrics[name]
    until = datetime.now(UTC)
    rows = fetch_read_only(ctx, metric.sql, {"since": until - timedelta(hours=1), "until": until})
    value = next(iter(rows[0].values()), None) if rows else None
    threshold = (Threshold(warning=metric.warning, critical=metric.critical)
                 if metric.warning is not None and metric.critical is not None else None)
    return [_row(f"business.{name}", float(value) if value is not None else None, metric.unit, threshold,
                 "inventory SQL, last hour", "the query returned no value (no rows in the last hour?)")]


def sources(env: Any) -> list[Probe]:
    probes = [Probe("cloudwatch", (), _cloudwatch, "ALB response time and error rate"),
              Probe("hosts", (), _host_stats, "CPU, memory and disk on every host"),
              Probe("payments", (), _payments, "failed payments in the last hour")]
    probes += [Probe(f"business.{name}", (), lambda c, n=name: _business(c, n), f"business metric {name}")
               for name in env.business_metrics]
    return probes


_EXPECTED = {"cloudwatch": ["response_time_s", "error_rate_pct"], "hosts": ["cpu_pct", "memory_pct", "disk_pct"],
             "payments": ["payment_failures_per_hour"]}


@dataclass
class CheckState:
    rows: list[Finding]


class MonitorCheck(Step[CheckState]):
    """The runbook's alert-threshold table and business metrics vs live values; 0/1/2/3 like Nagios."""

    name = "monitor.check"
    scope = "env"
    read_only = True

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout

    def check(self, ctx: Context, target: EnvTarget) -> CheckState:
        from .diagnose import run_probes

        if ctx.env.sandbox is not None:
            from ..sandbox_services import ensure

            ensure(ctx.env)
        timeout = self.timeout or ctx.env.diagnose.probe_timeout_s
        found, _timings = run_probes(ctx, sources(ctx.env), timeout)
        rows = []
        for f in found:  # a failed/hung source: one UNKNOWN row per metric it would have given
            if f.probe in _EXPECTED and f.severity == Severity.UNKNOWN and not f.evidence.get("unit"):
                rows += [Finding(m, Severity.UNKNOWN, f.summary, evidence={"value": None})
                         for m in _EXPECTED[f.probe]]
            elif f.probe.startswith("business.") and f.severity == Severity.UNKNOWN and "unit" not in f.evidence:
                rows.append(Finding(f.probe, Severity.UNKNOWN, f.summary, evidence={"value": None}))
            else:
                rows.append(f)
        order = {m: i for i, m in enumerate(m for ms in _EXPECTED.values() for m in ms)}
        rows.sort(key=lambda r: (order.get(r.probe, len(order)), r.probe))
        return CheckState(rows)

    def plan(self, state: CheckState) -> Plan:
        rows = state.rows
        severity = Severity.worst([r.severity for r in rows]) if rows else Severity.UNKNOWN
        table = [{"metric": r.probe, "severity": r.severity.name, **r.evidence, "detail": r.summary} for r in rows]
        counts = {s.name: sum(1 for r in rows if r.severity == s) for s in Severity}
        head = f"{severity.name}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        lines = [f"  {r.severity.name:<8} {r.probe:<28} {r.summary}" for r in rows]
        return Plan.nothing("\n".join([head, *lines]), severity=severity, data={"metrics": table, "counts": counts})


# ---------------------------------------------------------------- monitor.report


def _buckets(since: timedelta, now: datetime) -> list[tuple[datetime, datetime]]:
    step = timedelta(hours=1) if since > timedelta(hours=6) else timedelta(minutes=15)
    start = now - since
    out = []
    while start < now:
        out.append((start, min(start + step, now)))
        start += step
    return out


def _series_cloudwatch(ctx: Context, since: timedelta, now: datetime) -> dict[str, Any]:
    if ctx.env.aws is None or ctx.env.alb is None:
        return {}
    from .aws.cloudwatch import _lb_dimension

    lb = _lb_dimension(ctx)
    cw = ctx.aws().client("cloudwatch")
    period = 3600 if since > timedelta(hours=6) else 300
    out: dict[str, Any] = {}
    t = ctx.env.thresholds
    base = {"Namespace": "AWS/ApplicationELB", "Dimensions": [{"Name": "LoadBalancer", "Value": lb}],
            "StartTime": now - since, "EndTime": now, "Period": period}
    rt = cw.get_metric_statistics(MetricName="TargetResponseTime", Statistics=["Average"], **base)["Datapoints"]
    out["response_time_s"] = {"unit": "s", "warning": t.response_time_s.warning,
                              "critical": t.response_time_s.critical,
                              "points": sorted([p["Timestamp"].isoformat(), round(float(p["Average"]), 4)]
                                               for p in rt)}
    req = {p["Timestamp"]: float(p["Sum"]) for p in cw.get_metric_statistics(
        MetricName="RequestCount", Statistics=["Sum"], **base)["Datapoints"]}
    err = {p["Timestamp"]: float(p["Sum"]) for p in cw.get_metric_statistics(
        MetricName="HTTPCode_Target_5XX_Count", Statistics=["Sum"], **base)["Datapoints"]}
    out["error_rate_pct"] = {"unit": "%", "warning": t.error_rate_pct.warning, "critical": t.error_rate_pct.critical,
                             "points": sorted([ts.isoformat(), round(100.0 * err.get(ts, 0.0) / n, 3)]
                                              for ts, n in req.items() if n)}
    return out


def _series_sql(ctx: Context, since: timedelta, now: datetime) -> dict[str, Any]:
    from .diagnose.readonly import fetch_read_only

    out: dict[str, Any] = {}
    buckets = _buckets(since, now)
    if ctx.env.payments is not None and ctx.env.database is not None:
        from psycopg import sql

        p = ctx.env.payments
        rows = ctx.postgres().fetch(sql.SQL(
            "SELECT b.start, count(x.*) AS failed FROM unnest(%s::timestamptz[]) AS b(start) LEFT JOIN {} x "
            "ON x.status = 'failed' AND x.created_at >= b.start AND x.created_at < b.start + %s::interval "
            "GROUP BY b.start ORDER BY b.start").format(sql.Identifier(p.schema, p.table)),
            ([b[0] for b in buckets], buckets[0][1] - buckets[0][0]))
        hours = (buckets[0][1] - buckets[0][0]).total_seconds() / 3600
        t = ctx.env.thresholds.payment_failures_per_hour
        out["payment_failures_per_hour"] = {"unit": "/hour", "warning": t.warning, "critical": t.critical,
                                            "points": [[r["start"].isoformat(), round(r["failed"] / hours, 2)]
                                                       for r in rows]}
    for name, metric in ctx.env.business_metrics.items():
        points = []
        for start, end in buckets:
            rows = fetch_read_only(ctx, metric.sql, {"since": start, "until": end})
            value = next(iter(rows[0].values()), None) if rows else None
            points.append([start.isoformat(), float(value) if value is not None else None])
        out[f"business.{name}"] = {"unit": metric.unit, "warning": metric.warning, "critical": metric.critical,
                                   "points": points}
    return out


@dataclass
class ReportState:
    since: str
    generated: str
    series: dict[str, Any]
    errors: dict[str, str]


class MonitorReport(Step[ReportState]):
    """The monitored values over a period (CloudWatch series, business SQL per hour) for a chart page."""

    name = "monitor.report"
    scope = "env"
    read_only = True

    def __init__(self, since: str = "24h") -> None:
        self.since = since

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        from ..units import parse_age

        if parse_age(self.since) > 14 * 86400:
            raise UsageError("--since is at most 14d")

    def check(self, ctx: Context, target: EnvTarget) -> ReportState:
        from ..units import parse_age
        from .diagnose import run_probes

        if ctx.env.sandbox is not None:
            from ..sandbox_services import ensure

            ensure(ctx.env)
        since = timedelta(seconds=parse_age(self.since))
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        series: dict[str, Any] = {}
        errors: dict[str, str] = {}
        gathered: dict[str, Any] = {}

        def collect(name: str, fn: Any) -> Any:
            def run(c: Context) -> list[Finding]:
                gathered[name] = fn(c, since, now)
                return []
            return Probe(name, (), run, name)

        found, _ = run_probes(ctx, [collect("cloudwatch", _series_cloudwatch), collect("sql", _series_sql)],
                              ctx.env.diagnose.probe_timeout_s * 6)
        for f in found:
            errors[f.probe] = f.summary
        for part in ("cloudwatch", "sql"):
            series.update(gathered.get(part) or {})
        return ReportState(self.since, now.isoformat(), series, errors)

    def plan(self, state: ReportState) -> Plan:
        lines = [f"{len(state.series)} series over the last {state.since}"]
        for name, s in state.series.items():
            values = [v for _t, v in s["points"] if v is not None]
            if values:
                lines.append(f"  {name:<32} last {values[-1]:g} {s['unit']}, min {min(values):g}, "
                             f"max {max(values):g} ({len(values)} points)")
            else:
                lines.append(f"  {name:<32} no data")
        lines += [f"  UNAVAILABLE {k}: {v}" for k, v in state.errors.items()]
        return Plan.nothing("\n".join(lines), data={"since": state.since, "generated": state.generated,
                                                    "series": state.series, "errors": state.errors})


def render_csv(data: dict[str, Any]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["series", "time", "value", "unit"])
    for name, s in data["series"].items():
        for t, v in s["points"]:
            writer.writerow([name, t, "" if v is None else v, s["unit"]])
    return out.getvalue()


def _svg(name: str, s: dict[str, Any], width: int = 640, height: int = 180) -> str:
    """One small line chart: the series, dashed warning/critical lines, min/max labels. Text is escaped."""
    pad_l, pad_r, pad_t, pad_b = 56, 12, 24, 28
    pts = [(datetime.fromisoformat(t), v) for t, v in s["points"] if v is not None]
    limits = [x for x in (s.get("warning"), s.get("critical")) if x is not None]
    title = html.escape(f"{name} ({s['unit']})" if s["unit"] else name)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{title}"><rect width="100%" height="100%" fill="#fff" stroke="#ddd"/>',
             f'<text x="{pad_l}" y="16" font-size="13" font-family="sans-serif" font-weight="bold">{title}</text>']
    if not pts:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="12" '
                     'font-family="sans-serif" fill="#888">no data</text></svg>')
        return "".join(parts)
    values = [v for _t, v in pts] + limits
    lo, hi = min(0.0, min(values)), max(values) or 1.0
    t0, t1 = pts[0][0].timestamp(), pts[-1][0].timestamp()
    span = (t1 - t0) or 1.0

    def x(t: datetime) -> float:
        return pad_l + (t.timestamp() - t0) / span * (width - pad_l - pad_r)

    def y(v: float) -> float:
        return pad_t + (1 - (v - lo) / ((hi - lo) or 1.0)) * (height - pad_t - pad_b)

    for limit, color in ((s.get("warning"), "#e69500"), (s.get("critical"), "#d00")):
        if limit is not None:
            parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
                         f'stroke="{color}" stroke-dasharray="4 3"/>')
    line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
    parts.append(f'<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{line}"/>')
    parts += [f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2" fill="#1f6feb"/>' for t, v in pts]
    for v in (lo, hi):
        parts.append(f'<text x="{pad_l - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10" '
                     f'font-family="sans-serif">{v:g}</text>')
    for t, anchor in ((pts[0][0], "start"), (pts[-1][0], "end")):
        parts.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="10" '
                     f'font-family="sans-serif">{t.strftime("%m-%d %H:%M")} UTC</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(env: str, data: dict[str, Any]) -> str:
    charts = "\n".join(f"<figure>{_svg(name, s)}</figure>" for name, s in data["series"].items())
    missing = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in data["errors"].items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(env)}: monitoring, last "
            f"{html.escape(data['since'])}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "figure{margin:0 0 1em 0}</style></head><body>"
            f"<h1>{html.escape(env)}: monitoring, last {html.escape(data['since'])}</h1>"
            f"<p>Generated {html.escape(data['generated'])}. Dashed lines: warning (orange) and critical (red) "
            "thresholds from the inventory. Data: data.csv, data.json.</p>"
            + (f"<p>Unavailable:</p><ul>{missing}</ul>" if missing else "") + charts + "</body></html>\n")


def write_report(env: str, data: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"report.html": render_html(env, data), "data.csv": render_csv(data),
             "data.json": json.dumps(data, indent=2, default=str) + "\n"}
    written = []
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written
