"""Fixtures for the SSH reachability tests: a bastion sshd beside the rig's hosts, users, an agent.

The bastion is a second rig sshd on other loopback addresses (127.0.3.1 and .2, so a chain of
two jumps is possible) with its own host key, LogLevel DEBUG1 so its log shows every forwarded
channel (`server_request_direct_tcpip: ... target ADDR port PORT`: OpenSSH logs forwarding
only at DEBUG1, not VERBOSE), and TCP forwarding allowed (OpenSSH's default, stated anyway).
The rig's client key is authorised on it, and `known_hosts` holds both rigs' host keys.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.rig.sshd import RigHost, SshRig
from tests.support import rig_inventory

BASTION_PREFIX = "127.0.3."


@dataclass
class Bastion:
    rig: SshRig
    known_hosts: Path  # the fleet's and the bastion's host keys

    @property
    def hops(self) -> list[RigHost]:
        return self.rig.hosts

    def spec(self, index: int = 0, user: str = "root") -> str:
        hop = self.rig.hosts[index]
        return f"{user}@{hop.address}:{hop.port}"

    def log(self) -> str:
        return self.rig.log_text()

    def forwarded_to(self, since: int, host: RigHost) -> int:
        """How many channels the bastion forwarded to `host` after log offset `since`."""
        return self.log()[since:].count(f"target {host.address} port {host.port}")

    def logins(self, since: int) -> int:
        return self.log()[since:].count("Accepted publickey")

    def connections(self, since: int) -> int:
        return self.log()[since:].count("Connection from")


@pytest.fixture(scope="session", name="bastion")
def bastion_fixture(ssh_rig: SshRig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bastion]:
    base = tmp_path_factory.mktemp("bastion")
    rig = SshRig(base / "sshd", port=_free_port(BASTION_PREFIX + "1"), address_prefix=BASTION_PREFIX,
                 log_level="DEBUG1", extra_config="AllowTcpForwarding yes\n", client_key=ssh_rig.client_key)
    rig.start(2)
    known = base / "known_hosts"
    known.write_text(ssh_rig.known_hosts.read_text() + rig.known_hosts.read_text())
    yield Bastion(rig, known)
    rig.stop()


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def reach_inventory(ssh_rig: SshRig, bastion: Bastion, hosts: list[RigHost], root: Path,
                    **ssh: Any) -> dict[str, Any]:
    """The rig inventory with known_hosts covering the bastion too, and `ssh` settings merged in."""
    data = rig_inventory(ssh_rig, hosts, root)
    data["ssh"].update({"known_hosts": str(bastion.known_hosts), "connect_timeout": 5, **ssh})
    return data


def new_key(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


class SilentListener:
    """A TCP port that accepts connections and never says a word (a hung sshd, a black-holed service).

    Counts the connections it accepted, so a test can prove a host was tried once, not three times.
    """

    def __init__(self, address: str = "127.0.2.251") -> None:
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.address = address
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)  # open, silent

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._held:
            conn.close()
        self.sock.close()
