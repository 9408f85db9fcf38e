"""app.* on docker compose: real SSH (the sshd rig) to a host whose PATH starts with a recording `docker`.

The fake `docker` below keeps the project's containers in a JSON state file and
answers `docker compose ps/logs/restart/up --scale` and `docker stats` in the
formats of compose v2 (one JSON object per line) and the docker 28 CLI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.app_support import task_fixture  # noqa: F401 - the `task` fixture
from tests.host_support import host_inventory
from tests.rig.sshd import SshRig
from tests.support import InventoryDir

FAKE = r'''#!PYTHON
import json, sys
STATE, LOG = "STATEFILE", "LOGFILE"
args = sys.argv[1:]
with open(LOG, "a") as log:
    log.write(json.dumps(args) + "\n")
state = json.load(open(STATE))
def save():
    json.dump(state, open(STATE, "w"))
def names(svc):
    return [f"indostar-{svc}-{i}" for i in range(1, state["services"][svc]["replicas"] + 1)]
if args[:1] == ["stats"]:
    for name in args[4:]:
        print(json.dumps({"Name": name, "CPUPerc": "12.50%", "MemUsage": "300MiB / 1GiB"}))
    sys.exit(0)
if args[:1] == ["inspect"]:
    print(json.dumps([{"Name": "/" + name, "RestartCount": 4 if name.endswith("-2") else 0,
                       "State": {"OOMKilled": name.endswith("-2"), "StartedAt": "2026-11-29T16:01:02.123456789Z"}}
                      for name in args[1:]]))
    sys.exit(0)
if args[:1] != ["compose"]:
    print("fake docker: unsupported", args, file=sys.stderr); sys.exit(1)
rest = args[1:]
while rest and rest[0] in ("--project-directory", "-f", "-p"):
    rest = rest[2:]
cmd, svc = rest[0], rest[-1]
service = state["services"][svc]
if cmd == "ps":
    for i, name in enumerate(names(svc), 1):
        health = service.get("health", "healthy") if i <= service.get("old", 99) else service.get("new_health", "healthy")
        print(json.dumps({"Name": name, "Service": svc, "State": "running", "Health": health,
                          "Status": f"Up 5 minutes ({health})", "ExitCode": 0, "Image": service["image"]}))
elif cmd == "logs":
    tail = int(rest[rest.index("--tail") + 1])
    for name in names(svc):
        for line in service.get("logs", [])[-tail:]:
            print(f"{name}  | {line}")
elif cmd == "restart":
    service["restarts"] = service.get("restarts", 0) + 1; save()
elif cmd == "up":
    n = int(rest[rest.index("--scale") + 1].split("=")[1])
    service["old"] = min(service["replicas"], service.get("old", 99)); service["replicas"] = n; save()
else:
    print("fake docker compose: unsupported", rest, file=sys.stderr); sys.exit(1)
'''


@pytest.fixture
def compose(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> dict[str, Any]:
    bindir, state, log = tmp_path / "composebin", tmp_path / "compose-state.json", tmp_path / "docker-calls.jsonl"
    bindir.mkdir()
    script = bindir / "docker"
    script.write_text(FAKE.replace("PYTHON", sys.executable).replace("STATEFILE", str(state))
                      .replace("LOGFILE", str(log)))
    script.chmod(0o755)
    state.write_text(json.dumps({"services": {
        "backend": {"replicas": 2, "image": "registry.test/backend:7",
                    "logs": ["INFO GET /health", "ERROR webhook signature mismatch"]},
        "celery-worker": {"replicas": 1, "image": "registry.test/worker:7"}}}))
    host = ssh_rig.hosts[0]
    data = host_inventory(ssh_rig, [host], tmp_path, {host.name: {"path_prefix": [str(bindir)]}})
    data["platform"] = {"kind": "compose", "host": host.name, "project_dir": str(tmp_path / "srv/indostar"),
                        "poll_interval": 0.05, "rollout_timeout": 5, "replicas": {"backend": 2}}
    inventory.write("comp", data)

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def services() -> dict[str, Any]:
        return json.loads(state.read_text())["services"]

    def set_service(name: str, **values: Any) -> None:
        doc = json.loads(state.read_text())
        doc["services"][name].update(values)
        state.write_text(json.dumps(doc))

    return {"calls": calls, "services": services, "set": set_service}


def run(*args: str) -> tuple[int, dict[str, Any]]:
    from tests.support import cli_json

    return cli_json(*args)


def target(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = [t for s in doc["steps"] for t in s["targets"] if t["target"] == name]
    assert found, doc
    return found[0]


def writes(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if c[:1] == ["compose"] and ({"restart", "up"} & set(c))]


def test_status_logs_and_restart_over_ssh(compose: dict[str, Any]) -> None:
    code, doc = run("app.status", "--env", "comp")
    backend = target(doc, "service/backend")
    assert code == 1 and backend["severity"] == "WARNING", backend.get("error")  # indostar-backend-2 was OOM-killed
    assert "indostar-backend-2: restarted after OOMKilled (4 restarts)" in backend["reason"]
    assert backend["data"]["desired"] == 2 and backend["data"]["ready"] == 2
    assert backend["data"]["instances"][0]["memory_bytes"] == 300 * 2**20  # docker stats
    second = backend["data"]["instances"][1]  # docker inspect: restarts and OOMKilled
    assert second["restarts"] == 4 and second["last_termination_reason"] == "OOMKilled" and second["age_s"] > 0

    code, doc = run("app.logs", "--env", "comp", "--grep", "webhook", "--tail", "5")
    lines = target(doc, "service/backend")["data"]["lines"]
    assert code == 0 and lines == [{"instance": "indostar-backend-1", "text": "ERROR webhook signature mismatch"},
                                   {"instance": "indostar-backend-2", "text": "ERROR webhook signature mismatch"}]

    code, doc = run("app.restart", "--env", "comp", "--check")
    assert code == 0 and target(doc, "service/backend")["status"] == "changed"
    assert writes(compose["calls"]()) == []

    code, doc = run("app.restart", "--env", "comp")
    assert code == 0, doc
    assert compose["services"]()["backend"]["restarts"] == 1
    [call] = writes(compose["calls"]())
    assert call[-2:] == ["restart", "backend"] and call[1] == "--project-directory"


def test_scale_check_apply_noop_and_undo_when_never_healthy(task: Any, compose: dict[str, Any]) -> None:
    """In this process (`task`); the test above runs the real CLI."""
    run = task
    code, doc = run("app.scale", "--env", "comp", "--replicas", "3", "--check")
    assert code == 0 and writes(compose["calls"]()) == []

    code, doc = run("app.scale", "--env", "comp", "--replicas", "3", "--expect", "2")
    assert code == 0, doc
    assert compose["services"]()["backend"]["replicas"] == 3
    assert target(doc, "service/backend")["undo"]["args"] == {"component": "backend", "replicas": 2}
    code, doc = run("app.scale", "--env", "comp", "--replicas", "3")
    assert code == 0 and target(doc, "service/backend")["status"] == "ok"

    compose["set"]("backend", new_health="unhealthy")
    code, doc = run("app.scale", "--env", "comp", "--replicas", "5", "--timeout", "0.5")
    r = target(doc, "service/backend")
    assert code == 1 and "scaled back to the recorded 3 replicas" in r["error"] and "unhealthy" in r["error"]
    assert compose["services"]()["backend"]["replicas"] == 3


def test_rollback_is_refused_on_compose_before_any_command(compose: dict[str, Any]) -> None:
    code, doc = run("app.rollback", "--env", "comp")
    assert code == 2 and "does not support rollback" in doc["error"]
    assert compose["calls"]() == []
