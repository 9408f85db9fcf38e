"""The README's first command: the whole maintenance window on the shipped sandbox, twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host_support import free_port
from tests.support import REPO, cli_json, run_cli


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The shipped sandbox inventory with every local service on a free port; state under tmp_path."""
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    text = (REPO / "inventory/sandbox.yaml").read_text()
    ports = {port: str(free_port()) for port in ("18088", "14566", "14580", "18100")}
    for old, new in ports.items():
        text = text.replace(old, new)
    if "services_port" not in text:
        text = text.replace("\nsandbox:\n", f"\nsandbox:\n  services_port: {ports['14580']}\n", 1)
    (inventory / "sandbox.yaml").write_text(text)
    (inventory / "_common.yaml").write_text((REPO / "inventory/_common.yaml").read_text())
    monkeypatch.setenv("INDOSTAR_INVENTORY_DIR", str(inventory))
    monkeypatch.setenv("INDOSTAR_ENV", "sandbox")
    yield tmp_path / "sandbox"
    run_cli("sandbox.stop")


def test_sandbox_window_runs_every_phase_then_changes_only_what_must_change(sandbox: Path) -> None:
    started = time.monotonic()
    code, first = cli_json("maintenance.window", timeout=240)
    assert code == 0, [(s["step"], t.get("error")) for s in first["steps"] for t in s["targets"] if t.get("error")]
    phases = {t["step_id"].split("/")[0] for s in first["steps"] for t in s["targets"]}
    assert {"preflight", "backup", "enter", "execute", "verify", "always"} <= phases
    code, second = cli_json("maintenance.window", timeout=240)
    took = time.monotonic() - started
    assert code == 0, second
    changed = sorted({s["step"] for s in second["steps"] for t in s["targets"] if t["status"] == "changed"})
    # a snapshot per window, maintenance mode in and out, the notices, the lock: nothing else (the config
    # backup too, once: the first window's execute phase installed log rotation after its backup)
    changed = [c for c in changed if c != "backup.config"]
    assert changed == ["lock.acquire", "lock.release", "maintenance.off", "maintenance.on", "notify.finish",
                       "notify.in-progress", "rds.snapshot"], changed
    outbox = (sandbox / "outbox.jsonl").read_text()
    assert outbox.count('"kind": "resolved"') == 2
    assert took < 120, took
