"""Maintenance mode through the load balancer (the `alb` strategy of runbook "Planned Maintenance").

`maintenance.alb-on` adds ONE listener rule, tagged as ours, at the highest priority
(`alb.maintenance_priority`, default 1), matching every path, answering a fixed 503
whose body is `templates/maintenance.html.j2` rendered with autoescaping.
`maintenance.alb-off` deletes exactly that rule, found by its tags and deleted by its
ARN. No other rule is ever modified, re-prioritised or deleted: verify re-reads the
listener and fails if any other rule changed. Each returns the other as its undo receipt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import StepError, StepValueError, VerificationFailed
from ...severity import Severity
from ...step import Change, EnvTarget, Outcome, Plan, Receipt
from . import MANAGED_BY, TAG_ENV, TAG_MANAGED, AwsStep, our_tags, paginate, tags_dict

if TYPE_CHECKING:
    from ...context import Context

__all__ = ["AlbMaintenanceOff", "AlbMaintenanceOn", "AlbMaintenanceStatus", "render_page"]

TAG_PURPOSE = "indostar-ops:purpose"
PURPOSE = "maintenance"
MAX_BODY = 1024  # ALB fixed-response MessageBody limit


def render_page(ctx: Context) -> str:
    """The maintenance page for a fixed response: autoescaped, whitespace collapsed, at most 1024 characters."""
    import jinja2

    from ...templates import templates_dir
    from ..nginx import MARKER

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    try:
        page = env.get_template("maintenance.html.j2").render(
            marker=MARKER, window_end=ctx.env.maintenance.window.end, timezone=ctx.env.timezone)
    except jinja2.TemplateError as exc:
        raise StepValueError(f"templates/maintenance.html.j2: {exc}") from None
    page = re.sub(r"\s*\n\s*", "\n", page).strip()
    if len(page) > MAX_BODY:
        raise StepValueError(f"{ctx.env.name}: the maintenance page is {len(page)} characters; an ALB fixed "
                             f"response allows {MAX_BODY}",
                             hint="shorten templates/maintenance.html.j2 (inline style, text)")
    return page


@dataclass(frozen=True)
class ListenerState:
    load_balancer: str
    listener_arn: str
    rules: list[dict[str, Any]]  # every rule: arn, priority, ours, body (ours only)
    page: str
    priority: int  # where our rule goes

    @property
    def ours(self) -> dict[str, Any] | None:
        return next((r for r in self.rules if r["ours"]), None)

    @property
    def others(self) -> list[tuple[str, str]]:
        return sorted((r["arn"], r["priority"]) for r in self.rules if not r["ours"])


class _AlbStep(AwsStep[ListenerState]):
    needs = ("aws", "alb")
    aws_calls = ("elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeListeners",
                 "elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTags")

    def targets(self, ctx: Context) -> list[EnvTarget]:
        alb = ctx.env.alb
        assert alb is not None
        return [EnvTarget(f"{alb.load_balancer}:{alb.listener_port}", kind="alb-listener", id=alb.load_balancer)]

    def check(self, ctx: Context, target: EnvTarget) -> ListenerState:
        alb = ctx.env.alb
        assert alb is not None
        elb = ctx.aws().client("elbv2")
        lb = elb.describe_load_balancers(Names=[alb.load_balancer])["LoadBalancers"][0]
        listeners = list(paginate(elb, "describe_listeners", "Listeners", LoadBalancerArn=lb["LoadBalancerArn"]))
        listener = next((x for x in listeners if x.get("Port") == alb.listener_port), None)
        if listener is None:
            raise StepError(f"ALB {alb.load_balancer}: no listener on port {alb.listener_port} (ports: "
                            f"{', '.join(str(x.get('Port')) for x in listeners) or 'none'})",
                            hint=f"set alb.listener_port in inventory/{ctx.env.name}.yaml")
        rules = list(paginate(elb, "describe_rules", "Rules", ListenerArn=listener["ListenerArn"]))
        arns = [r["RuleArn"] for r in rules if not r.get("IsDefault")]
        tags: dict[str, dict[str, str]] = {}
        for i in range(0, len(arns), 20):
            for desc in elb.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]:
                tags[desc["ResourceArn"]] = tags_dict(desc.get("Tags"))
        out = []
        for rule in rules:
            t = tags.get(rule["RuleArn"], {})
            mine = (t.get(TAG_MANAGED) == MANAGED_BY and t.get(TAG_PURPOSE) == PURPOSE
                    and t.get(TAG_ENV) == ctx.env.name)
            body = None
            if mine:
                fixed = [a.get("FixedResponseConfig", {}) for a in rule.get("Actions", ())
                         if a.get("Type") == "fixed-response"]
                body = fixed[0].get("MessageBody") if fixed else None
            out.append({"arn": rule["RuleArn"], "priority": str(rule.get("Priority")), "ours": mine, "body": body})
        return ListenerState(alb.load_balancer, listener["ListenerArn"], out, render_page(ctx),
                             alb.maintenance_priority)

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        super().verify(ctx, target, plan, outcome)
        now = self.check(ctx, target)
        before = [tuple(x) for x in plan.data["others"]]
        if now.others != before:
            raise VerificationFailed(f"ALB {target}: other listener rules changed during {self.name}",
                                     hint="compare the listener's rules in the console with the run's journal")


def _data(state: ListenerState) -> dict[str, Any]:
    rule = state.ours
    return {"load_balancer": state.load_balancer, "listener": state.listener_arn,
            "maintenance": "on" if rule else "off", "rule": rule["arn"] if rule else None,
            "priority": rule["priority"] if rule else None, "others": state.others}


class AlbMaintenanceOn(_AlbStep):
    """Maintenance on at the ALB: one tagged highest-priority rule answering 503 with the maintenance page."""

    name = "maintenance.alb-on"
    aws_calls = (*_AlbStep.aws_calls, "elasticloadbalancing:CreateRule", "elasticloadbalancing:AddTags")

    def plan(self, state: ListenerState) -> Plan:
        data = _data(state)
        rule = state.ours
        if rule is not None:
            outdated = rule["body"] != state.page
            return Plan.nothing(f"maintenance is already on (rule priority {rule['priority']})"
                                + ("; its page differs from templates/maintenance.html.j2" if outdated else ""),
                                severity=Severity.WARNING if outdated else None, data=data)
        taken = [arn for arn, p in state.others if p == str(state.priority)]
        if taken:
            raise StepError(f"ALB {state.load_balancer}: priority {state.priority} is already used by another rule "
                            f"({taken[0]}); nothing was changed",
                            hint="set alb.maintenance_priority to a free number below the other rules' priorities")
        return Plan([Change(f"add listener rule priority {state.priority}: every path answers 503 with the "
                            "maintenance page", before=None, after="fixed-response 503",
                            params={"page": state.page, "priority": state.priority})], data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        priority = plan.changes[0].params["priority"]
        rule = ctx.aws().call(
            "elbv2", "create_rule", summary=plan.changes[0].summary, journal_params=False,
            ListenerArn=plan.data["listener"], Priority=priority,
            Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/*"]}}],
            Actions=[{"Type": "fixed-response", "FixedResponseConfig": {
                "StatusCode": "503", "ContentType": "text/html", "MessageBody": plan.changes[0].params["page"]}}],
            Tags=our_tags(ctx.env.name, **{TAG_PURPOSE: PURPOSE}))["Rules"][0]
        return Outcome(reason=f"maintenance on: rule priority {priority} answers 503",
                       data={"rule": rule["RuleArn"]},
                       receipt=Receipt("maintenance.alb-off", {}, f"remove the maintenance rule from {target}"))


class AlbMaintenanceOff(_AlbStep):
    """Maintenance off at the ALB: delete exactly our tagged maintenance rule, nothing else."""

    name = "maintenance.alb-off"
    aws_calls = (*_AlbStep.aws_calls, "elasticloadbalancing:DeleteRule")

    def plan(self, state: ListenerState) -> Plan:
        data = _data(state)
        rule = state.ours
        if rule is None:
            return Plan.nothing("maintenance is already off (no maintenance rule on the listener)", data=data)
        return Plan([Change(f"delete the maintenance rule (priority {rule['priority']})", before="fixed-response 503",
                            after=None, params={"arn": rule["arn"]})], data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        ctx.aws().call("elbv2", "delete_rule", summary=plan.changes[0].summary,
                       RuleArn=plan.changes[0].params["arn"])
        return Outcome(reason="maintenance off: the maintenance rule is gone",
                       receipt=Receipt("maintenance.alb-on", {}, f"put the maintenance rule back on {target}"))


class AlbMaintenanceStatus(_AlbStep):
    """Is the ALB maintenance rule present (and its page current)?"""

    name = "maintenance.alb-status"
    read_only = True

    def plan(self, state: ListenerState) -> Plan:
        data = _data(state)
        rule = state.ours
        if rule is None:
            return Plan.nothing(f"maintenance off ({len(state.rules)} listener rule(s), none ours)",
                                severity=Severity.OK, data=data)
        outdated = rule["body"] != state.page
        data["page_current"] = not outdated
        return Plan.nothing(f"maintenance on: rule priority {rule['priority']} answers 503"
                            + ("; its page differs from the template" if outdated else ""),
                            severity=Severity.WARNING if outdated else Severity.OK, data=data)
