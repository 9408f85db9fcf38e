"""volume.resize, host half, over the real sshd rig: an xfs filesystem on a loop device grows online.

The "EBS volume" is a file-backed loop device: the test makes the file bigger and
refreshes the loop device's capacity (what the kernel sees after ModifyVolume), then
runs the `volume.grow-fs` step over SSH as a user would. On this machine online ext4
growth (resize2fs on a mounted filesystem) is refused by the kernel ("Permission denied
to resize filesystem", the container lacks the capability), and loop partitions get no
device nodes (no udev), so the rig test uses xfs without a partition; the partition
path (growpart first) is covered by the plan test below and was run by hand on an
image file (growpart --dry-run / growpart on a sfdisk-partitioned file: CHANGED).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indostar_ops import Context, Runner
from indostar_ops.steps.aws.volume import FsState, GrowFilesystem
from tests.rig.sshd import RigHost, SshRig
from tests.support import InventoryDir, rig_inventory

needs_loop = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists()
    or not all(shutil.which(t) for t in ("mkfs.xfs", "xfs_growfs", "losetup")),
    reason="needs root, loop devices and xfsprogs (scripts/install-system-deps.sh)")


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def xfs_mount(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    image, mount = tmp_path / "volume.img", tmp_path / "data"
    mount.mkdir()
    with image.open("wb") as f:
        f.truncate(300 * 2**20)
    _sh("mkfs.xfs", "-q", str(image))
    device = _sh("losetup", "-f", "--show", str(image))
    try:
        try:
            _sh("mount", device, str(mount))
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot mount a loop device here: {exc.stderr.strip()}")
        yield image, mount, device
    finally:
        subprocess.run(["umount", str(mount)], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def _df(mount: Path) -> int:
    return int(_sh("df", "-B1", "--output=size", str(mount)).splitlines()[-1])


def _run(env: Any, steps: list[Any], *, check: bool = False) -> Any:
    with Context(env, check=check, assume_yes=True, interactive=False) as ctx:
        return Runner(ctx).run(steps, task="volume.resize")


@needs_loop
def test_grow_fs_over_ssh_grows_xfs_to_the_bigger_device_then_is_a_noop(
        xfs_mount, inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path) -> None:
    image, mount, device = xfs_mount
    host = rig_hosts[0]
    inventory.write("rig", rig_inventory(ssh_rig, [host], tmp_path / "h"))
    env = inventory.load("rig")

    same = _run(env, [GrowFilesystem(host.name, str(mount))]).results[0]
    assert same.status == "ok" and "already fills its device" in same.reason

    before = _df(mount)
    not_yet = _run(env, [GrowFilesystem(host.name, str(mount), min_bytes=400 * 2**20, wait_s=0.3)]).results[0]
    assert not_yet.status == "failed" and f"{device} at 0.39 GiB: not done" in not_yet.error
    assert "rescan the device" in not_yet.error

    with image.open("r+b") as f:  # what ModifyVolume does to the block device
        f.truncate(400 * 2**20)
    _sh("losetup", "-c", device)

    preview = _run(env, [GrowFilesystem(host.name, str(mount))], check=True).results[0]
    assert preview.status == "changed" and preview.changes[0].summary.startswith(f"xfs_growfs {mount}")
    assert _df(mount) == before

    grown = _run(env, [GrowFilesystem(host.name, str(mount), min_bytes=400 * 2**20)]).results[0]
    assert grown.status == "changed", grown.error
    assert [a["command"] for a in grown.actions] == [f"xfs_growfs {mount}"]
    assert _df(mount) > before + 80 * 2**20
    assert grown.data["df_bytes"] == _df(mount)

    again = _run(env, [GrowFilesystem(host.name, str(mount))]).results[0]
    assert again.status == "ok"


def test_grow_fs_refuses_a_path_that_is_not_a_mount_point(inventory: InventoryDir, ssh_rig: SshRig,
                                                         rig_hosts: list[RigHost], tmp_path: Path) -> None:
    host = rig_hosts[0]
    inventory.write("rig", rig_inventory(ssh_rig, [host], tmp_path / "h"))
    result = _run(inventory.load("rig"), [GrowFilesystem(host.name, str(tmp_path))]).results[0]
    assert result.status == "failed" and f"{tmp_path} is not a mount point" in result.error


def test_plan_on_a_partition_runs_growpart_before_the_filesystem() -> None:
    state = FsState("web-1", "/data", "/dev/nvme1n1p1", "ext4", device_bytes=100 * 2**30, fs_bytes=100 * 2**30,
                    df_bytes=98 * 2**30, partition=("/dev/nvme1n1", 1), partition_grows=True)
    plan = GrowFilesystem("web-1", "/data").plan(state)
    assert [list(c.params["argv"]) for c in plan.changes] == [["growpart", "/dev/nvme1n1", "1"],
                                                              ["resize2fs", "/dev/nvme1n1p1"]]
    done = FsState("web-1", "/data", "/dev/nvme1n1p1", "ext4", 100 * 2**30, 100 * 2**30 - 4096, 98 * 2**30,
                   ("/dev/nvme1n1", 1), False)
    assert GrowFilesystem("web-1", "/data").plan(done).noop
