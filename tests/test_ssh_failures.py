"""A failure costs once: a silent host costs one connect timeout and is never retried; a dropped
connection is retried once, on a NEW connection (the dead transport is reset first)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from indostar_ops import Context, Runner, load_environment
from indostar_ops.connectors.ssh import SSHConnector
from indostar_ops.errors import ConnectionFailed
from indostar_ops.step import Plan, Step
from indostar_ops.steps.disk import DiskCheck
from tests.rig.sshd import RigHost, SshRig
from tests.ssh_support import SilentListener
from tests.support import InventoryDir, rig_inventory

TIMEOUT = 4.0  # generous: the other hosts must finish well inside it even on a loaded machine


@pytest.fixture
def silent() -> Any:
    listener = SilentListener()
    yield listener
    listener.close()


def test_silent_host_costs_one_timeout_and_never_delays_the_others(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path, silent: SilentListener,
) -> None:
    """A port that accepts TCP and never sends a banner: `unreachable` after ONE connect timeout with
    the reason in words, tried once (one TCP connection), while the other hosts finish at once."""
    data = rig_inventory(ssh_rig, rig_hosts[:2], tmp_path / "h")
    data["ssh"]["connect_timeout"] = TIMEOUT
    data["groups"]["web"]["hosts"]["silent"] = {"address": silent.address, "port": silent.port}
    inventory.write("rig", data)
    seen: dict[str, float] = {}
    started = time.monotonic()
    with Context(load_environment("rig"), check=True) as ctx:
        result = Runner(ctx, reporter=lambda r: seen.setdefault(r.target, time.monotonic() - started)).run(
            [DiskCheck()], task="disk.check")
    by_target = {r.target: r for r in result.results}
    dead = by_target["silent"]
    assert dead.status == "unreachable"
    assert f"no SSH banner within {TIMEOUT:g} s" in (dead.error or "")
    assert TIMEOUT * 0.9 <= dead.duration < TIMEOUT * 1.75  # one timeout, not three
    assert silent.accepted == 1  # never retried
    for host in rig_hosts[:2]:
        assert by_target[host.name].status == "ok"
        assert seen[host.name] < TIMEOUT * 0.9, seen  # reported before the dead host's timeout ran out


def test_a_dead_host_never_holds_back_the_others_changes(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path, silent: SilentListener,
) -> None:
    """A changing step (logs.install-rotation): the live hosts are installed and reported before the dead
    host's connect timeout runs out; the dead host is `unreachable` after one try."""
    from indostar_ops.steps.logrotate import InstallLogrotate

    data = rig_inventory(ssh_rig, rig_hosts[:2], tmp_path / "h")
    data["ssh"]["connect_timeout"] = TIMEOUT
    data["groups"]["web"]["hosts"]["silent"] = {"address": silent.address, "port": silent.port}
    inventory.write("rig", data)
    seen: dict[str, float] = {}
    started = time.monotonic()
    with Context(load_environment("rig"), interactive=False) as ctx:
        result = Runner(ctx, reporter=lambda r: seen.setdefault(r.target, time.monotonic() - started)).run(
            [InstallLogrotate(["web"])], task="logs.install-rotation")
    by_target = {r.target: r for r in result.results}
    assert by_target["silent"].status == "unreachable" and silent.accepted == 1
    for host in rig_hosts[:2]:
        assert by_target[host.name].status == "changed"
        assert seen[host.name] < TIMEOUT * 0.9, seen  # applied and reported while the dead host still waits
    assert result.exit_code() == 1


_SSHD_ANCESTORS = ('p=$$; while [ "$p" -gt 1 ]; do [ "$(cat /proc/$p/comm)" = sshd ] && echo "$p"; '
                   "p=$(cut -d' ' -f4 /proc/$p/stat); done")


def _kill_session(ssh_rig: SshRig, pids_text: str) -> int:
    """Kill the sshd processes serving one connection (never the rig's listener); returns the session pid."""
    pids = [int(p) for p in pids_text.split()]
    session = [p for p in pids if p not in ssh_rig.pids]
    assert session, f"no sshd session process among {pids}"
    for pid in session:
        os.kill(pid, signal.SIGKILL)
    return session[0]


def test_dropped_connection_raises_connection_failed_then_reconnects(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """Server side killed between two reads: the next command fails fast with ConnectionFailed (not a hang,
    not the command timeout), and the one after that runs on a fresh connection."""
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts[:1], tmp_path / "h"))
    target = load_environment("rig").hosts()[0]
    connector = SSHConnector(target, load_environment("rig").ssh)
    try:
        first = connector.run(["sh", "-c", _SSHD_ANCESTORS]).stdout
        killed = _kill_session(ssh_rig, first)
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="connection lost"):
            connector.run(["true"])
        assert time.monotonic() - started < 5
        again = connector.run(["sh", "-c", _SSHD_ANCESTORS]).stdout
        assert killed not in [int(p) for p in again.split()]
    finally:
        connector.close()


class _TwoReads(Step[dict[str, Any]]):
    """Reads twice; the first time, the server side of the connection is killed between the reads."""

    name = "test.two-reads"
    read_only = True

    def __init__(self, rig: SshRig) -> None:
        self._rig = rig
        self._lock = threading.Lock()
        self.attempts: list[str] = []
        self.killed: int | None = None

    def check(self, ctx: Context, target: Any) -> dict[str, Any]:
        host = ctx.host(target)
        first = host.read(["sh", "-c", _SSHD_ANCESTORS]).stdout
        self.attempts.append(first)
        with self._lock:
            if self.killed is None:
                self.killed = _kill_session(self._rig, first)
        second = host.read(["sh", "-c", _SSHD_ANCESTORS]).stdout
        return {"first": first, "second": second}

    def plan(self, state: dict[str, Any]) -> Plan:
        return Plan.nothing("read twice", data=state)


def test_runner_retries_a_dropped_read_once_on_a_new_connection(
    inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    inventory.write("rig", rig_inventory(ssh_rig, rig_hosts[:1], tmp_path / "h"))
    step = _TwoReads(ssh_rig)
    with Context(load_environment("rig"), check=True) as ctx:
        result = Runner(ctx).run([step], task="test")
    [outcome] = result.results
    assert outcome.status == "ok", outcome.error
    assert len(step.attempts) == 2  # retried once
    assert step.killed not in [int(p) for p in step.attempts[1].split()]  # ...on a new connection
