"""incident.*: the runbook's templates posted to a recording status page and chat; file and PostgreSQL stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.pg_support import PgDatabase, fresh_database
from tests.rig import fakeapis
from tests.support import InventoryDir, cli_json, run_cli


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[fakeapis.FakeApis]:
    with fakeapis.running() as server:
        for name, value in fakeapis.secrets_env(server).items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture
def env(inventory: InventoryDir, fake: fakeapis.FakeApis, tmp_path: Path) -> tuple[str, Path]:
    store = tmp_path / "incidents.json"
    inventory.write("ops", {"tier": "staging", "connection": "local",
                            "notifications": fakeapis.urls(fake)["notifications"],
                            "incidents": {"store": "file", "path": str(store)}})
    return "ops", store


def target(doc: dict[str, Any]) -> dict[str, Any]:
    (step,) = doc["steps"]
    (only,) = step["targets"]
    return only


def test_open_records_posts_investigating_and_prints_the_escalation_path(env: tuple[str, Path],
                                                                         fake: fakeapis.FakeApis) -> None:
    name, store = env
    code, doc = cli_json("incident.open", "--env", name, "--check", "--severity", "P1", "--title", "Checkout down")
    assert code == 0 and not store.exists() and not fake.requests  # check mode: nothing recorded or posted

    code, doc = cli_json("incident.open", "--env", name, "--severity", "P1", "--title", "Checkout down",
                         "--ack", "asha")
    assert code == 0, doc
    incident = target(doc)["data"]["incident"]
    assert incident["severity"] == "P1" and incident["response_target"] == "15 minutes"
    assert incident["acknowledged_by"] == "asha" and incident["status"] == "investigating"
    escalation = target(doc)["data"]["escalation"]
    assert [(e["who"], e["after_minutes"]) for e in escalation] == [
        ("On-call engineer", 15), ("Secondary on-call", 30), ("Engineering manager", 60), ("CTO", 120)]
    saved = json.loads(store.read_text())["incidents"]
    assert [i["id"] for i in saved] == [incident["id"]]

    (page,) = fake.calls("/statuspage/v1/pages/pg1/incidents", "POST")
    assert page["headers"]["authorization"] == "OAuth sp-key"
    assert page["body"]["incident"]["status"] == "investigating"
    assert page["body"]["incident"]["body"] == ("We're investigating reports of Checkout down. We'll provide an "
                                                "update within 30 minutes.\nStatus: Investigating")
    (chat,) = fake.calls("/chat/", "POST")
    assert chat["body"]["channel"] == "#incidents" and "investigating reports of Checkout down" in chat["body"]["text"]

    code, doc = cli_json("incident.open", "--env", name, "--severity", "P1", "--title", "Checkout down")
    assert code == 0 and target(doc)["status"] == "ok" and "already open" in target(doc)["reason"]
    assert len(fake.requests) == 2  # nothing posted twice


def test_update_resolve_and_postmortem(env: tuple[str, Path], fake: fakeapis.FakeApis, tmp_path: Path) -> None:
    name, _store = env
    _code, doc = cli_json("incident.open", "--env", name, "--severity", "P2", "--title", "Emails delayed")
    iid = target(doc)["data"]["incident"]["id"]
    proc = run_cli("incident.update", iid, "--env", name, "--status", "identified")
    assert proc.returncode == 2 and "needs --cause" in proc.stderr

    code, doc = cli_json("incident.update", iid, "--env", name, "--status", "identified", "--cause",
                         "SendGrid outage", "--eta", "18:30 UTC")
    assert code == 0 and target(doc)["status"] == "changed"
    patch = fake.calls(f"/statuspage/v1/pages/pg1/incidents/{target(doc)['data']['incident']['statuspage_id']}",
                       "PATCH")
    assert patch[-1]["body"]["incident"]["body"] == ("We've identified the issue as SendGrid outage. We're working "
                                                     "on a fix. ETA: 18:30 UTC\nStatus: Identified")
    code, doc = cli_json("incident.update", iid, "--env", name, "--status", "identified", "--cause",
                         "SendGrid outage", "--eta", "18:30 UTC")
    assert target(doc)["status"] == "ok"  # nothing new: nothing posted

    cli_json("disk.check", "--env", name)  # an operator's run during the incident
    code, doc = cli_json("incident.resolve", iid, "--env", name)
    assert code == 0 and target(doc)["data"]["incident"]["status"] == "resolved"
    assert "All systems are operating normally" in fake.calls("/chat/")[-1]["body"]["text"]
    assert target(cli_json("incident.resolve", iid, "--env", name)[1])["status"] == "ok"

    out = tmp_path / "pm" / f"{iid}.md"
    proc = run_cli("incident.postmortem", iid, "--env", name, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith(f"# Post-mortem: Emails delayed ({iid})")
    assert "## Root cause\n\nSendGrid outage" in text and "## Action items" in text
    assert "`incident.update` by" in text and "`disk.check` by" in text  # runs from the journal
    stamps = [line.split("**")[1] for line in text.splitlines() if line.startswith("- **")]
    assert stamps == sorted(stamps)  # chronological (entries within one second keep their recorded order)
    opened = text.index("investigating: opened")
    assert opened < text.index("identified: update")


def test_escalate_notifies_each_due_level_once(env: tuple[str, Path], fake: fakeapis.FakeApis) -> None:
    name, store = env
    _code, doc = cli_json("incident.open", "--env", name, "--severity", "P0", "--title", "Site down")
    iid = target(doc)["data"]["incident"]["id"]
    code, doc = cli_json("incident.escalate", "--env", name)
    assert target(doc)["status"] == "ok" and "nothing to escalate now" in target(doc)["reason"]

    data = json.loads(store.read_text())  # the incident has been open for 35 minutes
    data["incidents"][0]["opened_at"] = (datetime.now(UTC) - timedelta(minutes=35)).isoformat(timespec="seconds")
    store.write_text(json.dumps(data))
    code, doc = cli_json("incident.list", "--env", name)
    assert target(doc)["data"]["incidents"][0]["escalation_due"] == ["On-call engineer", "Secondary on-call"]

    chats = len(fake.calls("/chat/"))
    code, doc = cli_json("incident.escalate", "--env", name, "--check")
    assert len(target(doc)["changes"]) == 2 and len(fake.calls("/chat/")) == chats
    code, doc = cli_json("incident.escalate", "--env", name)
    assert code == 0 and target(doc)["status"] == "changed"
    texts = [c["body"]["text"] for c in fake.calls("/chat/")[chats:]]
    assert len(texts) == 2 and "to On-call engineer" in texts[0] and "to Secondary on-call" in texts[1]
    code, doc = cli_json("incident.escalate", "--env", name)
    assert target(doc)["status"] == "ok" and "Engineering manager" in target(doc)["reason"]
    assert len(fake.calls("/chat/")) == chats + 2
    saved = json.loads(store.read_text())["incidents"][0]
    assert [e["who"] for e in saved["escalations"]] == ["On-call engineer", "Secondary on-call"]
    assert saved["id"] == iid


def test_bad_severity_is_a_usage_error(env: tuple[str, Path]) -> None:
    proc = run_cli("incident.open", "--env", env[0], "--severity", "SEV1", "--title", "x")
    assert proc.returncode == 2 and "P0, P1, P2 or P3" in proc.stderr


def test_postgres_store_is_shared_by_every_operator(pg_dsn: str, inventory: InventoryDir) -> None:
    """Staging/prod keep incidents in <ops schema>.incidents of the application database."""
    for pg in fresh_database(pg_dsn):
        run_pg_store(pg, inventory)


def run_pg_store(pg: PgDatabase, inventory: InventoryDir) -> None:
    env = pg.inventory(inventory, incidents={"store": "postgres", "schema": "ops"})
    code, doc = cli_json("incident.open", "--env", env, "--severity", "P3", "--title", "Typo on checkout")
    assert code == 0, doc
    iid = target(doc)["data"]["incident"]["id"]
    assert pg.one("SELECT data->>'title' FROM ops.incidents WHERE id = %s", (iid,)) == "Typo on checkout"
    code, doc = cli_json("incident.list", "--env", env)
    assert [i["id"] for i in target(doc)["data"]["incidents"]] == [iid]
    code, doc = cli_json("incident.resolve", iid, "--env", env)
    assert pg.one("SELECT data->>'status' FROM ops.incidents WHERE id = %s", (iid,)) == "resolved"
