"""Notifications: a status page (Atlassian-Statuspage-compatible API), chat (Slack-compatible incoming
webhook) and, for the sandbox, an outbox file. Every message is rendered from `templates/notify/`.

Every write goes through the context's journaled, check-guarded paths (`ctx.http().send`, or
`ctx.action` for the outbox). A notification failure never aborts a window: each delivery is
tried twice, and what could not be delivered is returned (and reported), never raised.

The 24-hour notice rule reads what `maintenance.announce` recorded: the status page's scheduled
maintenances when one is configured, and the local notice record (`<journal_dir>/notices/<env>.jsonl`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .templates import render_template

if TYPE_CHECKING:
    from .context import Context
    from .inventory import Environment

__all__ = ["Delivery", "Notice", "Notifier", "notices_path", "slack_escape"]


_PATH = re.compile(r"^incidents(/[A-Za-z0-9_-]{1,64})?$")


def slack_escape(text: Any) -> str:
    """Slack mrkdwn control characters: a value can never become a link or a mention."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Delivery:
    channel: str  # status_page / chat / outbox
    ok: bool
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        said = "sent" if self.ok else "NOT DELIVERED"
        return f"{self.channel}: {said}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Notice:
    """A scheduled-maintenance notice: when it was posted, what period it announces."""

    posted_at: datetime
    starts: datetime
    ends: datetime
    source: str  # "status page incident X" / "notice record"
    incident_id: str | None = None

    def covers(self, moment: datetime) -> bool:
        return self.starts <= moment < self.ends

    def lead_hours(self) -> float:
        return (self.starts - self.posted_at).total_seconds() / 3600


def notices_path(env: Environment) -> Path:
    from .journal import journal_dir

    return journal_dir(env) / "notices" / f"{env.name}.jsonl"


