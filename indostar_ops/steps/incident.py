"""Runbook "Incident Response": open, update, resolve, escalate, list, post-mortem.

Records live in the environment's incident store (`indostar_ops.incidents`). Messages are the
runbook's Communication Templates (`templates/notify/incident_*.txt.j2`), posted through the
shared `Notifier` (status page, chat, sandbox outbox; each delivery tried twice, never fatal).
Every step is idempotent: opening the same title twice finds the open incident, an update that
changes nothing posts nothing, an escalation level is notified once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..incidents import LEVELS, STATUSES, escalation_due, now_iso, parse_ts, schedule, store_for
from ..step import Change, EnvTarget, Outcome, Plan, Step

if TYPE_CHECKING:
    from ..context import Context

__all__ = ["IncidentEscalate", "IncidentList", "IncidentOpen", "IncidentPostmortem", "IncidentResolve",
           "IncidentUpdate"]

_NOTIFIED = "messages already posted to the status page and chat cannot be unsent"


def _post(ctx: Context, incident: dict[str, Any], template: str, status: str, **words: Any) -> list[dict[str, Any]]:
    """Render the runbook template and send it everywhere the environment configures."""
    from ..notify import Notifier, slack_escape

    notifier = Notifier(ctx)
    text = notifier.render(f"incident_{template}", **{"title": incident["title"], **words})
    deliveries = []
    settings = ctx.env.notifications
    if settings.status_page is not None and template != "escalation":
        fields = {"status": status, "body": text}
        if incident.get("statuspage_id"):
            path, method = f"incidents/{incident['statuspage_id']}", "PATCH"
        else:
            path, method = "incidents", "POST"
            fields["name"] = incident["title"]
            fields["impact_override"] = {"P0": "critical", "P1": "major", "P2": "minor"}.get(incident["severity"],
                                                                                           "none")
        delivery = notifier._twice("status_page", lambda: notifier._statuspage(
            method, path, {"incident": fields}, f"status page: {incident['id']} {status}")[1])
        if delivery.ok and delivery.data.get("id") and not incident.get("statuspage_id"):
            incident["statuspage_id"] = str(delivery.data["id"])
        deliveries.append(delivery)
    if settings.chat is not None:
        deliveries.append(notifier._chat(f"[{incident['severity']}] {incident['id']}: "
                                         + slack_escape(text)))
    if settings.outbox:
        deliveries.append(notifier._outbox(f"incident_{template}", text, incident=incident["id"]))
    return [{"channel": d.channel, "ok": d.ok, "detail": d.detail} for d in deliveries]


def _event(incident: dict[str, Any], ctx: Context, status: str, message: str, **extra: Any) -> None:
    incident.setdefault("events", []).append({"at": now_iso(), "by": ctx.user, "status": status,
                                              "message": message, **extra})


@dataclass
class StoreState:
    incidents: list[dict[str, Any]]
    where: str
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    extra: dict[str, Any] = field(default_factory=dict)


class _IncidentStep(Step[StoreState]):
    scope = "env"
    irreversible = _NOTIFIED

    def check(self, ctx: Context, target: EnvTarget) -> StoreState:
        store = store_for(ctx)
        return StoreState(store.all(), store.where)

    @staticmethod
    def find(state: StoreState, incident_id: str) -> dict[str, Any]:
        for incident in state.incidents:
            if incident["id"] == incident_id:
                return incident
        raise UsageError(f"no incident {incident_id!r} in {state.where}", hint="invoke incident.list --all")


class IncidentOpen(_IncidentStep):
    """Record an incident (severity, response target, who acknowledged) and post the 'Investigating' message."""

    name = "incident.open"

    def __init__(self, severity: str, title: str, ack: str | None = None) -> None:
        self.severity = severity
        self.title = title
        self.ack = ack

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        if self.severity not in LEVELS:
            raise UsageError(f"--severity {self.severity!r} is not a runbook level", hint="P0, P1, P2 or P3")
        if not self.title.strip() or len(self.title) > 200:
            raise UsageError("--title is required (at most 200 characters): what users see is broken")

    def plan(self, state: StoreState) -> Plan:
        for incident in state.incidents:
            if incident["title"] == self.title.strip() and incident["status"] != "resolved":
                return Plan.nothing(f"{incident['id']} ({incident['severity']}, {incident['status']}) is already open "
                                    f"for {self.title!r}", data={"incident": incident})
        level = LEVELS[self.severity]
        return Plan([Change(f"open {self.severity} ({level['name']}, respond within {level['response']}) incident "
                            f"{self.title.strip()!r} and post 'Investigating' to the status page and chat",
                            after={"severity": self.severity, "title": self.title.strip(), "status": "investigating"})])

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        store = store_for(ctx)
        level = LEVELS[self.severity]
        opened = now_iso()
        incident: dict[str, Any] = {
            "id": store.next_id(), "env": ctx.env.name, "severity": self.severity, "title": self.title.strip(),
            "status": "investigating", "opened_at": opened, "opened_by": ctx.user,
            "acknowledged_by": self.ack or ctx.user, "acknowledged_at": opened,
            "response_target": level["response"], "response_minutes": level["response_minutes"],
            "cause": None, "eta": None, "resolved_at": None, "events": [], "escalations": [],
        }
        _event(incident, ctx, "investigating", f"opened and acknowledged by {incident['acknowledged_by']}")
        incident["events"][-1]["deliveries"] = _post(ctx, incident, "investigating", "investigating")
        store.save(incident, f"record incident {incident['id']}")
        plan_ = schedule(ctx, incident)
        lines = [f"  {s['at']}  level {s['level']}: {s['who']} (after {s['after_minutes']} min)" for s in plan_]
        return Outcome(reason=f"opened {incident['id']} ({self.severity}: respond within {level['response']}); "
                              "escalation if unresolved:\n" + "\n".join(lines),
                       data={"incident": incident, "escalation": plan_})


class IncidentUpdate(_IncidentStep):
    """Record progress (status, cause, ETA) and post the runbook's 'Progress Update'."""

    name = "incident.update"

    def __init__(self, incident: str, status: str | None = None, cause: str | None = None, eta: str | None = None,
                 message: str | None = None) -> None:
        self.incident = incident
        self.status = status
        self.cause = cause
        self.eta = eta
        self.message = message

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        if self.status is not None and self.status not in STATUSES[:-1]:
            raise UsageError(f"--status {self.status!r} is not one of investigating, identified, monitoring",
                             hint="to close it: invoke incident.resolve")
        if self.status == "identified" and not self.cause:
            raise UsageError("--status identified needs --cause (the runbook's Progress Update names it)")
        if not any((self.status, self.cause, self.eta, self.message)):
            raise UsageError("nothing to update", hint="give --status, --cause, --eta or --message")

    def plan(self, state: StoreState) -> Plan:
        incident = self.find(state, self.incident)
        if incident["status"] == "resolved":
            raise UsageError(f"{self.incident} is resolved", hint="open a new incident")
        wanted = {"status": self.status or incident["status"], "cause": self.cause or incident.get("cause"),
                  "eta": self.eta or incident.get("eta")}
        current = {k: incident.get(k) for k in wanted}
        last_message = (incident.get("events") or [{}])[-1].get("note")
        if wanted == current and (not self.message or self.message == last_message):
            return Plan.nothing(f"{self.incident} already says {current}", data={"incident": incident})
        return Plan([Change(f"update {self.incident}: " + ", ".join(f"{k} {v}" for k, v in wanted.items() if v),
                            before=current, after=wanted)])

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        store = store_for(ctx)
        incident = store.get(self.incident)
        change = plan.changes[0]
        incident.update({k: v for k, v in dict(change.after).items()})
        template = {"identified": "identified", "monitoring": "monitoring"}.get(incident["status"], "identified")
        if template == "identified" and not incident.get("cause"):
            template = "investigating"
        _event(incident, ctx, incident["status"], change.summary, note=self.message)
        incident["events"][-1]["deliveries"] = _post(
            ctx, incident, template, incident["status"], cause=incident.get("cause") or "",
            eta=incident.get("eta") or "unknown", message=self.message or "")
        store.save(incident, f"update incident {incident['id']}")
        return Outcome(reason=change.summary, data={"incident": incident})


