"""The maintenance window's own steps (runbook "Planned Maintenance" and "Communication Templates").

- `window.hours`: inside the environment's window in its timezone, or refuse (`--force-window`);
- `window.notice`: on production tiers, a maintenance notice posted at least `notice_hours` before;
- `window.baseline`: the health endpoint's answer and timing before anything changes;
- `window.document`: "document current state" into the journal (database size, disk use, maintenance
  mode, platform replicas where the platform answers);
- `window.smoke`: verify: the health endpoint and the configured smoke URLs (status and body marker);
- `notify.announce`: the scheduled-maintenance notice (status page, chat, outbox) and its record;
- `notify.in-progress` / `notify.finish`: status page "in progress", then resolved or "still working",
  and the summary to chat. A notification failure is reported, never fatal.

The guards are read-only: in `--check` they report what a real run would do (WARNING) and let the
preview go on; in a real run they fail, and the gated phases after them do not run.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import StepError, UsageError, VerificationFailed
from ..severity import Severity
from ..step import Change, EnvTarget, Outcome, Plan, Step

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import Environment

__all__ = ["window_bounds"]

_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*$")


def parse_duration(text: str) -> timedelta:
    """"2h", "90m", "1h30m" -> timedelta; anything else is a usage error."""
    match = _DURATION.match(text or "")
    if not match or not any(match.groups()):
        raise UsageError(f"bad duration {text!r}", hint="write it as 2h, 90m or 1h30m")
    return timedelta(hours=int(match.group(1) or 0), minutes=int(match.group(2) or 0))


def parse_at(env: Environment, text: str) -> datetime:
    """"2026-12-01 02:00" in the environment's timezone (or an ISO time with an offset) -> aware datetime."""
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise UsageError(f"bad time {text!r}", hint=f"write it as 'YYYY-MM-DD HH:MM' ({env.timezone})") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=env.zone)


def window_bounds(env: Environment, now: datetime | None = None) -> tuple[datetime, datetime, bool]:
    """(start, end, inside): the window containing `now`, else the next one, in the environment's timezone."""
    now = (now or datetime.now(UTC)).astimezone(env.zone)
    window = env.maintenance.window
    start_t, end_t = window.start_time, window.end_time
    for days in (-1, 0, 1):
        day = (now + timedelta(days=days)).date()
        start = datetime.combine(day, start_t, tzinfo=env.zone)
        end = datetime.combine(day if end_t > start_t else day + timedelta(days=1), end_t, tzinfo=env.zone)
        if start <= now < end:
            return start, end, True
        if start > now:
            return start, end, False
    raise AssertionError("a daily window always has a next occurrence")


def _local(env: Environment, moment: datetime) -> str:
    return moment.astimezone(env.zone).strftime("%Y-%m-%d %H:%M %Z")


class _EnvStep(Step[Any]):
    scope = "env"

    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [EnvTarget(ctx.env.name, kind="environment")]


# ---------------------------------------------------------------- guards


@dataclass(frozen=True)
class HoursState:
    env: str
    tier: str
    now: str
    start: str
    end: str
    inside: bool
    forced: bool
    check: bool


class WindowHours(_EnvStep):
    """Inside the environment's maintenance window, in its own timezone (or --force-window)."""

    name = "window.hours"
    read_only = True

    def check(self, ctx: Context, target: EnvTarget) -> HoursState:
        env = ctx.env
        start, end, inside = window_bounds(env)
        state = HoursState(env.name, env.tier, _local(env, datetime.now(UTC)), _local(env, start), _local(env, end),
                           inside, bool(getattr(self, "_force", False)), ctx.check)
        if not inside and env.tier != "sandbox" and not state.forced and not ctx.check:
            raise StepError(
                f"{env.name}: refused: it is {state.now}, outside the maintenance window "
                f"({env.maintenance.window.start}-{env.maintenance.window.end} {env.timezone}); the next one "
                f"starts {state.start}",
                hint=f"run it in the window, or (an emergency) add --force-window: invoke maintenance.window "
                     f"--env {env.name} --force-window")
        return state

    def plan(self, state: HoursState) -> Plan:
        data = {"now": state.now, "window_start": state.start, "window_end": state.end}
        if state.inside:
            return Plan.nothing(f"inside the window ({state.start} - {state.end})", severity=Severity.OK, data=data)
        if state.tier == "sandbox":
            return Plan.nothing("sandbox tier: no window-hours guard", severity=Severity.OK, data=data)
        if state.forced:
            return Plan.nothing(f"outside the window (next {state.start}): --force-window given",
                                severity=Severity.WARNING, data=data)
        return Plan.nothing(f"outside the window (next {state.start}): a real run would be refused "
                            "without --force-window", severity=Severity.WARNING, data=data)


