"""disk.report over SSH: largest directories and files under the configured roots, within a time budget."""

from __future__ import annotations

import time
from pathlib import Path

from indostar_ops.units import human_bytes
from tests.host_support import host_inventory, targets, write
from tests.rig.sshd import SshRig
from tests.support import InventoryDir, cli_json

MB = 1024 * 1024


def test_report_lists_largest_dirs_and_files(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> None:
    """The biggest file and the directory holding it come first; a missing root is reported, not fatal."""
    hosts = ssh_rig.hosts[:2]
    for host in hosts:
        var = tmp_path / host.name / "var"
        write(var / "lib/docker/overlay2/layer.tar", "x" * (3 * MB))
        write(var / "log/indostar/app.log", "y" * MB)
        write(var / "log/indostar/app.log.1", "z" * 1000)
    missing = str(tmp_path / "nowhere")
    extra = {h.name: {"disk_report_roots": [str(tmp_path / h.name / "var"), missing]} for h in hosts}
    inventory.write("du", host_inventory(ssh_rig, hosts, tmp_path, extra))

    code, doc = cli_json("disk.report", "--env", "du", "--top", "3")
    assert code == 0, doc
    for host, result in targets(doc, "disk.report").items():
        var, absent = result["data"]["roots"]
        assert var["largest_files"][0] == {"path": str(tmp_path / host / "var/lib/docker/overlay2/layer.tar"),
                                           "bytes": 3 * MB}
        assert len(var["largest_files"]) == 3
        assert var["largest_dirs"][0]["path"] == str(tmp_path / host / "var/lib")
        assert var["total_bytes"] >= 4 * MB and "incomplete" not in var
        assert absent == {"root": missing, "missing": True}
        assert "does not exist" in result["reason"]


def test_budget_stops_a_slow_du(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> None:
    """A du that would hang (a stand-in `du` first on PATH that sleeps) is stopped at the budget, marked incomplete."""
    host = ssh_rig.hosts[0]
    bindir = tmp_path / "slowbin"
    write(bindir / "du", "#!/bin/sh\nexec sleep 60\n").chmod(0o755)
    write(tmp_path / host.name / "var" / "big.bin", "x" * MB)
    inventory.write("slow", host_inventory(ssh_rig, [host], tmp_path, {host.name: {"path_prefix": [str(bindir)]}}))

    started = time.monotonic()
    code, doc = cli_json("disk.report", "--env", "slow", "--budget", "2")
    took = time.monotonic() - started
    root = targets(doc, "disk.report")[host.name]["data"]["roots"][0]
    assert code == 0 and took < 15
    assert "du" in root["incomplete"]
    assert root["largest_files"][0]["bytes"] == MB  # find still ran in the time left


def test_human_bytes() -> None:
    """Sizes read like `du -h`."""
    assert [human_bytes(n) for n in (512, 1536, 3 * MB, 5 * 1024**4)] == ["512B", "1.5K", "3.0M", "5.0T"]
