"""The embedded sandbox: every task of the foundation, database and hosts issues works with --env sandbox."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, cli_json, run_cli


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The shipped sandbox inventory, its nginx moved to a free port, state under tmp_path; services stopped after."""
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    port = str(_free_port())
    text = (REPO / "inventory/sandbox.yaml").read_text().replace("18088", port)
    (inventory / "sandbox.yaml").write_text(text)
    monkeypatch.setenv("INDOSTAR_INVENTORY_DIR", str(inventory))
    monkeypatch.setenv("INDOSTAR_ENV", "sandbox")
    yield f"http://127.0.0.1:{port}/"
    run_cli("sandbox.stop")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_fresh_sandbox_runs_the_readme_job_twice(sandbox: str, tmp_path: Path) -> None:
    """From an empty root: rotation installs on both hosts, then nothing changes; disk.check answers OK."""
    code, first = cli_json("logs.install-rotation")
    assert code == 0 and first["counts"]["changed"] == 2
    assert (tmp_path / "sandbox/hosts/web-1/etc/logrotate.d/indostar").is_file()
    code, second = cli_json("logs.install-rotation")
    assert code == 0 and second["counts"] == {"ok": 2, "changed": 0, "skipped": 0, "failed": 0, "unreachable": 0,
                                              "declined": 0}
    code, disk = cli_json("disk.check")
    assert disk["severity"] in {"OK", "WARNING", "CRITICAL"} and code in {0, 1, 2}


def test_sandbox_maintenance_mode_toggles_its_own_nginx(sandbox: str) -> None:
    """maintenance.on/off in the sandbox start its private nginx and switch real HTTP answers 200 -> 503 -> 200."""
    assert run_cli("maintenance.status").returncode == 0
    assert _get(sandbox) == 200
    on = run_cli("maintenance.on")
    assert on.returncode == 0, on.stdout + on.stderr
    assert _get(sandbox) == 503
    assert run_cli("maintenance.off").returncode == 0
    assert _get(sandbox) == 200


def test_sandbox_database_tasks_work_and_converge(sandbox: str) -> None:
    """The sandbox database (app role, demo data) takes vacuum; a second vacuum finds nothing to do."""
    code, first = cli_json("db.vacuum")
    assert code == 0, first
    code, second = cli_json("db.vacuum")
    assert code == 0 and second["counts"]["changed"] == 0
    for task in ("db.activity", "db.bloat", "db.kill-idle", "cleanup"):
        if task == "cleanup":
            code, doc = cli_json("logs.cleanup", "--older-than", "7d", "--check")
        else:
            code, doc = cli_json(task)
        assert code == 0, (task, doc)