def _parse(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Notifier:
    """Posts rendered messages to whatever the environment configures; never raises for a failed delivery."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.env = ctx.env
        self.settings = ctx.env.notifications

    # -- rendering ------------------------------------------------------------

    def render(self, template: str, **variables: Any) -> str:
        base = {"env": self.env.name, "site": self.env.urls.site or self.env.name,
                "timezone": self.env.timezone, "status_page": self.env.urls.status_page or ""}
        return render_template(f"notify/{template}.txt.j2", **{**base, **variables}).strip()

    def render_chat(self, template: str, **variables: Any) -> str:
        def esc(value: Any) -> Any:
            if isinstance(value, str):
                return slack_escape(value)
            return [esc(v) for v in value] if isinstance(value, list | tuple) else value

        escaped = {k: esc(v) for k, v in variables.items()}
        return render_template(f"notify/{template}.slack.j2", env=slack_escape(self.env.name),
                               **escaped).strip()

    @property
    def channels(self) -> list[str]:
        found = []
        if self.settings.status_page is not None:
            found.append("status_page")
        if self.settings.chat is not None:
            found.append("chat")
        if self.settings.outbox:
            found.append("outbox")
        return found

    # -- status page --------------------------------------------------------------

    def _statuspage(self, method: str, path: str, body: Any, summary: str) -> tuple[int, dict[str, Any]]:
        page = self.settings.status_page
        assert page is not None
        if not _PATH.match(path):  # an incident id read back from the API or a record goes into the path
            raise RuntimeError(f"refusing status page path {path!r}")
        headers = {"Authorization": f"OAuth {page.api_key.get()}"} if page.api_key else {}
        url = f"{page.url.rstrip('/')}/pages/{page.page_id}/{path}"
        status, raw = self.ctx.http().send(method, url, summary=summary, json_body=body, headers=headers)
        if status >= 400:
            raise RuntimeError(f"HTTP {status} from {method} {url}: {raw[:200].decode(errors='replace')}")
        try:
            return status, json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return status, {}

    def _twice(self, channel: str, action: Any) -> Delivery:
        """A delivery is tried twice; the second failure is reported, never raised."""
        error = ""
        for attempt in (1, 2):
            try:
                data = action() or {}
                return Delivery(channel, True, "retried once" if attempt == 2 else "", data)
            except Exception as exc:  # a notification never aborts the window
                from .errors import CheckModeViolation

                if isinstance(exc, CheckModeViolation):
                    raise
                error = str(exc) or type(exc).__name__
                if self.ctx.journal is not None:
                    self.ctx.journal.event("notify.failed", channel=channel, attempt=attempt, error=error)
        return Delivery(channel, False, f"failed twice: {error}")

    def _outbox(self, kind: str, text: str, **extra: Any) -> Delivery:
        path = Path(str(self.settings.outbox))

        def write() -> dict[str, Any]:
            record = {"ts": datetime.now(UTC).isoformat(timespec="seconds"), "env": self.env.name,
                      "kind": kind, "text": text, **extra}
            self.ctx._guard(f"append to {path}")
            with self.ctx.action("notify", f"outbox: {kind}", path=str(path)):
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            return {}

        return self._twice("outbox", write)

    def _chat(self, text: str) -> Delivery:
        chat = self.settings.chat
        assert chat is not None

        def send() -> dict[str, Any]:
            body: dict[str, Any] = {"text": text}
            if chat.channel:
                body["channel"] = chat.channel
            status, raw = self.ctx.http().send("POST", chat.webhook.get(), summary="chat message",
                                               json_body=body)
            if status >= 400:
                raise RuntimeError(f"chat webhook answered HTTP {status}: {raw[:200].decode(errors='replace')}")
            return {}

        return self._twice("chat", send)

    # -- the window's messages ----------------------------------------------------------

    def announce(self, starts: datetime, ends: datetime, details: str) -> tuple[list[Delivery], str | None]:
        """The scheduled-maintenance notice; returns the deliveries and the status page incident id."""
        zone = self.env.zone
        words = {"starts": starts.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
                 "ends": ends.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"), "details": details}
        text = self.render("scheduled", **words)
        deliveries: list[Delivery] = []
        incident_id = None
        if self.settings.status_page is not None:
            page = self.settings.status_page
            body = {"incident": {"name": f"Scheduled maintenance: {self.env.urls.site or self.env.name}",
                                 "status": "scheduled", "body": text,
                                 "scheduled_for": starts.astimezone(UTC).isoformat(),
                                 "scheduled_until": ends.astimezone(UTC).isoformat(),
                                 "scheduled_remind_prior": True, "component_ids": list(page.component_ids)}}
            delivery = self._twice("status_page", lambda: self._statuspage(
                "POST", "incidents", body, "status page: scheduled maintenance")[1])
            incident_id = delivery.data.get("id") if delivery.ok else None
            deliveries.append(delivery)
        if self.settings.chat is not None:
            deliveries.append(self._chat(self.render_chat("scheduled", **words)))
        if self.settings.outbox:
            deliveries.append(self._outbox("scheduled", text, starts=starts.isoformat(), ends=ends.isoformat()))
        return deliveries, incident_id

    def in_progress(self, run_id: str, incident_id: str | None, ends: str) -> tuple[list[Delivery], str | None]:
        """Status page 'in progress' (the announced incident if known, else a new one) and a chat line."""
        text = self.render("in_progress", run_id=run_id, ends=ends)
        deliveries: list[Delivery] = []
        if self.settings.status_page is not None:
            page = self.settings.status_page
            components = {c: "under_maintenance" for c in page.component_ids}
            fields = {"status": "in_progress", "body": text, "components": components}
            if incident_id:
                delivery = self._twice("status_page", lambda: self._statuspage(
                    "PATCH", f"incidents/{incident_id}", {"incident": fields},
                    "status page: maintenance in progress")[1])
            else:
                fields = {**fields, "name": f"Maintenance in progress: {self.env.urls.site or self.env.name}",
                          "scheduled_for": datetime.now(UTC).isoformat()}
                delivery = self._twice("status_page", lambda: self._statuspage(
                    "POST", "incidents", {"incident": fields}, "status page: maintenance in progress")[1])
                incident_id = delivery.data.get("id") if delivery.ok else None
            deliveries.append(delivery)
        if self.settings.chat is not None:
            deliveries.append(self._chat(self.render_chat("in_progress", run_id=run_id, ends=ends)))
        if self.settings.outbox:
            deliveries.append(self._outbox("in_progress", text, run_id=run_id))
        return deliveries, incident_id

    def finished(self, run_id: str, incident_id: str | None, *, ok: bool, summary: str,
                 problems: list[str]) -> list[Delivery]:
        """Resolved (all went well) or 'still working' (the run failed); the summary to chat."""
        template = "resolved" if ok else "still_working"
        text = self.render(template, run_id=run_id)
        deliveries: list[Delivery] = []
        if self.settings.status_page is not None and incident_id:
            page = self.settings.status_page
            fields: dict[str, Any] = {"status": "completed" if ok else "in_progress", "body": text}
            if ok:
                fields["components"] = {c: "operational" for c in page.component_ids}
            deliveries.append(self._twice("status_page", lambda: self._statuspage(
                "PATCH", f"incidents/{incident_id}", {"incident": fields},
                f"status page: {'resolved' if ok else 'still working'}")[1]))
        chat_text = self.render_chat("summary", run_id=run_id, ok=ok, summary=summary, problems=problems)
        if self.settings.chat is not None:
            deliveries.append(self._chat(chat_text))
        if self.settings.outbox:
            deliveries.append(self._outbox(template, text, run_id=run_id))
            deliveries.append(self._outbox("summary", chat_text, run_id=run_id))
        return deliveries

    # -- the 24-hour rule -------------------------------------------------------------

    def notices(self) -> list[Notice]:
        """Every notice we can see: the status page's scheduled maintenances and the local record."""
        found: list[Notice] = []
        path = notices_path(self.env)
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    found.append(Notice(_parse(record["posted_at"]), _parse(record["starts"]), _parse(record["ends"]),
                                        "notice record " + str(path), record.get("incident_id")))
                except (ValueError, KeyError, TypeError):
                    continue
        page = self.settings.status_page
        if page is not None:
            headers = {"Authorization": f"OAuth {page.api_key.get()}"} if page.api_key else {}
            from .errors import StepError

            for kind in ("scheduled", "active_maintenance"):
                url = f"{page.url.rstrip('/')}/pages/{page.page_id}/incidents/{kind}"
                try:
                    status, raw = self.ctx.http().get(url, headers=headers)
                except OSError as exc:
                    raise StepError(f"status page {page.url} unreachable listing {kind} maintenances: "
                                    f"{getattr(exc, 'reason', exc)}",
                                    hint="the 24 h notice cannot be confirmed; check notifications.status_page.url "
                                         "and the network, then re-run") from None
                if status >= 400:
                    raise StepError(f"status page answered HTTP {status} listing {kind} maintenances",
                                    hint="check notifications.status_page url/page_id/api_key")
                for item in json.loads(raw or b"[]"):
                    try:
                        found.append(Notice(_parse(item["created_at"]), _parse(item["scheduled_for"]),
                                            _parse(item["scheduled_until"]), f"status page incident {item['id']}",
                                            str(item["id"])))
                    except (ValueError, KeyError, TypeError):
                        continue
        return found


def record_notice(env: Environment, ctx: Context, starts: datetime, ends: datetime, incident_id: str | None) -> Path:
    """Remember an announcement for the 24 h check (journaled, refused in check mode)."""
    path = notices_path(env)
    record = {"posted_at": datetime.now(UTC).isoformat(timespec="seconds"), "starts": starts.isoformat(),
              "ends": ends.isoformat(), "incident_id": incident_id, "by": ctx.user}
    ctx._guard(f"append to {path}")
    with ctx.action("notify", "record the maintenance notice", path=str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return path