@dataclass(frozen=True)
class NoticeState:
    required: bool
    found: str | None
    problem: str | None
    data: dict[str, Any] = field(default_factory=dict)


class WindowNotice(_EnvStep):
    """A maintenance notice posted at least `maintenance.notice_hours` ahead (production tiers)."""

    name = "window.notice"
    read_only = True

    def check(self, ctx: Context, target: EnvTarget) -> NoticeState:
        from ..notify import Notifier

        env = ctx.env
        hours = env.maintenance.notice_hours
        if not env.is_production or hours == 0:
            return NoticeState(False, None, None)
        now = datetime.now(UTC)
        notices = Notifier(ctx).notices()
        covering = [n for n in notices if n.covers(now)]
        good = [n for n in covering if n.lead_hours() >= hours]
        if good:
            best = good[0]
            return NoticeState(True, f"{best.source}: posted {_local(env, best.posted_at)} for "
                                     f"{_local(env, best.starts)} - {_local(env, best.ends)}", None,
                               {"incident_id": best.incident_id})
        start, end, _inside = window_bounds(env)
        duration = end - start
        minutes = int(duration.total_seconds() // 60)
        at = (start if start - now >= timedelta(hours=hours) else start + timedelta(days=1))
        if covering:
            late = covering[0]
            problem = (f"the notice ({late.source}) was posted {late.lead_hours():.1f} h before the work, "
                       f"not {hours:g} h")
        else:
            problem = "no maintenance notice covers now"
        problem += (f"; announce the next window: invoke maintenance.announce --env {env.name} "
                    f"--at '{at.astimezone(env.zone).strftime('%Y-%m-%d %H:%M')}' --duration "
                    f"{minutes // 60}h{minutes % 60 or ''}{'m' if minutes % 60 else ''}")
        if not ctx.check:
            raise StepError(f"{env.name}: refused: {problem}",
                            hint=f"users are owed {hours:g} h notice (runbook: Planned Maintenance)")
        return NoticeState(True, None, problem)

    def plan(self, state: NoticeState) -> Plan:
        if not state.required:
            return Plan.nothing("no advance notice required on this tier", severity=Severity.OK)
        if state.found:
            return Plan.nothing(f"notice found: {state.found}", severity=Severity.OK, data=state.data)
        return Plan.nothing(f"a real run would be refused: {state.problem}", severity=Severity.WARNING)


# ---------------------------------------------------------------- health


@dataclass(frozen=True)
class Probe:
    url: str
    status: int | None
    ms: float
    marker_found: bool | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "ms": round(self.ms, 1), "marker_found": self.marker_found,
                "error": self.error}


def _probe(ctx: Context, url: str, marker: str | None = None, host: str | None = None) -> Probe:
    started = time.monotonic()
    try:
        status, body = ctx.http().get(url, timeout=10, headers={"Host": host} if host else None)
    except OSError as exc:
        return Probe(url, None, (time.monotonic() - started) * 1000, None, str(getattr(exc, "reason", exc)))
    took = (time.monotonic() - started) * 1000
    return Probe(url, status, took, None if marker is None else marker in body.decode(errors="replace"))


