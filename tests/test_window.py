"""`maintenance.window` end to end, as an operator runs it: a production-tier environment whose web host
is a real private nginx (maintenance mode), RDS on a moto server, the status page and chat on a local
recording HTTP server, the lock in a file. Windows run as separate processes so they can be killed
(SIGKILL) or interrupted (SIGINT) like a terminal would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.host_support import free_port
from tests.rig.nginx import NginxRig
from tests.rig.recorder import Recorder
from tests.support import REPO, InventoryDir

ENV = "wintest"
INSTANCE = "wintest-db"

PLAYBOOK = {
    "name": "wintest-window",
    "lock": True,
    "phases": [
        {"name": "preflight", "select": False, "steps": ["window.hours", "window.notice", "window.baseline"]},
        {"name": "backup", "select": False, "steps": ["rds.snapshot", "window.document"]},
        {"name": "enter", "select": False, "steps": [
            "notify.in-progress", {"step": "maintenance.install", "with": {"groups": ["web"]}},
            {"step": "maintenance.on", "with": {"groups": ["web"]}}]},
        {"name": "execute", "steps": []},
        {"name": "verify", "deadline": False, "select": False, "steps": ["window.smoke"]},
    ],
    "always": [{"step": "maintenance.off", "with": {"groups": ["web"]}}, "notify.finish"],
}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRig]:
    rig = NginxRig(tmp_path_factory.mktemp("nginx"), http_port=free_port(), https_port=free_port(),
                   backend_port=free_port())
    rig.start()
    yield rig
    rig.stop()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as rec:
        rec.route("GET", "/health", 200, b'{"status": "ok"}')
        rec.route("GET", "/shop", 200, b"<h1>IndoStar Naturals shop</h1>")
        yield rec


class Window:
    """The test environment and helpers to run windows against it."""

    def __init__(self, root: Path, inventory: InventoryDir, recorder: Recorder, moto: str, rig: NginxRig) -> None:
        self.root = root
        self.inventory = inventory
        self.recorder = recorder
        self.moto = moto
        self.rig = rig
        self.host_dir = root / "web-1"
        self.host_dir.mkdir(parents=True, exist_ok=True)
        self.book = root / "window.yml"
        self.flag = rig.workdir / "flag" / "maintenance.on"
        self.journal = Path(os.environ["INDOSTAR_JOURNAL_DIR"])

    def write(self, *, inside: bool = True, execute: list[Any] | None = None, tier: str = "production",
              **maintenance: Any) -> None:
        now = datetime.now(UTC)
        start, end = (now - timedelta(hours=1), now + timedelta(hours=1)) if inside else \
            (now + timedelta(hours=3), now + timedelta(hours=4))
        rig = self.rig
        self.inventory.write(ENV, {
            "tier": tier, "timezone": "UTC", "connection": "local",
            "maintenance": {"window": {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")},
                            "strategy": "nginx", "margin_minutes": 0,
                            "lock": {"backend": "file", "path": str(self.root / "locks")},
                            "smoke": [{"url": f"{self.recorder.url}/shop", "contains": "IndoStar Naturals"}],
                            **maintenance},
            "urls": {"health": f"{self.recorder.url}/health"},
            "database": {"host": "127.0.0.1", "name": "postgres", "user": "postgres", "rds_instance": INSTANCE},
            "aws": {"region": "ap-south-1", "endpoint_url": self.moto, "max_attempts": 2},
            "notifications": {
                "status_page": {"url": f"{self.recorder.url}/v1", "page_id": "pg1", "api_key": "env:WINTEST_SP_KEY",
                                "component_ids": ["web"]},
                "chat": {"webhook": "env:WINTEST_CHAT", "channel": "#ops"}},
            "groups": {"web": {"hosts": {"web-1": {"vars": {
                "tmp_dirs": [str(self.host_dir)],
                "nginx": {"command": rig.nginx_cmd_prefix(), "maintenance_snippet": str(rig.maintenance_snippet),
                          "maintenance_flag": str(self.flag), "maintenance_page_dir": str(rig.workdir / "html"),
                          "probe_url": rig.http_url + "/shop/cart", "probe_wait_s": 15}}}}}},
        })
        book = json.loads(json.dumps(PLAYBOOK))
        book["phases"][3]["steps"] = execute or [{"step": "test.mark", "with": {"mark": "vacuumed"}}]
        self.book.write_text(yaml.safe_dump(book, sort_keys=False))

    def announce_two_days_ago(self) -> str:
        now = datetime.now(UTC)
        return self.recorder.seed_incident(status="scheduled", created_at=(now - timedelta(days=2)).isoformat(),
                                           scheduled_for=(now - timedelta(minutes=30)).isoformat(),
                                           scheduled_until=(now + timedelta(hours=2)).isoformat())

    def argv(self, *args: str, task: str = "maintenance.window") -> list[str]:
        extra = ["--playbook", str(self.book)] if task == "maintenance.window" else []
        return [sys.executable, "-m", "tests.window_driver", task, "--env", ENV, *extra, *args]

    def run(self, *args: str, task: str = "maintenance.window") -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args, task=task), cwd=REPO, capture_output=True, text=True, timeout=120,
                              check=False, env=os.environ.copy())

    def run_json(self, *args: str, task: str = "maintenance.window") -> tuple[int, dict[str, Any], str]:
        proc = self.run(*args, "--json", task=task)
        try:
            return proc.returncode, json.loads(proc.stdout), proc.stderr
        except json.JSONDecodeError:
            raise AssertionError(f"not JSON:\n{proc.stdout}\n{proc.stderr}") from None

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=os.environ.copy())

    def records(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.journal.glob("*.jsonl")):
            found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return found

    def wait_for_event(self, event: str, **fields: Any) -> dict[str, Any]:
        def match() -> dict[str, Any] | None:
            for r in self.records():
                if r.get("event") == event and all(r.get(k) == v for k, v in fields.items()):
                    return r
            return None

        return poll(match, f"journal event {event} {fields}")

    def snapshots(self) -> list[str]:
        import boto3

        rds = boto3.client("rds", endpoint_url=self.moto, region_name="ap-south-1")
        return [s["DBSnapshotIdentifier"] for s in
                rds.describe_db_snapshots(DBInstanceIdentifier=INSTANCE, SnapshotType="manual")["DBSnapshots"]]

    def incident(self) -> dict[str, Any]:
        assert len(self.recorder.incidents) == 1, self.recorder.incidents
        return next(iter(self.recorder.incidents.values()))

    def chat(self) -> list[str]:
        return [r.body["text"] for r in self.recorder.requests if r.path == "/hooks/chat" and r.method == "POST"]

    def lock_record(self) -> dict[str, Any]:
        return json.loads((self.root / "locks" / f"{ENV}.lock").read_text())


def poll(fn: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def window(inventory: InventoryDir, tmp_path: Path, recorder: Recorder, moto_endpoint: str, nginx: NginxRig,
           monkeypatch: pytest.MonkeyPatch) -> Window:
    import boto3

    monkeypatch.setenv("WINTEST_SP_KEY", "sp-key-never-printed-77")
    monkeypatch.setenv("WINTEST_CHAT", f"{recorder.url}/hooks/chat")
    reset = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    boto3.client("rds", endpoint_url=moto_endpoint, region_name="ap-south-1").create_db_instance(
        DBInstanceIdentifier=INSTANCE, Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="admin", MasterUserPassword="not-a-real-password-1")
    nginx_flag = nginx.workdir / "flag" / "maintenance.on"
    nginx_flag.unlink(missing_ok=True)
    w = Window(tmp_path / "win", inventory, recorder, moto_endpoint, nginx)
    w.write()
    return w


def statuses(doc: dict[str, Any], step: str) -> list[str]:
    return [t["status"] for s in doc["steps"] if s["step"] == step for t in s["targets"]]


def reasons(doc: dict[str, Any], step: str) -> list[str]:
    return [t.get("reason") or t.get("error") or "" for s in doc["steps"] if s["step"] == step for t in s["targets"]]


# ---------------------------------------------------------------- guards


def test_refused_outside_hours_and_without_notice_on_a_production_tier(window: Window) -> None:
    """Outside the window: refused, naming the window and --force-window; inside without a 24 h notice:
    refused naming maintenance.announce. Either way nothing is touched: no snapshot, no page, no flag."""
    window.write(inside=False)
    code, doc, _ = window.run_json("--yes")
    assert code == 1
    assert "outside the maintenance window" in reasons(doc, "window.hours")[0]
    assert "--force-window" in json.dumps(doc)
    assert statuses(doc, "rds.snapshot") == ["skipped"] and statuses(doc, "maintenance.on") == ["skipped"]

    window.write(inside=True)
    code, doc, _ = window.run_json("--yes")
    assert code == 1
    refusal = reasons(doc, "window.notice")[0]
    assert "no maintenance notice covers now" in refusal
    assert f"invoke maintenance.announce --env {ENV} --at '" in refusal and "--duration 2h" in refusal
    assert window.snapshots() == [] and not window.flag.exists()
    assert [r.method for r in window.recorder.requests if "/incidents" in r.path and r.method != "GET"] == []
    assert window.chat() == []  # a refused window is not news for the chat channel
    assert window.lock_record()["released"] is True  # taken, then released: nobody is left locked out


def test_force_window_proceeds_and_runs_every_phase(window: Window) -> None:
    """--force-window outside hours, with a notice posted 2 days ago: snapshot, maintenance on then off,
    status page in progress then completed, chat summary; a chat outage costs a retry, not the window."""
    window.write(inside=False)
    incident = window.announce_two_days_ago()
    window.recorder.fail("/hooks/chat", times=1)  # the first chat message is retried once
    code, doc, _ = window.run_json("--yes", "--force-window")
    assert code == 0, doc
    assert "--force-window given" in reasons(doc, "window.hours")[0]
    assert len(window.snapshots()) == 1 and window.snapshots()[0].endswith(doc["run_id"].lower())
    assert statuses(doc, "maintenance.on") == ["changed"] and statuses(doc, "maintenance.off") == ["changed"]
    assert not window.flag.exists()
    assert window.incident()["id"] == incident and window.incident()["status"] == "completed"
    assert window.incident()["components"] == {"web": "operational"}
    assert "retried once" in reasons(doc, "notify.in-progress")[0]
    assert any("Maintenance window finished" in text for text in window.chat())
    assert window.lock_record()["released"] is True
    assert "sp-key-never-printed-77" not in json.dumps(doc) + "".join(
        p.read_text() for p in window.journal.glob("*.jsonl"))


def test_a_failing_execute_step_leaves_maintenance_off_status_updated_and_lock_released(window: Window) -> None:
    """A procedure breaks: the rest is skipped, maintenance is off, the status page says 'still working',
    chat says it did not complete, the lock is released."""
    window.announce_two_days_ago()
    window.write(execute=["test.fail", {"step": "test.mark", "with": {"mark": "never"}}])
    code, doc, _ = window.run_json("--yes")
    assert code == 1
    assert statuses(doc, "test.fail") == ["failed"] and statuses(doc, "test.mark") == ["skipped"]
    assert not window.flag.exists() and not (window.host_dir / "never").exists()
    incident = window.incident()
    assert incident["status"] == "in_progress" and "still working" in incident["body"]
    assert any("did NOT complete" in t and "test.fail" in t for t in window.chat())
    assert window.lock_record()["released"] is True
    assert statuses(doc, "lock.release") == ["changed"]


def test_check_prints_every_phase_and_changes_nothing_anywhere(window: Window) -> None:
    """--check plans every phase and every target; no snapshot, no file, no lock, no notification sent."""
    window.write(inside=False)
    code, doc, _ = window.run_json("--check")
    assert code == 0, doc
    phases = {t["step_id"].split("/")[0] for s in doc["steps"] for t in s["targets"]}
    assert phases == {"preflight", "backup", "enter", "execute", "verify", "always"}
    assert "a real run would be refused" in reasons(doc, "window.hours")[0]
    assert statuses(doc, "maintenance.on") == ["changed"] and statuses(doc, "rds.snapshot") == ["changed"]
    assert window.snapshots() == [] and not window.flag.exists()
    assert not (window.host_dir / "vacuumed").exists()
    assert not (window.root / "locks").exists()
    assert {r.method for r in window.recorder.requests} <= {"GET"}


# ---------------------------------------------------------------- kill, resume, interrupt, lock


def test_sigkill_during_execute_then_resume_completes_without_repeating_the_snapshot(window: Window) -> None:
    """Killed mid-execute (SIGKILL: nothing runs on the way out): the window is shown as left open;
    --resume RUN_ID re-checks finished steps, never takes a second snapshot, and finishes."""
    window.announce_two_days_ago()
    window.write(execute=[{"step": "test.mark", "with": {"mark": "first"}},
                          {"step": "test.gate", "with": {"mark": "go"}}])
    proc = window.start("--yes")
    started = window.wait_for_event("step.start", step="test.gate")
    run_id = started["run_id"]
    proc.kill()
    proc.wait(timeout=30)
    assert window.flag.exists() and len(window.snapshots()) == 1  # the killed run left the site in maintenance

    listing = subprocess.run([sys.executable, "-m", "invoke", "runs.list", "--env", ENV, "--json"], cwd=REPO,
                             capture_output=True, text=True, check=False, timeout=60)
    latest = json.loads(listing.stdout)["runs"][0]
    assert latest["run_id"] == run_id and latest["status"] == "unfinished"
    assert f"invoke maintenance.window --env {ENV} --resume {run_id}" in latest["open"]
    status = window.run("--json", task="maintenance.status")
    notes = json.loads(status.stdout)["notes"]
    assert any(f"--resume {run_id}" in n for n in notes) and any("held by" in n and run_id in n for n in notes)

    (window.host_dir / "go").touch()
    code, doc, _ = window.run_json("--yes", "--resume", run_id)
    assert code == 0, doc
    assert doc["run_id"] == run_id
    assert statuses(doc, "rds.snapshot") == ["skipped"] and "done in " + run_id in reasons(doc, "rds.snapshot")[0]
    assert statuses(doc, "test.mark") == ["skipped"] and statuses(doc, "test.gate") == ["changed"]
    assert statuses(doc, "notify.in-progress") == ["skipped"]  # "started" is not posted twice
    assert len(window.snapshots()) == 1
    assert not window.flag.exists() and window.incident()["status"] == "completed"


@pytest.mark.parametrize("backend", ["file", "postgres"])
def test_two_windows_at_once_the_second_is_refused_naming_the_holder(window: Window, backend: str) -> None:
    """While one window holds the environment, a second one exits 2 naming who holds it and which run."""
    window.announce_two_days_ago()
    schema = f"wintest_{os.getpid()}"
    lock = {"backend": backend, "schema": schema} if backend == "postgres" else \
        {"backend": "file", "path": str(window.root / "locks")}
    window.write(execute=[{"step": "test.gate", "with": {"mark": "go"}}], lock=lock)
    first = window.start("--yes")
    run_id = window.wait_for_event("step.start", step="test.gate")["run_id"]
    second = window.run("--yes")
    assert second.returncode == 2
    assert f"environment '{ENV}' is locked by " in second.stderr and f"(run {run_id}, maintenance.window)" \
        in second.stderr
    (window.host_dir / "go").touch()
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    if backend == "postgres":
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{schema}".window_lock').fetchone() == (0,)  # released
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_sigint_unwinds_receipts_newest_first_then_runs_always(window: Window) -> None:
    """Ctrl-C mid-execute: no new step starts, what was done is undone newest first (b, a, maintenance
    mode), and the always section still runs; the run fails."""
    window.announce_two_days_ago()
    window.write(execute=[{"step": "test.mark", "with": {"mark": "a"}}, {"step": "test.mark", "with": {"mark": "b"}},
                          {"step": "test.gate", "with": {"mark": "go"}},
                          {"step": "test.mark", "with": {"mark": "c"}}])
    proc = window.start("--yes")
    window.wait_for_event("wait", step="test.gate")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    undone = [(r["receipt"]["step"], r["receipt"]["args"]) for r in window.records() if r["event"] == "undo.start"]
    assert undone == [("test.unmark", {"mark": "b"}), ("test.unmark", {"mark": "a"}),
                      ("maintenance.off", {"groups": ["web"]})]
    assert not any((window.host_dir / m).exists() for m in ("a", "b", "c"))
    assert not window.flag.exists()
    assert "interrupted by SIGINT" in out
    assert window.incident()["status"] == "in_progress"  # "still working"
