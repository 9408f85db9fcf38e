"""disk.check over SSH: the runbook's df diagnosis graded by the inventory thresholds, monitoring exit codes."""

from __future__ import annotations

from pathlib import Path

from tests.rig.sshd import RigHost, SshRig, unreachable_address
from tests.support import InventoryDir, cli_json, rig_inventory


def _targets(doc: dict) -> list[dict]:
    return [t for step in doc["steps"] for t in step["targets"]]


def test_under_the_thresholds_is_ok(inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost],
                                    tmp_path: Path) -> None:
    """With generous thresholds every host is OK, exit 0, and the real df figures are reported."""
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts, tmp_path / "h",
                                         thresholds={"disk_pct": {"warning": 99.5, "critical": 99.9}}))
    code, doc = cli_json("disk.check", "--env", "rig")
    assert code == 0 and doc["severity"] == "OK"
    for target in _targets(doc):
        (fs,) = target["data"]["filesystems"]
        assert 0 < fs["used_pct"] <= 100 and fs["size_kb"] > fs["used_kb"] > 0
        assert "largest" not in target["data"]


def test_over_warning_lists_the_largest_directories(inventory: InventoryDir, ssh_rig: SshRig,
                                                    rig_hosts: list[RigHost], tmp_path: Path) -> None:
    """Over the warning threshold: exit 1 (WARNING) and the biggest directories under the roots, largest first."""
    root = tmp_path / "h"
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts[:1], root,
                                         thresholds={"disk_pct": {"warning": 0, "critical": 100}}))
    big = root / rig_hosts[0].name / "var/log/indostar"
    (big / "huge.log").write_bytes(b"x" * 2_000_000)
    code, doc = cli_json("disk.check", "--env", "rig")
    assert code == 1 and doc["severity"] == "WARNING"
    (target,) = _targets(doc)
    largest = target["data"]["largest"]
    assert largest[0]["path"] == str(root / rig_hosts[0].name / "var")
    assert any(e["path"] == str(root / rig_hosts[0].name / "var/log") and e["size_kb"] >= 1900 for e in largest)


def test_over_critical_exits_2(inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost],
                               tmp_path: Path) -> None:
    """Over the critical threshold the check is CRITICAL with exit code 2."""
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts[:1], tmp_path / "h",
                                         thresholds={"disk_pct": {"warning": 0, "critical": 0.5}}))
    code, doc = cli_json("disk.check", "--env", "rig")
    assert code == 2 and doc["severity"] == "CRITICAL"


def test_unreachable_host_is_unknown(inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost],
                                     tmp_path: Path) -> None:
    """A host that cannot be reached makes the check UNKNOWN (exit 3); the others are still reported."""
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts[:1], tmp_path / "h",
                                         thresholds={"disk_pct": {"warning": 99.5, "critical": 99.9}},
                                         extra_hosts={"down": unreachable_address()}))
    code, doc = cli_json("disk.check", "--env", "rig")
    assert code == 3 and doc["severity"] == "UNKNOWN"
    by_target = {t["target"]: t for t in _targets(doc)}
    assert by_target[rig_hosts[0].name]["severity"] == "OK"
    assert by_target["down"]["status"] == "unreachable" and "TCP connection refused" in by_target["down"]["error"]