class Baseline(_EnvStep):
    """Baseline health before anything changes: the health endpoint's status and response time."""

    name = "window.baseline"
    read_only = True

    def check(self, ctx: Context, target: EnvTarget) -> Probe | None:
        url = ctx.env.urls.health
        return _probe(ctx, url) if url else None

    def plan(self, state: Probe | None) -> Plan:
        if state is None:
            return Plan.nothing("no health URL configured (urls.health)", severity=Severity.UNKNOWN)
        data = {"health": state.as_dict()}
        if state.error or not state.status or state.status >= 400:
            return Plan.nothing(f"health {state.url}: {state.error or state.status} before the window "
                                "(recorded as the baseline)", severity=Severity.WARNING, data=data)
        return Plan.nothing(f"health {state.url}: {state.status} in {state.ms:.0f} ms", severity=Severity.OK,
                            data=data)


class Smoke(Step[Probe]):
    """Verify: the health endpoint and each configured smoke URL answer as expected (status, body marker)."""

    name = "window.smoke"
    scope = "env"
    read_only = True

    def targets(self, ctx: Context) -> list[EnvTarget]:
        env = ctx.env
        found = [EnvTarget(f"health {env.urls.health}", kind="url", id=env.urls.health)] if env.urls.health else []
        for index, check in enumerate(env.maintenance.smoke):
            found.append(EnvTarget(f"smoke {check.url}", kind="url", id=str(index)))
        return found

    def check(self, ctx: Context, target: EnvTarget) -> Probe:
        if target.name.startswith("health "):
            probe = _probe(ctx, str(target.id))
            if probe.error or not probe.status or probe.status >= 400:
                raise VerificationFailed(f"{target.id}: {probe.error or f'HTTP {probe.status}'}",
                                         hint="the application is not healthy: look at it before leaving the window")
            return probe
        smoke = ctx.env.maintenance.smoke[int(str(target.id))]
        probe = _probe(ctx, smoke.url, smoke.contains, smoke.host)
        problems = []
        if probe.error:
            problems.append(probe.error)
        elif probe.status != smoke.status:
            problems.append(f"HTTP {probe.status}, expected {smoke.status}")
        if probe.marker_found is False:
            problems.append(f"body lacks {smoke.contains!r}")
        if problems:
            raise VerificationFailed(f"{smoke.url}: {'; '.join(problems)}",
                                     hint="the site does not answer as expected after the maintenance")
        return probe

    def plan(self, state: Probe) -> Plan:
        marker = "" if state.marker_found is None else ", marker found"
        return Plan.nothing(f"HTTP {state.status} in {state.ms:.0f} ms{marker}", severity=Severity.OK,
                            data=state.as_dict())


# ---------------------------------------------------------------- document current state