class IncidentResolve(_IncidentStep):
    """Close an incident and post the runbook's 'Resolution' message."""

    name = "incident.resolve"

    def __init__(self, incident: str, message: str | None = None) -> None:
        self.incident = incident
        self.message = message

    def plan(self, state: StoreState) -> Plan:
        incident = self.find(state, self.incident)
        if incident["status"] == "resolved":
            return Plan.nothing(f"{self.incident} was resolved at {incident['resolved_at']}",
                                data={"incident": incident})
        return Plan([Change(f"resolve {self.incident} ({incident['title']}) and post the resolution message",
                            before=incident["status"], after="resolved")])

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        store = store_for(ctx)
        incident = store.get(self.incident)
        incident["status"] = "resolved"
        incident["resolved_at"] = now_iso()
        minutes = (parse_ts(incident["resolved_at"]) - parse_ts(incident["opened_at"])).total_seconds() / 60
        incident["duration_minutes"] = round(minutes, 1)
        _event(incident, ctx, "resolved", self.message or "resolved", note=self.message)
        incident["events"][-1]["deliveries"] = _post(ctx, incident, "resolved", "resolved")
        store.save(incident, f"resolve incident {incident['id']}")
        return Outcome(reason=f"resolved {incident['id']} after {minutes:.0f} min; next: invoke incident.postmortem "
                              f"{incident['id']} --env {ctx.env.name}", data={"incident": incident})


