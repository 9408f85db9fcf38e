"""Where incidents live, so every operator sees the same ones: a table in the application database's `ops`
schema (staging, prod), or a JSON file (the sandbox). The runbook's severity levels and escalation path.

Writes go through the context's journaled, check-guarded paths: `ctx.postgres().execute` for the table,
`ctx._guard` + `ctx.action` for the file (written whole to a temp file, then renamed, under a lock).
An incident is one JSON document; its `events` list is the timeline post-mortems are written from.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .context import Context

__all__ = ["LEVELS", "STATUSES", "IncidentStore", "escalation_due", "now_iso", "parse_ts", "store_for"]

# Runbook "Severity Levels": response-time targets (minutes; None = next business day)
LEVELS: dict[str, dict[str, Any]] = {
    "P0": {"name": "Critical", "response_minutes": 0, "response": "immediate",
           "examples": "complete outage, data loss, security breach"},
    "P1": {"name": "High", "response_minutes": 15, "response": "15 minutes",
           "examples": "major feature broken, significant performance degradation"},
    "P2": {"name": "Medium", "response_minutes": 60, "response": "1 hour",
           "examples": "minor feature broken, workaround available"},
    "P3": {"name": "Low", "response_minutes": None, "response": "next business day",
           "examples": "cosmetic issues, enhancement requests"},
}
STATUSES = ("investigating", "identified", "monitoring", "resolved")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_ts(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def escalation_due(ctx: Context, incident: dict[str, Any], at: datetime | None = None) -> list[dict[str, Any]]:
    """The escalation levels whose time has come and that were not escalated to yet (unresolved incidents)."""
    if incident.get("status") == "resolved":
        return []
    at = at or datetime.now(UTC)
    opened = parse_ts(incident["opened_at"])
    done = {e["level"] for e in incident.get("escalations", [])}
    due = []
    for number, level in enumerate(ctx.env.escalation, 1):
        when = opened + timedelta(minutes=level.after_minutes)
        if when <= at and number not in done:
            due.append({"level": number, "who": level.who, "after_minutes": level.after_minutes,
                        "due_at": when.isoformat(timespec="seconds")})
    return due


def schedule(ctx: Context, incident: dict[str, Any]) -> list[dict[str, Any]]:
    opened = parse_ts(incident["opened_at"])
    return [{"level": n, "who": lvl.who, "after_minutes": lvl.after_minutes,
             "at": (opened + timedelta(minutes=lvl.after_minutes)).isoformat(timespec="seconds")}
            for n, lvl in enumerate(ctx.env.escalation, 1)]


class IncidentStore:
    """`all()` / `get(id)` read; `save(incident, summary)` is the one write."""

    where: str

    def all(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def get(self, incident_id: str) -> dict[str, Any]:
        for incident in self.all():
            if incident["id"] == incident_id:
                return incident
        known = [i["id"] for i in self.all()][-5:]
        raise UsageError(f"no incident {incident_id!r} in {self.where}",
                         hint=f"invoke incident.list (recent: {', '.join(known) or 'none'})")

    def save(self, incident: dict[str, Any], summary: str) -> None:
        raise NotImplementedError

    def next_id(self) -> str:
        day = datetime.now(UTC).strftime("%Y%m%d")
        taken = [i["id"] for i in self.all() if i["id"].startswith(f"INC-{day}-")]
        return f"INC-{day}-{len(taken) + 1:03d}"


class FileStore(IncidentStore):
    def __init__(self, ctx: Context, path: Path) -> None:
        self.ctx = ctx
        self.path = path
        self.where = str(path)

    def all(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise UsageError(f"incident store {self.path} is not valid JSON: {exc}") from None
        return list(data.get("incidents", []))

    def save(self, incident: dict[str, Any], summary: str) -> None:
        import fcntl

        self.ctx._guard(f"write {self.path}")
        with self.ctx.action("incident", summary, store=self.where, incident=incident["id"]):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with (self.path.parent / f".{self.path.name}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                items = [i for i in self.all() if i["id"] != incident["id"]] + [incident]
                items.sort(key=lambda i: i["opened_at"])
                temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
                temp.write_text(json.dumps({"incidents": items}, indent=2) + "\n", encoding="utf-8")
                temp.replace(self.path)


class PostgresStore(IncidentStore):
    """`<schema>.incidents (id text primary key, data jsonb, updated_at timestamptz)` in the application database."""

    def __init__(self, ctx: Context, schema: str) -> None:
        self.ctx = ctx
        self.schema = schema
        self.where = f"{schema}.incidents in database {ctx.env.database.name if ctx.env.database else '?'}"

    def _table(self) -> Any:
        from psycopg import sql

        return sql.Identifier(self.schema, "incidents")

    def all(self) -> list[dict[str, Any]]:
        from psycopg import sql

        db = self.ctx.postgres()
        exists = db.fetch("SELECT to_regclass(%s) IS NOT NULL AS ok", (f"{self.schema}.incidents",))[0]["ok"]
        if not exists:
            return []
        rows = db.fetch(sql.SQL("SELECT data FROM {} ORDER BY data->>'opened_at'").format(self._table()))
        return [r["data"] if isinstance(r["data"], dict) else json.loads(r["data"]) for r in rows]

    def save(self, incident: dict[str, Any], summary: str) -> None:
        from psycopg import sql

        db = self.ctx.postgres()
        db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)),
                   summary="create the ops schema for incidents (once)")
        db.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, data jsonb NOT NULL, "
                           "updated_at timestamptz NOT NULL DEFAULT now())").format(self._table()),
                   summary="create the incidents table (once)")
        db.execute(sql.SQL("INSERT INTO {} (id, data) VALUES (%s, %s::jsonb) ON CONFLICT (id) DO UPDATE "
                           "SET data = EXCLUDED.data, updated_at = now()").format(self._table()),
                   (incident["id"], json.dumps(incident)), summary=summary)


def store_for(ctx: Context) -> IncidentStore:
    settings = ctx.env.incidents
    if settings.store == "file":
        from .journal import journal_dir

        path = Path(settings.path) if settings.path else journal_dir(ctx.env) / "incidents.json"
        return FileStore(ctx, path)
    if ctx.env.database is None:
        raise UsageError(f"environment {ctx.env.name!r} keeps incidents in PostgreSQL but has no 'database' section",
                         hint="add database:, or set incidents.store: file with a shared path")
    return PostgresStore(ctx, settings.schema)