class DocumentState(_EnvStep):
    """Backup: document the current state into the journal (database size, disk use, maintenance, platform)."""

    name = "window.document"
    read_only = True

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        env = ctx.env
        doc: dict[str, Any] = {"documented_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if env.database is not None:
            try:
                rows = ctx.postgres().fetch("SELECT current_database() AS db, pg_database_size(current_database()) "
                                            "AS bytes, version() AS version")
                doc["database"] = rows[0] if rows else None
            except Exception as exc:  # noqa: BLE001 - documenting what is unreachable is documentation too
                doc["database"] = {"error": str(exc)}
        disks: dict[str, Any] = {}
        for host in env.hosts():
            try:
                out = ctx.host(host).read(["df", "-P", "-k", *host.settings.disk_paths]).stdout
                disks[host.name] = [line.split()[-1] + " " + line.split()[-2] for line in out.splitlines()[1:]
                                    if line.strip()]
            except Exception as exc:  # noqa: BLE001 - one unreachable host is a fact, not a failure
                disks[host.name] = {"error": str(exc)}
        doc["disk_use"] = disks
        doc["certificates"] = {h.name: [c.name for c in h.settings.certificates] for h in env.hosts()
                               if h.settings.certificates}
        if env.platform is not None:
            try:
                from ..platform.base import backend_for

                backend = backend_for(ctx)
                doc["platform"] = {"kind": env.platform.kind,
                                   "instances": {c: [_plain(i) for i in backend.instances(c)]
                                                 for c in env.platform.components}}
            except Exception as exc:  # noqa: BLE001 - the platform may be unreachable from here
                doc["platform"] = {"kind": env.platform.kind, "error": str(exc)}
        return doc

    def plan(self, state: dict[str, Any]) -> Plan:
        parts = []
        db = state.get("database") or {}
        if "bytes" in db:
            parts.append(f"database {db['db']} {int(db['bytes']) / 1e6:.1f} MB")
        parts.append(f"disk use on {len(state.get('disk_use') or {})} host(s)")
        if "platform" in state:
            parts.append(f"platform {state['platform'].get('kind')}")
        return Plan.nothing("documented in the journal: " + ", ".join(parts), data={"state": state})


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


# ---------------------------------------------------------------- notifications


def _run_records(ctx: Context) -> list[dict[str, Any]]:
    """This run's journal so far (this attempt and, for a resumed run, the earlier ones)."""
    if ctx.journal is None or not ctx.journal.path.is_file():
        return []
    records = []
    for line in ctx.journal.path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _incident_id(records: list[dict[str, Any]]) -> str | None:
    for record in reversed(records):
        if record.get("event") == "target.result" and record.get("step") in ("notify.in-progress", "window.notice"):
            found = (record.get("data") or {}).get("incident_id")
            if found:
                return str(found)
    return None


class Announce(_EnvStep):
    """Post the scheduled-maintenance notice (status page, chat, outbox) and record it for the 24 h check."""

    name = "notify.announce"
    idempotent = True

    def __init__(self, at: str, duration: str = "2h", details: str = "") -> None:
        self.at = at
        self.duration = duration
        self.details = details

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        starts = parse_at(ctx.env, self.at)
        if starts <= datetime.now(UTC):
            raise UsageError(f"--at {self.at!r} is in the past", hint="announce a future window")
        if parse_duration(self.duration) <= timedelta(0):
            raise UsageError("--duration must be positive")
        if len(self.details) > 500:
            raise UsageError("--details is limited to 500 characters")

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        from ..notify import Notifier, notices_path

        starts = parse_at(ctx.env, self.at)
        ends = starts + parse_duration(self.duration)
        notifier = Notifier(ctx)
        same = [n for n in notifier.notices() if n.starts == starts and n.ends == ends]
        return {"starts": starts.isoformat(), "ends": ends.isoformat(), "channels": notifier.channels,
                "already": same[0].source if same else None, "record": str(notices_path(ctx.env)),
                "lead_hours": round((starts - datetime.now(UTC)).total_seconds() / 3600, 1),
                "notice_hours": ctx.env.maintenance.notice_hours}

    def plan(self, state: dict[str, Any]) -> Plan:
        if state["already"]:
            return Plan.nothing(f"already announced ({state['already']})")
        when = f"{state['starts']} - {state['ends']}"
        channels = ", ".join(state["channels"]) or "no channel configured (record only)"
        warning = ""
        if state["lead_hours"] < state["notice_hours"]:
            warning = f" (only {state['lead_hours']} h ahead: the window will refuse without {state['notice_hours']} h)"
        return Plan([Change(f"announce maintenance {when} via {channels}; record it in {state['record']}{warning}",
                            after=when, params=state)])

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        from ..notify import Notifier, record_notice

        params = plan.changes[0].params
        starts, ends = datetime.fromisoformat(params["starts"]), datetime.fromisoformat(params["ends"])
        deliveries, incident = Notifier(ctx).announce(starts, ends, self.details)
        record_notice(ctx.env, ctx, starts, ends, incident)
        return _delivered(deliveries, {"incident_id": incident})

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        return None  # the record is re-read by the next plan; deliveries are reported in the outcome


def _delivered(deliveries: list[Any], data: dict[str, Any]) -> Outcome:
    failed = [d for d in deliveries if not d.ok]
    text = "; ".join(d.line() for d in deliveries) or "no notification channel configured"
    return Outcome(reason=("NOTIFICATION PROBLEM: " if failed else "") + text,
                   data={**data, "deliveries": [d.line() for d in deliveries],
                         "undelivered": [d.line() for d in failed]})


class NotifyInProgress(_EnvStep):
    """Enter: status page 'maintenance in progress' (the announced notice if there is one) and chat."""

    name = "notify.in-progress"
    idempotent = False  # a resumed window does not post "started" twice
    irreversible = "a posted notice cannot be unsent (always posts the outcome)"

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        from ..notify import Notifier

        _start, end, _inside = window_bounds(ctx.env)
        return {"channels": Notifier(ctx).channels, "incident_id": _incident_id(_run_records(ctx)),
                "ends": _local(ctx.env, end)}

    def plan(self, state: dict[str, Any]) -> Plan:
        if not state["channels"]:
            return Plan.nothing("no notification channel configured")
        return Plan([Change(f"post 'maintenance in progress' to {', '.join(state['channels'])}", params=state)])

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        from ..notify import Notifier

        params = plan.changes[0].params
        run_id = ctx.journal.run_id if ctx.journal else "?"
        deliveries, incident = Notifier(ctx).in_progress(run_id, params["incident_id"], params["ends"])
        return _delivered(deliveries, {"incident_id": incident})

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        return None


class NotifyFinish(_EnvStep):
    """Always: status page resolved (or 'still working' if the window failed) and the summary to chat."""

    name = "notify.finish"
    idempotent = False

    def check(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        from ..notify import Notifier

        records = _run_records(ctx)
        last_start = max((i for i, r in enumerate(records) if r.get("event") in ("run.start", "run.resume")),
                         default=0)
        this = [r for r in records[last_start:] if r.get("event") == "target.result"]
        failed = [f"{r['step']} on {r['target']}: {r.get('error')}" for r in this
                  if r.get("status") in ("failed", "unreachable")]
        left = [f"{r['step']} ({r.get('reason')})" for r in this
                if r.get("status") == "skipped" and str(r.get("reason", "")).startswith("not started")]
        counts: dict[str, int] = {}
        for r in this:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        maintenance_off_failed = any(r["step"] == "maintenance.off" and r.get("status") in ("failed", "unreachable")
                                     for r in this)
        started = any(r.get("event") == "target.result" and r.get("step") == "notify.in-progress"
                      and (r.get("status") == "changed" or str(r.get("reason", "")).startswith("done in"))
                      for r in records)
        return {"channels": Notifier(ctx).channels, "incident_id": _incident_id(records), "failed": failed,
                "left": left, "counts": counts, "maintenance_off_failed": maintenance_off_failed,
                "started": started, "check": ctx.check}

    def plan(self, state: dict[str, Any]) -> Plan:
        if not state["channels"]:
            return Plan.nothing("no notification channel configured")
        if not state["started"] and not state["check"]:  # refused in preflight: users were never told it began
            return Plan.nothing("the window never started (nothing was announced): no summary to post")
        ok = not state["failed"]
        word = "resolved" if ok else "still working"
        return Plan([Change(f"post '{word}' and the summary to {', '.join(state['channels'])}",
                            params={**state, "ok": ok})])

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        from ..notify import Notifier

        p = plan.changes[0].params
        run_id = ctx.journal.run_id if ctx.journal else "?"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(p["counts"].items()))
        problems = list(p["failed"]) + [f"not started: {x}" for x in p["left"]]
        if p["maintenance_off_failed"]:
            problems.insert(0, f"MAINTENANCE MODE IS STILL ON: invoke maintenance.off --env {ctx.env.name} --yes")
        deliveries = Notifier(ctx).finished(run_id, p["incident_id"], ok=p["ok"], summary=counts,
                                            problems=problems)
        return _delivered(deliveries, {"incident_id": p["incident_id"]})

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        return None
