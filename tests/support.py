"""Helpers shared by the test modules: inventory files, the rig's inventory, running the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.rig.sshd import RigHost, SshRig

REPO = Path(__file__).resolve().parent.parent


class InventoryDir:
    """A temporary inventory directory (INDOSTAR_INVENTORY_DIR points at it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, name: str, data: dict[str, Any] | str) -> Path:
        target = self.path / f"{name}.yaml"
        target.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return target

    def load(self, name: str) -> Any:
        from indostar_ops import load_environment

        return load_environment(name, directory=self.path)


def host_paths(root: Path, host: str) -> dict[str, Any]:
    """Per-host variables that keep every simulated host's files under root/<host>."""
    base = root / host
    return {
        "log_dirs": [str(base / "var/log/indostar")],
        "logrotate_config": str(base / "etc/logrotate.d/indostar"),
        "backup_dir": str(base / "var/backups/indostar-ops"),
        "disk_paths": [str(base)],
        "disk_report_roots": [str(base / "var")],
        "tmp_dirs": [str(base / "tmp/indostar")],
    }


def rig_inventory(rig: SshRig, hosts: list[RigHost], root: Path, *, tier: str = "staging",
                  extra_hosts: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """An environment whose `web` group is the rig's sshd hosts, files under root/<host>."""
    entries: dict[str, Any] = {}
    for host in hosts:
        entries[host.name] = {"address": host.address, "port": host.port, "vars": host_paths(root, host.name)}
        for sub in ("etc/logrotate.d", "var/log/indostar", "var/backups", "tmp/indostar"):
            (root / host.name / sub).mkdir(parents=True, exist_ok=True)
    for name, address in (extra_hosts or {}).items():
        entries[name] = {"address": address, "port": rig.port, "vars": host_paths(root, name)}
    data: dict[str, Any] = {
        "tier": tier,
        "connection": "ssh",
        "ssh": {
            "user": "root",
            "key_file": str(rig.client_key),
            "known_hosts": str(rig.known_hosts),
            "connect_timeout": 5,
        },
        "groups": {"web": {"hosts": entries}},
    }
    data.update(overrides)
    return data


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `invoke ARGS` from the repository as a user would; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})},
    )


def cli_json(*args: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Run a task with --json; returns (exit code, the single JSON document on stdout)."""
    proc = run_cli(*args, "--json", **kwargs)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document: {exc}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}") from None
