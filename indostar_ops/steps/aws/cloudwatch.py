"""CloudWatch: the runbook's metrics, alarms in ALARM, and alarms from the inventory's threshold table.

Runbook "Slow Response Times" (`aws cloudwatch get-metric-statistics ... TargetResponseTime`)
and "Monitoring and Alerts" (`aws cloudwatch describe-alarms --state-value ALARM`, the
"Alert Thresholds" table). `monitor.apply-alarms` creates or updates only alarms named
`<alarm_prefix>-<env>-<metric>-<level>` and tagged as ours; it never deletes an alarm and
never touches one it did not create.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...severity import Severity
from ...step import Change, EnvTarget, Outcome, Plan
from . import AwsStep, our_tags, ours, paginate

if TYPE_CHECKING:
    from ...context import Context
    from ...inventory import Environment

__all__ = ["ApplyAlarms", "MonitorAlarms", "MonitorMetrics", "desired_alarms"]

_MAX_PERIOD_POINTS = 1440


def _lb_dimension(ctx: Context) -> str | None:
    """`app/<name>/<id>`: the LoadBalancer dimension CloudWatch uses for the environment's ALB."""
    if ctx.env.alb is None:
        return None
    lb = ctx.aws().client("elbv2").describe_load_balancers(Names=[ctx.env.alb.load_balancer])["LoadBalancers"][0]
    return str(lb["LoadBalancerArn"]).split(":loadbalancer/", 1)[-1]


def _rds(env: Environment) -> str | None:
    return env.database.rds_instance if env.database else None


class _CwStep(AwsStep[Any]):
    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [EnvTarget(f"{ctx.env.name} CloudWatch", kind="cloudwatch")]


# ---------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    key: str
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    stats: tuple[str, ...]  # Average/Sum/Maximum or p50/p95/p99
    unit: str


def _metrics(ctx: Context, lb: str | None) -> list[Metric]:
    assert ctx.env.aws is not None
    out = []
    if lb:
        d = (("LoadBalancer", lb),)
        out += [Metric("response_time", "AWS/ApplicationELB", "TargetResponseTime", d,
                       ("p50", "p95", "p99", "Average"), "s"),
                Metric("requests", "AWS/ApplicationELB", "RequestCount", d, ("Sum",), "count"),
                Metric("target_5xx", "AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", d, ("Sum",), "count"),
                Metric("elb_5xx", "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", d, ("Sum",), "count")]
    out.append(Metric("app_errors", ctx.env.aws.app_namespace, "Errors", (), ("Sum",), "count"))
    if _rds(ctx.env):
        out.append(Metric("rds_cpu", "AWS/RDS", "CPUUtilization", (("DBInstanceIdentifier", _rds(ctx.env)),),
                          ("Average", "Maximum"), "%"))
    return out