class IncidentEscalate(_IncidentStep):
    """Escalation levels now due for open incidents (runbook: 15 min, 30 min, 1 h, 2 h); notify each once."""

    name = "incident.escalate"

    def __init__(self, incident: str | None = None) -> None:
        self.incident = incident

    def check(self, ctx: Context, target: EnvTarget) -> StoreState:
        state = super().check(ctx, target)
        chosen = [self.find(state, self.incident)] if self.incident else \
            [i for i in state.incidents if i["status"] != "resolved"]
        state.extra = {"due": {i["id"]: escalation_due(ctx, i, state.now) for i in chosen},
                       "schedule": {i["id"]: schedule(ctx, i) for i in chosen}}
        return state

    def plan(self, state: StoreState) -> Plan:
        due, sched = state.extra["due"], state.extra["schedule"]
        changes = [Change(f"{iid}: escalate to {d['who']} (level {d['level']}, due at {d['due_at']})",
                          params={"incident": iid, **d}) for iid, levels in due.items() for d in levels]
        upcoming = {iid: next((s for s in sched[iid] if parse_ts(s["at"]) > state.now), None) for iid in sched}
        data = {"due": due, "next": upcoming}
        if not changes:
            nxt = [f"{iid}: {u['who']} at {u['at']}" for iid, u in upcoming.items() if u]
            return Plan.nothing("nothing to escalate now" + (" (next: " + "; ".join(nxt) + ")" if nxt else
                                                             "" if due else ": no open incident"), data=data)
        return Plan(changes=tuple(changes), data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        store = store_for(ctx)
        done = []
        for change in plan.changes:
            p = change.params
            incident = store.get(str(p["incident"]))
            if int(p["level"]) in {e["level"] for e in incident.get("escalations", [])}:
                continue
            minutes = (datetime.now(UTC) - parse_ts(incident["opened_at"])).total_seconds() / 60
            deliveries = _post(ctx, incident, "escalation", incident["status"], id=incident["id"],
                               severity=incident["severity"], who=p["who"], minutes=f"{minutes:.0f}",
                               level=p["level"], after_minutes=p["after_minutes"])
            incident.setdefault("escalations", []).append({"level": int(p["level"]), "who": p["who"],
                                                           "at": now_iso(), "by": ctx.user})
            _event(incident, ctx, incident["status"], f"escalated to {p['who']}", deliveries=deliveries)
            store.save(incident, f"escalate {incident['id']} to {p['who']}")
            done.append(change.summary)
        return Outcome(reason="; ".join(done) or "already escalated", data={"escalated": done})


class IncidentList(Step[StoreState]):
    """Incidents in the store (open ones, or all), newest first, with what escalation is due."""

    name = "incident.list"
    scope = "env"
    read_only = True

    def __init__(self, all_: bool = False) -> None:
        self.all_ = all_

    def check(self, ctx: Context, target: EnvTarget) -> StoreState:
        store = store_for(ctx)
        state = StoreState(store.all(), store.where)
        state.extra = {"due": {i["id"]: escalation_due(ctx, i, state.now) for i in state.incidents}}
        return state

    def plan(self, state: StoreState) -> Plan:
        shown = [i for i in reversed(state.incidents) if self.all_ or i["status"] != "resolved"]
        rows = []
        for i in shown:
            due = state.extra["due"].get(i["id"]) or []
            rows.append({"id": i["id"], "severity": i["severity"], "status": i["status"], "title": i["title"],
                         "opened_at": i["opened_at"], "acknowledged_by": i.get("acknowledged_by"),
                         "escalation_due": [d["who"] for d in due]})
        lines = [f"{r['id']}  {r['severity']}  {r['status']:<13} {r['opened_at']}  {r['title']}"
                 + (f"  [escalate: {', '.join(r['escalation_due'])}]" if r["escalation_due"] else "") for r in rows]
        head = f"{len(rows)} {'' if self.all_ else 'open '}incident(s) in {state.where}"
        return Plan.nothing("\n".join([head, *lines]), data={"incidents": rows})


# ---------------------------------------------------------------- post-mortem


def runs_during(ctx: Context, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Every indostar-ops run of this environment that started in [start, end], from the journals."""
    from ..journal import journal_dir

    runs = []
    for path in sorted(journal_dir(ctx.env).glob("*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        begin = next((r for r in records if r.get("event") == "run.start"), None)
        if begin is None or begin.get("env") != ctx.env.name:
            continue
        at = parse_ts(begin["ts"])
        if not start <= at <= end or str(begin.get("task", "")).startswith("incident.postmortem"):
            continue
        finish = next((r for r in records if r.get("event") == "run.end"), {})
        changes = [f"{r.get('step')} on {r.get('target')}: " + "; ".join(c.get("summary", "") for c in r["changes"])
                   for r in records if r.get("event") == "target.result" and r.get("status") == "changed"
                   and r.get("changes")]
        failures = [f"{r.get('step')} on {r.get('target')}: {r.get('error')}" for r in records
                    if r.get("event") == "target.result" and r.get("status") in ("failed", "unreachable")]
        runs.append({"at": begin["ts"], "run_id": begin.get("run_id"), "task": begin.get("task"),
                     "user": begin.get("user"), "check": begin.get("check"), "status": finish.get("status"),
                     "changes": changes, "failures": failures})
    return runs


class IncidentPostmortem(Step[StoreState]):
    """A Markdown post-mortem: timeline from the incident and every indostar-ops run during it, impact, cause."""

    name = "incident.postmortem"
    scope = "env"
    read_only = True

    def __init__(self, incident: str) -> None:
        self.incident = incident

    def check(self, ctx: Context, target: EnvTarget) -> StoreState:
        store = store_for(ctx)
        incident = store.get(self.incident)
        start = parse_ts(incident["opened_at"])
        end = (parse_ts(incident["resolved_at"]) + timedelta(minutes=2)) if incident.get("resolved_at") \
            else datetime.now(UTC)
        state = StoreState([incident], store.where)
        state.extra = {"runs": runs_during(ctx, start, end), "env": ctx.env.name}
        return state

    def plan(self, state: StoreState) -> Plan:
        from ..templates import render_template

        incident = state.incidents[0]
        runs = state.extra["runs"]
        timeline = [{"at": e["at"], "what": f"{e['status']}: {e['message']} ({e['by']})"}
                    for e in incident.get("events", [])]
        timeline += [{"at": r["at"], "what": f"`{r['task']}`{' --check' if r['check'] else ''} by {r['user']}: "
                                             f"{r['status'] or 'unfinished'}"
                      + "".join(f"; changed {c}" for c in r["changes"][:5])
                      + "".join(f"; FAILED {f}" for f in r["failures"][:5])} for r in runs]
        timeline.sort(key=lambda t: parse_ts(t["at"]))
        markdown = render_template("incident/postmortem.md.j2", incident=incident, level=LEVELS[incident["severity"]],
                                   timeline=timeline, runs=runs, env=state.extra["env"])
        return Plan.nothing(markdown, data={"markdown": markdown, "runs": len(runs), "incident": incident["id"]})


def write_text(path: str, text: str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
