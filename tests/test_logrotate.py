"""logs.install-rotation over real SSH: idempotent, previewable, safe with hostile values, per-host failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.rig.sshd import RigHost, SshRig, unreachable_address
from tests.support import InventoryDir, cli_json, rig_inventory, run_cli


def _statuses(doc: dict) -> dict[str, str]:
    return {t["target"]: t["status"] for step in doc["steps"] for t in step["targets"]}


def _journal_events(tmp_path: Path, event: str) -> list[dict]:
    records = []
    for path in (tmp_path / "journal").glob("*.jsonl"):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r["event"] == event]


def test_installs_on_every_host_then_changes_nothing(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """First run installs a validated config per host; the second run changes nothing and says why."""
    root = tmp_path / "hosts"
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts, root))

    code, first = cli_json("logs.install-rotation", "--env", "rig")
    assert code == 0, first
    assert set(_statuses(first).values()) == {"changed"} and first["counts"]["changed"] == 3
    for host in rig_hosts:
        config = (root / host.name / "etc/logrotate.d/indostar").read_text()
        assert f"on {host.name}" in config
        assert f'"{root / host.name}/var/log/indostar/*.log"' in config
        for directive in ("daily", "rotate 7", "compress", "delaycompress", "missingok", "notifempty"):
            assert f"    {directive}\n" in config
        assert not list((root / host.name / "etc/logrotate.d").glob("*indostar-new*"))

    code, second = cli_json("logs.install-rotation", "--env", "rig")
    assert code == 0
    assert set(_statuses(second).values()) == {"ok"} and second["counts"]["changed"] == 0
    reasons = [t["reason"] for step in second["steps"] for t in step["targets"]]
    assert all(r.endswith("is already up to date") for r in reasons)
    assert not any(t.get("actions") for step in second["steps"] for t in step["targets"])


def test_check_mode_shows_the_diff_and_writes_nothing(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """--check reports the planned diff per host, creates no file and records no action."""
    root = tmp_path / "hosts"
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts, root))
    before = sorted(root.rglob("*"))
    code, doc = cli_json("logs.install-rotation", "--env", "rig", "--check")
    assert code == 0 and doc["check"] is True
    targets = [t for step in doc["steps"] for t in step["targets"]]
    assert all(t["status"] == "changed" and "+    rotate 7" in t["changes"][0]["diff"] for t in targets)
    assert sorted(root.rglob("*")) == before, "check mode must not write on any host"
    assert _journal_events(tmp_path, "action") == []


def test_a_replaced_file_is_backed_up_and_diffed(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """A hand-edited config is replaced, shown as a diff, and kept as a backup."""
    root = tmp_path / "hosts"
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts[:1], root))
    installed = root / rig_hosts[0].name / "etc/logrotate.d/indostar"
    installed.write_text("/var/log/indostar/*.log {\n    weekly\n}\n")

    proc = run_cli("logs.install-rotation", "--env", "rig")
    assert proc.returncode == 0, proc.stderr
    assert "-    weekly" in proc.stdout and "+    daily" in proc.stdout
    backups = list((root / rig_hosts[0].name / "var/backups/indostar-ops").glob("indostar.*"))
    assert [b.read_text() for b in backups] == ["/var/log/indostar/*.log {\n    weekly\n}\n"]
    assert "daily" in installed.read_text()


def test_a_config_logrotate_rejects_is_never_installed(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """`logrotate -d` runs on the host before installing: a rejected config leaves the old file in place."""
    root = tmp_path / "hosts"
    data = rig_inventory(ssh_rig, rig_hosts[:1], root)
    data["groups"]["web"]["vars"] = {"logrotate": {"su": "no-such-user no-such-group"}}
    inventory.write("rig", data)
    installed = root / rig_hosts[0].name / "etc/logrotate.d/indostar"
    installed.write_text("# previous config\n")

    code, doc = cli_json("logs.install-rotation", "--env", "rig")
    assert code == 1
    (target,) = [t for step in doc["steps"] for t in step["targets"]]
    assert target["status"] == "failed" and "logrotate -d rejected" in target["error"]
    assert "no-such-user" in target["error"]
    assert installed.read_text() == "# previous config\n"
    assert not list(installed.parent.glob("*indostar-new*"))


def test_one_unreachable_host_fails_alone(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """Two reachable hosts are done, the unreachable one fails with a clear message, exit 1."""
    root = tmp_path / "hosts"
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts[:2], root, extra_hosts={"web-down": unreachable_address()}))
    proc = run_cli("logs.install-rotation", "--env", "rig")
    assert proc.returncode == 1
    assert f"web-down: unreachable: root@{unreachable_address()}:{ssh_rig.port}: TCP connection refused" in proc.stdout
    assert "Failed:" in proc.stdout
    for host in rig_hosts[:2]:
        assert (root / host.name / "etc/logrotate.d/indostar").is_file()


@pytest.mark.parametrize("payload", ["'; touch {m}; '", "$(touch {m})", "`touch {m}`", '"; touch {m}; "'])
def test_shell_metacharacters_reach_the_host_only_as_data(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path, payload: str,
) -> None:
    """Inventory values holding shell syntax are never executed: the marker file is never created."""
    marker = tmp_path / "INJECTED"
    hostile = payload.format(m=marker)
    root = tmp_path / "hosts"
    data = rig_inventory(ssh_rig, rig_hosts[:1], root)
    host_vars = data["groups"]["web"]["hosts"][rig_hosts[0].name]["vars"]
    base = root / rig_hosts[0].name
    host_vars["logrotate_config"] = str(base / "etc/logrotate.d" / f"indostar{hostile}")
    host_vars["disk_paths"] = [str(base), str(base / hostile)]
    host_vars["log_patterns"] = [f"app{payload.format(m='INJECTED')}.log"]  # a file-name pattern has no '/'
    Path(host_vars["logrotate_config"]).parent.mkdir(parents=True, exist_ok=True)
    inventory.write("rig", data)

    rotation = run_cli("logs.install-rotation", "--env", "rig")
    disk = run_cli("disk.check", "--env", "rig")
    assert not marker.exists(), "an inventory value was executed as shell code"
    if '"' in hostile:  # would close logrotate's quoted path: refused at inventory load, with file:line
        assert rotation.returncode == 2 and "rig.yaml:" in rotation.stderr
        assert "without '/' or double quotes" in rotation.stderr
        return
    else:
        assert rotation.returncode == 0, rotation.stdout + rotation.stderr
        assert (base / "etc/logrotate.d" / f"indostar{hostile}").is_file()
    assert disk.returncode == 3  # df on the nonexistent hostile path fails: UNKNOWN, not executed


def test_production_changes_need_yes(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """Without a terminal, a production-tier change is refused (exit 2) until --yes is given."""
    root = tmp_path / "hosts"
    inventory.write("live", rig_inventory(ssh_rig, rig_hosts[:1], root, tier="production"))
    refused = run_cli("logs.install-rotation", "--env", "live")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert not (root / rig_hosts[0].name / "etc/logrotate.d/indostar").exists()
    assert run_cli("logs.install-rotation", "--env", "live", "--check").returncode == 0
    assert run_cli("disk.check", "--env", "live").returncode == 0  # read-only tasks need no confirmation
    done = run_cli("logs.install-rotation", "--env", "live", "--yes")
    assert done.returncode == 0 and (root / rig_hosts[0].name / "etc/logrotate.d/indostar").is_file()


def test_become_installs_through_sudo(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """With ssh.become the config is staged in a private temp file and `sudo install`ed: mode 0644, no leftovers."""
    root = tmp_path / "hosts"
    data = rig_inventory(ssh_rig, rig_hosts[:1], root)
    data["ssh"]["become"] = True
    inventory.write("rig", data)
    code, doc = cli_json("logs.install-rotation", "--env", "rig")
    assert code == 0, doc
    installed = root / rig_hosts[0].name / "etc/logrotate.d/indostar"
    assert oct(installed.stat().st_mode & 0o777) == "0o644" and installed.stat().st_uid == 0
    code, again = cli_json("logs.install-rotation", "--env", "rig")
    assert code == 0 and again["counts"]["changed"] == 0