class MonitorMetrics(_CwStep):
    """The runbook's CloudWatch numbers for a time range: ALB p50/p95/p99 and 5XX, app Errors, CPU."""

    name = "monitor.metrics"
    read_only = True
    aws_calls = ("cloudwatch:GetMetricStatistics", "elasticloadbalancing:DescribeLoadBalancers")

    def __init__(self, minutes: int = 180, period: int = 300) -> None:
        self.minutes = minutes
        self.period = period

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        cw = ctx.aws().client("cloudwatch")
        end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        start = end - timedelta(minutes=self.minutes)
        period = max(self.period, 60 * -(-self.minutes // _MAX_PERIOD_POINTS))
        table: dict[str, Any] = {}
        for m in _metrics(ctx, _lb_dimension(ctx)):
            base = {"Namespace": m.namespace, "MetricName": m.name, "StartTime": start, "EndTime": end,
                    "Period": period, "Dimensions": [{"Name": k, "Value": v} for k, v in m.dimensions]}
            plain = [s for s in m.stats if not s.startswith("p")]
            pct = [s for s in m.stats if s.startswith("p")]
            values: dict[str, float | None] = {s: None for s in m.stats}
            points: list[Any] = []
            if plain:
                points += cw.get_metric_statistics(**base, Statistics=plain)["Datapoints"]
            if pct:  # percentiles need ExtendedStatistics (a separate request)
                points += cw.get_metric_statistics(**base, ExtendedStatistics=pct)["Datapoints"]
            for s in m.stats:
                found = [p.get(s, p.get("ExtendedStatistics", {}).get(s)) for p in points]
                found = [v for v in found if v is not None]
                if found:
                    values[s] = round(sum(found), 3) if s == "Sum" else round(max(found), 3)
            table[m.key] = {"metric": f"{m.namespace}/{m.name}", "unit": m.unit, **values}
        return {"from": start.isoformat(), "to": end.isoformat(), "period_s": period, "metrics": table,
                "thresholds": ctx.env.thresholds}

    def plan(self, state: dict[str, Any]) -> Plan:
        state = dict(state)
        return Plan.nothing(**_judge(state, state.pop("thresholds")))


def _judge(state: dict[str, Any], thresholds: Any) -> dict[str, Any]:
    """Reason, severity and data: p95 response time, 5XX rate and CPU against the threshold table."""
    m = state["metrics"]
    severities = []
    parts = []
    rt = m.get("response_time")
    if rt is not None:
        p95 = rt.get("p95") if rt.get("p95") is not None else rt.get("Average")
        label = "p95" if rt.get("p95") is not None else "avg (no percentiles)"
        if p95 is not None:
            parts.append(f"response {label} {p95:.2f} s")
            severities.append(thresholds.response_time_s.evaluate(p95))
        else:
            parts.append("response time: no data")
    if m.get("requests") and m["requests"].get("Sum"):
        errors = (m["target_5xx"].get("Sum") or 0) + (m["elb_5xx"].get("Sum") or 0)
        rate = 100.0 * errors / m["requests"]["Sum"]
        state = {**state, "error_rate_pct": round(rate, 3)}
        parts.append(f"5XX {rate:.2f} % of {m['requests']['Sum']:.0f} requests")
        severities.append(thresholds.error_rate_pct.evaluate(rate))
    if m.get("app_errors"):
        parts.append(f"app errors {m['app_errors'].get('Sum') or 0:.0f}")
    if m.get("rds_cpu") and m["rds_cpu"].get("Average") is not None:
        parts.append(f"RDS CPU avg {m['rds_cpu']['Average']:.0f} %")
        severities.append(thresholds.cpu_pct.evaluate(m["rds_cpu"]["Average"]))
    has_data = any(v is not None for row in m.values() for k, v in row.items() if k not in ("metric", "unit"))
    severity = Severity.worst(severities) if severities else (Severity.OK if has_data else Severity.UNKNOWN)
    return {"reason": ("; ".join(parts) or "no data") + "\n" + _table(m), "severity": severity, "data": state}


def _table(metrics: dict[str, Any]) -> str:
    """The numbers as a small fixed-width table (the console shows it under the summary line)."""
    cols = ["p50", "p95", "p99", "Average", "Maximum", "Sum"]
    rows = [["metric", *cols]]
    for row in metrics.values():
        rows.append([f"{row['metric']} ({row['unit']})",
                     *("-" if row.get(c) is None else f"{row[c]:g}" for c in cols)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols) + 1)]
    return "\n".join("    " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


# ---------------------------------------------------------------- alarms in ALARM


class MonitorAlarms(_CwStep):
    """Alarms currently in ALARM (ours and everyone's): WARNING if only our warning-level ones, else CRITICAL."""

    name = "monitor.alarms"
    read_only = True
    aws_calls = ("cloudwatch:DescribeAlarms",)

    def check(self, ctx: Context, target: EnvTarget) -> list[dict[str, Any]]:
        cw = ctx.aws().client("cloudwatch")
        out = []
        for page in cw.get_paginator("describe_alarms").paginate(StateValue="ALARM",
                                                                   AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
            for alarm in [*page.get("MetricAlarms", ()), *page.get("CompositeAlarms", ())]:
                since = alarm.get("StateUpdatedTimestamp")
                out.append({"name": alarm["AlarmName"], "reason": alarm.get("StateReason"),
                            "since": since.isoformat() if isinstance(since, datetime) else since,
                            "metric": alarm.get("MetricName")})
        return out

    def plan(self, state: list[dict[str, Any]]) -> Plan:
        if not state:
            return Plan.nothing("no alarm in ALARM", severity=Severity.OK, data={"alarms": []})
        only_warnings = all(a["name"].endswith("-warning") for a in state)
        return Plan.nothing(f"{len(state)} alarm(s) in ALARM: {', '.join(a['name'] for a in state)}",
                            severity=Severity.WARNING if only_warnings else Severity.CRITICAL,
                            data={"alarms": state})


# ---------------------------------------------------------------- apply alarms


def desired_alarms(env: Environment, lb: str | None) -> dict[str, dict[str, Any]]:
    """The alarms the threshold table implies, warning and critical, by name (put_metric_alarm arguments)."""
    assert env.aws is not None
    t = env.thresholds
    prefix = f"{env.aws.alarm_prefix}-{env.name}"
    common = {"ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
              "AlarmActions": list(env.aws.alarm_actions), "ActionsEnabled": True}
    specs: list[tuple[str, Any, dict[str, Any]]] = []
    if lb:
        d = [{"Name": "LoadBalancer", "Value": lb}]
        specs.append(("response-time", t.response_time_s, {
            "Namespace": "AWS/ApplicationELB", "MetricName": "TargetResponseTime", "ExtendedStatistic": "p95",
            "Dimensions": d, "Period": 300, "EvaluationPeriods": 3}))
        specs.append(("error-rate", t.error_rate_pct, {"EvaluationPeriods": 3, "Metrics": [
            {"Id": "errors", "MetricStat": {"Metric": {"Namespace": "AWS/ApplicationELB",
                                                       "MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": d},
                                            "Period": 300, "Stat": "Sum"}, "ReturnData": False},
            {"Id": "requests", "MetricStat": {"Metric": {"Namespace": "AWS/ApplicationELB",
                                                         "MetricName": "RequestCount", "Dimensions": d},
                                              "Period": 300, "Stat": "Sum"}, "ReturnData": False},
            {"Id": "rate", "Expression": "100 * errors / requests", "Label": "5XX % of requests",
             "ReturnData": True}]}))
    if _rds(env):
        specs.append(("rds-cpu", t.cpu_pct, {
            "Namespace": "AWS/RDS", "MetricName": "CPUUtilization", "Statistic": "Average",
            "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": _rds(env)}], "Period": 300,
            "EvaluationPeriods": 3}))
    specs.append(("payment-failures", t.payment_failures_per_hour, {
        "Namespace": env.aws.app_namespace, "MetricName": "PaymentFailures", "Statistic": "Sum",
        "Period": 3600, "EvaluationPeriods": 1}))
    out = {}
    for metric, threshold, spec in specs:
        for level in ("warning", "critical"):
            name = f"{prefix}-{metric}-{level}"
            out[name] = {"AlarmName": name, **common, **spec, "Threshold": float(getattr(threshold, level)),
                         "AlarmDescription": f"indostar-ops: runbook alert threshold ({level}) for {metric} in "
                         f"{env.name}"}
    return out


_COMPARED = ("Namespace", "MetricName", "Statistic", "ExtendedStatistic", "Dimensions", "Period",
             "EvaluationPeriods", "Threshold", "ComparisonOperator", "TreatMissingData", "AlarmActions",
             "ActionsEnabled", "Metrics", "AlarmDescription")


def _comparable(alarm: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in _COMPARED:
        value = alarm.get(key)
        if value in (None, [], ""):
            continue
        if key == "Dimensions":
            value = sorted((d["Name"], d["Value"]) for d in value)
        if key == "Threshold":
            value = float(value)
        out[key] = value
    return json.loads(json.dumps(out, sort_keys=True, default=str))


@dataclass(frozen=True)
class AlarmsState:
    desired: dict[str, dict[str, Any]]
    existing: dict[str, dict[str, Any]]  # comparable form, ours only
    foreign: list[str]  # alarms with one of our names but not our tags: left alone


class ApplyAlarms(_CwStep):
    """Create or update the threshold table's CloudWatch alarms (ours only; never deletes any alarm)."""

    name = "monitor.apply-alarms"
    irreversible = "previous alarm definitions are replaced (the plan's diff shows them); nothing is deleted"
    aws_calls = ("cloudwatch:DescribeAlarms", "cloudwatch:ListTagsForResource", "cloudwatch:PutMetricAlarm",
                 "cloudwatch:TagResource", "elasticloadbalancing:DescribeLoadBalancers")

    def check(self, ctx: Context, target: EnvTarget) -> AlarmsState:
        assert ctx.env.aws is not None
        desired = desired_alarms(ctx.env, _lb_dimension(ctx))
        cw = ctx.aws().client("cloudwatch")
        existing, foreign = {}, []
        prefix = f"{ctx.env.aws.alarm_prefix}-{ctx.env.name}-"
        for alarm in paginate(cw, "describe_alarms", "MetricAlarms", AlarmNamePrefix=prefix):
            if alarm["AlarmName"] not in desired:
                continue
            tags = cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"]).get("Tags", [])
            if ours(tags, ctx.env.name):
                existing[alarm["AlarmName"]] = _comparable(alarm)
            else:
                foreign.append(alarm["AlarmName"])
        return AlarmsState(desired, existing, foreign)

    def plan(self, state: AlarmsState) -> Plan:
        changes = []
        for name, spec in state.desired.items():
            if name in state.foreign:
                continue
            want = _comparable(spec)
            have = state.existing.get(name)
            if have == want:
                continue
            diff = None
            if have is not None:
                diff = "\n".join(f"{k}: {have.get(k)!r} -> {want.get(k)!r}" for k in sorted(set(have) | set(want))
                                 if have.get(k) != want.get(k))
            changes.append(Change(f"{'update' if have else 'create'} alarm {name} (> {spec['Threshold']:g})",
                                  before=have, after=want, diff=diff, params={"spec": spec}))
        data = {"alarms": sorted(state.desired), "left_alone": state.foreign}
        note = f"; {len(state.foreign)} alarm(s) with our names but not our tags left alone" if state.foreign else ""
        if not changes:
            return Plan.nothing(f"{len(state.desired) - len(state.foreign)} alarm(s) up to date{note}", data=data)
        return Plan(changes, reason=note.lstrip("; ") or None, data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        from ...step import thaw

        for change in plan.changes:
            spec = thaw(change.params["spec"])
            ctx.aws().call("cloudwatch", "put_metric_alarm", summary=change.summary, **spec,
                           Tags=our_tags(ctx.env.name))
        return Outcome(reason=f"{len(plan.changes)} alarm(s) created or updated")

