"""Shared pieces for the host-procedure tests (certs, maintenance, cleanup, docker, disk report).

Everything runs over the session `ssh_rig` (loopback sshd "hosts" that are this machine),
so every task goes through real SSH. Ports for private nginx/pebble instances are picked
free at start-up so that parallel pytest runs (or the rig's own self-tests) never collide.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.rig.acme import AcmeRig
from tests.rig.nginx import NginxRig
from tests.rig.sshd import RigHost, SshRig
from tests.support import rig_inventory

DAY = 86400
DOMAIN = "shop.indostar.test"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def host_inventory(ssh_rig: SshRig, hosts: list[RigHost], root: Path,
                   host_vars: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    """`rig_inventory` (web group = the rig hosts, files under root/<host>) plus extra vars per host."""
    data = rig_inventory(ssh_rig, hosts, root, **overrides)
    for name, extra in (host_vars or {}).items():
        data["groups"]["web"]["hosts"][name]["vars"].update(extra)
    return data


def age(path: Path, days: float) -> Path:
    """Set a file's mtime (and atime) to `days` ago; returns the path."""
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp), follow_symlinks=False)
    return path


def write(path: Path, text: str = "x\n", days: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return age(path, days) if days is not None else path


def targets(doc: dict[str, Any], step: str) -> dict[str, dict[str, Any]]:
    """The per-target results of one step of a `--json` run document, by target name."""
    for entry in doc.get("steps", []):
        if entry["step"] == step:
            return {t["target"]: t for t in entry["targets"]}
    raise AssertionError(f"step {step} not in run document: {doc}")


@dataclass
class AcmeSite:
    """pebble + a certbot-issued certificate + a private nginx serving it over TLS."""

    acme: AcmeRig
    nginx: NginxRig
    config_dir: Path
    live: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.nginx.https_port}"

    def certbot_vars(self) -> dict[str, Any]:
        """Inventory host vars that point certs.* at this pebble, certbot config dir and nginx."""
        return {
            "nginx": {"command": self.nginx.nginx_cmd_prefix()},
            "certbot": {
                "command": ["env", f"REQUESTS_CA_BUNDLE={self.acme.listener_ca_path}", "certbot"],
                "options": ["--config-dir", str(self.config_dir), "--work-dir", str(self.config_dir / "work"),
                            "--logs-dir", str(self.config_dir / "logs"), "--server", self.acme.directory_url],
            },
            "certificates": [{"name": DOMAIN, "endpoint": self.endpoint, "ca_file": str(self.acme.root_ca_path)}],
        }


@pytest.fixture(scope="session")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeSite]:
    """Issue one certificate through a real pebble with the real certbot; serve it with a private nginx."""
    base = tmp_path_factory.mktemp("acme-site")
    acme = AcmeRig(base / "acme", acme_port=free_port(), mgmt_port=free_port(), http01_port=free_port())
    nginx: NginxRig | None = None
    try:
        acme.start()
        config_dir = base / "letsencrypt"
        live = acme.issue(DOMAIN, config_dir)
        nginx = NginxRig(base / "nginx", http_port=free_port(), https_port=free_port(), backend_port=free_port(),
                         https_cert=live / "fullchain.pem", https_key=live / "privkey.pem", server_name=DOMAIN)
        nginx.start()
        yield AcmeSite(acme, nginx, config_dir, live)
    finally:
        if nginx is not None:
            nginx.stop()
        acme.stop()
