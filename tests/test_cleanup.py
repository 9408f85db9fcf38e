"""logs.cleanup / tmp.cleanup on real files with old mtimes, over SSH on three hosts in parallel."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from indostar_ops.context import Context
from indostar_ops.errors import UsageError
from indostar_ops.steps.cleanup import CleanupRotatedLogs, is_rotated_log, parse_age
from tests.host_support import DAY, host_inventory, targets, write
from tests.rig.sshd import SshRig
from tests.support import InventoryDir, cli_json


@pytest.mark.parametrize(("name", "rotated"), [
    ("app.log.1", True), ("app.log.12.gz", True), ("app.log.gz", True), ("app.log-20240501", True),
    ("app.log-20240501.gz", True), ("app.log.2024-05-01", True), ("app.log.2024-05-01_13-00", True),
    ("app.log", False), ("error.log", False), ("notes.txt.1", False), ("app.log.bak", False),
    ("app.log.1.swp", False), ("app.logx.1", False),
])
def test_rotated_log_names(name: str, rotated: bool) -> None:
    """Rotated copies of an active `*.log` are recognised; the active log and anything else are not."""
    assert is_rotated_log(name, ["*.log"]) is rotated


@pytest.mark.parametrize(("text", "seconds"), [("7d", 7 * DAY), ("12h", 12 * 3600), ("90m", 5400), (" 1d ", DAY)])
def test_parse_age(text: str, seconds: int) -> None:
    """--older-than takes days, hours or minutes."""
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["0d", "7", "7w", "-1d", "", "1.5d"])
def test_parse_age_rejects(text: str) -> None:
    """Anything else is a usage error, never a guess."""
    with pytest.raises(UsageError):
        parse_age(text)


def make_logs(base: Path) -> dict[str, list[Path]]:
    """A realistic log tree for one host; returns which files must go and which must stay."""
    logs = base / "var/log/indostar"
    outside = base / "var/log/other"
    go = [
        write(logs / "app.log.1", "a" * 1000, days=10),
        write(logs / "app.log.2.gz", "b" * 500, days=20),
        write(logs / "app.log-20240101", "c" * 10, days=30),
        write(logs / "archive" / "worker.log.5", "d", days=9),
    ]
    stay = [
        write(logs / "app.log", "active\n", days=30),       # active log, however old
        write(logs / "app.log.3", "recent\n", days=2),      # rotated but younger than 7d
        write(logs / "notes.txt", "keep\n", days=40),       # not a log
        write(outside / "app.log.1", "other service\n", days=40),  # outside the configured roots
    ]
    link = logs / "linked.log.9"
    target = write(base / "elsewhere" / "precious.log.9", "never follow symlinks\n", days=40)
    if not link.is_symlink():
        link.symlink_to(target)
    stay += [link, target]
    return {"go": go, "stay": stay}


@pytest.fixture
def logs_env(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> tuple[str, dict[str, dict[str, list[Path]]]]:
    """Inventory 'logs': the three rig hosts, each with its own log tree under tmp_path/<host>."""
    files = {h.name: make_logs(tmp_path / h.name) for h in ssh_rig.hosts}
    inventory.write("logs", host_inventory(ssh_rig, list(ssh_rig.hosts), tmp_path))
    return "logs", files


def test_logs_cleanup_check_previews_and_deletes_nothing(logs_env) -> None:
    """--check lists exactly the eligible rotated logs with the total size, and deletes nothing."""
    env, files = logs_env
    code, doc = cli_json("logs.cleanup", "--env", env, "--older-than", "7d", "--check")
    assert code == 0
    for host, result in targets(doc, "logs.cleanup").items():
        assert result["status"] == "changed"
        assert sorted(f["path"] for f in result["data"]["files"]) == sorted(str(p) for p in files[host]["go"])
        assert result["data"]["total_bytes"] == 1000 + 500 + 10 + 1
        assert "4 rotated log(s)" in result["changes"][0]["summary"]
        assert result["data"]["kept_despite_age"] == {"active log": 1, "not a rotated log": 1}
    assert all(p.exists() for f in files.values() for p in f["go"] + f["stay"])


def test_logs_cleanup_deletes_only_eligible_then_is_a_noop(logs_env) -> None:
    """Apply removes only old rotated logs under log_dirs on every host; a second run has nothing to do."""
    env, files = logs_env
    code, doc = cli_json("logs.cleanup", "--env", env, "--older-than", "7d")
    assert code == 0, doc
    for host, result in targets(doc, "logs.cleanup").items():
        assert result["data"]["deleted"] == 4 and result["data"]["spared"] == []
        assert not any(p.exists() for p in files[host]["go"])
        assert all(p.exists() or p.is_symlink() for p in files[host]["stay"])
    code, doc = cli_json("logs.cleanup", "--env", env, "--older-than", "7d")
    assert code == 0
    assert all(r["status"] == "ok" and "no rotated log(s) older than 7d" in r["reason"]
               for r in targets(doc, "logs.cleanup").values())


def test_file_changed_since_the_plan_is_spared(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> None:
    """A planned file written to between plan and apply is re-checked on the host and kept."""
    host = ssh_rig.hosts[0]
    files = make_logs(tmp_path / host.name)
    env = inventory.load(inventory.write("one", host_inventory(ssh_rig, [host], tmp_path)).stem)
    step = CleanupRotatedLogs(7 * DAY)
    with Context(env, interactive=False) as ctx:
        target = env.hosts()[0]
        scoped = ctx.scoped(step.name, target.name)
        plan = step.plan(step.check(scoped, target))
        busy = files["go"][0]
        busy.write_text("written after the plan\n")
        outcome = step.apply(scoped, target, plan)
    assert busy.exists() and list(outcome.data["spared"]) == [str(busy)]
    assert outcome.data["deleted"] == 3 and not any(p.exists() for p in files["go"][1:])


@pytest.mark.parametrize(("setting", "path"), [("log_dirs", "/var/log"), ("tmp_dirs", "/tmp"), ("log_dirs", "/")])
def test_system_directories_are_refused(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path,
                                        setting: str, path: str) -> None:
    """log_dirs: [/var/log] or tmp_dirs: [/tmp] is refused outright, nothing is listed or deleted."""
    host = ssh_rig.hosts[0]
    inventory.write("wide", host_inventory(ssh_rig, [host], tmp_path, {host.name: {setting: [path]}}))
    task = "logs.cleanup" if setting == "log_dirs" else "tmp.cleanup"
    code, doc = cli_json(task, "--env", "wide", "--check")
    assert code == 2 and "refusing to clean" in doc["error"] and "steps" not in doc  # before any connection


@pytest.mark.parametrize("points_at", ["/etc", "/tmp", "/", "/usr/lib"])
def test_a_symlinked_root_is_judged_by_what_it_resolves_to(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path,
                                                           points_at: str) -> None:
    """tmp_dirs: [.../tmp-alias] -> /etc is /etc: refused naming both paths, nothing listed or deleted."""
    host = ssh_rig.hosts[0]
    alias = tmp_path / host.name / "srv/app/tmp-alias"
    alias.parent.mkdir(parents=True, exist_ok=True)
    alias.symlink_to(points_at)
    inventory.write("alias", host_inventory(ssh_rig, [host], tmp_path, {host.name: {"tmp_dirs": [str(alias)]}}))
    for extra in (["--check"], []):
        code, doc = cli_json("tmp.cleanup", "--env", "alias", "--older-than", "1m", *extra)
        result = targets(doc, "tmp.cleanup")[host.name]
        assert code == 1 and result["status"] == "failed", result
        assert f"'{alias}' resolves to '{points_at}' on the host" in result["error"]
        assert "refusing to clean" in result["error"] and "files" not in result.get("data", {})
        assert "actions" not in result  # nothing was deleted: no write ever started


def test_a_root_that_is_a_file_is_refused(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> None:
    """A root that resolves to a regular file is not a directory to clean."""
    host = ssh_rig.hosts[0]
    plain = write(tmp_path / host.name / "srv/not-a-dir", "x", days=30)
    inventory.write("file", host_inventory(ssh_rig, [host], tmp_path, {host.name: {"tmp_dirs": [str(plain)]}}))
    code, doc = cli_json("tmp.cleanup", "--env", "file", "--older-than", "1d")
    result = targets(doc, "tmp.cleanup")[host.name]
    assert code == 1 and "is not a directory" in result["error"] and plain.exists()


def test_a_symlinked_root_to_a_real_app_dir_cleans_the_resolved_dir(inventory: InventoryDir, ssh_rig: SshRig,
                                                                    tmp_path: Path) -> None:
    """An alias of an ordinary directory is allowed; the plan names the resolved directory it cleans."""
    host = ssh_rig.hosts[1]
    real = tmp_path / host.name / "data/app-tmp"
    old = write(real / "old.bin", "x" * 10, days=3)
    alias = tmp_path / host.name / "srv/tmp-alias"
    alias.parent.mkdir(parents=True, exist_ok=True)
    alias.symlink_to(real)
    inventory.write("ok", host_inventory(ssh_rig, [host], tmp_path, {host.name: {"tmp_dirs": [str(alias)]}}))
    code, doc = cli_json("tmp.cleanup", "--env", "ok", "--older-than", "1d")
    result = targets(doc, "tmp.cleanup")[host.name]
    assert code == 0, result
    assert result["data"]["roots"] == [str(real)] and result["data"]["resolved"] == {str(alias): str(real)}
    assert not old.exists() and alias.is_symlink()


def test_invalid_age_is_a_usage_error(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> None:
    """--older-than 0d stops before anything runs (exit 2)."""
    inventory.write("one", host_inventory(ssh_rig, ssh_rig.hosts[:1], tmp_path))
    code, doc = cli_json("logs.cleanup", "--env", "one", "--older-than", "0d")
    assert code == 2 and "invalid age" in doc["error"]


def test_tmp_cleanup_removes_old_files_only(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> None:
    """tmp.cleanup deletes old files under tmp_dirs (nested too), keeps new ones, dirs and everything outside."""
    host = ssh_rig.hosts[1]
    tmp = tmp_path / host.name / "tmp/indostar"
    old = [write(tmp / "upload-1.bin", "x" * 2048, days=3), write(tmp / "sub" / "deep" / "cache.json", "{}", days=8)]
    new = [write(tmp / "upload-2.bin", "fresh", days=0.5)]
    outside = write(tmp_path / host.name / "tmp" / "other-app" / "old.bin", "not ours", days=90)
    inventory.write("tmp", host_inventory(ssh_rig, [host], tmp_path))

    code, doc = cli_json("tmp.cleanup", "--env", "tmp", "--older-than", "1d", "--check")
    assert code == 0 and targets(doc, "tmp.cleanup")[host.name]["data"]["total_bytes"] == 2050
    assert all(p.exists() for p in old)

    code, doc = cli_json("tmp.cleanup", "--env", "tmp", "--older-than", "1d")
    assert code == 0, doc
    assert not any(p.exists() for p in old) and all(p.exists() for p in new) and outside.exists()
    assert (tmp / "sub" / "deep").is_dir()
    code, doc = cli_json("tmp.cleanup", "--env", "tmp", "--older-than", "1d")
    assert code == 0 and targets(doc, "tmp.cleanup")[host.name]["status"] == "ok"


def test_age_is_measured_to_the_minute(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> None:
    """--older-than 90m takes a file 2 h old and keeps one 1 h old (no day rounding as with find -mtime)."""
    host = ssh_rig.hosts[2]
    tmp = tmp_path / host.name / "tmp/indostar"
    two_hours, one_hour = write(tmp / "a", "a"), write(tmp / "b", "b")
    now = time.time()
    os.utime(two_hours, (now - 7200, now - 7200))
    os.utime(one_hour, (now - 3600, now - 3600))
    inventory.write("tmp", host_inventory(ssh_rig, [host], tmp_path))
    code, _doc = cli_json("tmp.cleanup", "--env", "tmp", "--older-than", "90m")
    assert code == 0 and not two_hours.exists() and one_hour.exists()
