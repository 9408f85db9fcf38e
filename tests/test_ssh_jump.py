"""Reaching hosts as operators do: through a bastion (one shared login), a chain of jumps,
ssh-agent keys, an encrypted key whose passphrase is a secret reference, and ssh_config.

Everything is real: the rig's sshd hosts, a bastion sshd whose own log proves each forwarded
channel, a real ssh-agent, and `invoke ssh.check` run as a user would.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host_support import targets
from tests.rig.sshd import RigHost, SshRig, unreachable_address
from tests.ssh_support import Bastion, bastion_fixture, new_key, reach_inventory  # noqa: F401 - fixture
from tests.support import InventoryDir, cli_json, run_cli


def _check(env: str = "rig") -> tuple[int, dict[str, dict]]:
    code, doc = cli_json("ssh.check", "--env", env)
    return code, targets(doc, "ssh.check")


def test_hosts_behind_a_bastion_share_one_bastion_login(
    inventory: InventoryDir, ssh_rig: SshRig, bastion: Bastion, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """Three hosts through one bastion: every command goes through it, over ONE bastion login."""
    inventory.write("rig", reach_inventory(ssh_rig, bastion, rig_hosts, tmp_path / "h", jump=bastion.spec(0)))
    mark = len(bastion.log())
    code, by_host = _check()
    assert code == 0, by_host
    for host in rig_hosts:
        result = by_host[host.name]
        assert result["severity"] == "OK"
        assert result["data"]["route"] == [f"jump host (root@{bastion.spec(0)[5:]})",
                                           f"root@{host.address}:{host.port}"]
        assert "via jump host" in result["reason"]
        assert bastion.forwarded_to(mark, host) == 1, bastion.log()[mark:]
    assert bastion.logins(mark) == 1  # not one bastion login per host

    # a real change through the bastion: the logrotate config lands on every host
    proc = run_cli("logs.install-rotation", "--env", "rig")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in rig_hosts:
        assert (tmp_path / "h" / host.name / "etc/logrotate.d/indostar").is_file()


def test_chain_of_two_jumps_per_group_and_a_direct_host(
    inventory: InventoryDir, ssh_rig: SshRig, bastion: Bastion, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """Group-level `jump:` chain (bastion 1 -> bastion 2 -> host); a host-level `jump: none` goes direct."""
    data = reach_inventory(ssh_rig, bastion, rig_hosts[:2], tmp_path / "h")
    group = data["groups"]["web"]
    group["jump"] = [bastion.spec(0), bastion.spec(1)]
    group["hosts"][rig_hosts[1].name]["jump"] = "none"
    inventory.write("rig", data)
    mark = len(bastion.log())
    code, by_host = _check()
    assert code == 0, by_host
    chained, direct = by_host[rig_hosts[0].name], by_host[rig_hosts[1].name]
    assert len(chained["data"]["route"]) == 3
    assert direct["data"]["route"] == [f"root@{rig_hosts[1].address}:{rig_hosts[1].port}"]
    assert bastion.forwarded_to(mark, bastion.hops[1]) == 1  # first hop forwarded to the second
    assert bastion.forwarded_to(mark, rig_hosts[0]) == 1  # the second forwarded to the host
    assert bastion.forwarded_to(mark, rig_hosts[1]) == 0  # the direct host never touched a bastion


def test_wrong_bastion_host_key_is_refused_before_any_host_is_tried(
    inventory: InventoryDir, ssh_rig: SshRig, bastion: Bastion, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """A bastion whose key differs from known_hosts: every host says so, the bastion is tried once,
    no host behind it is contacted, and a real task reports the hosts `unreachable` (exit 1)."""
    impostor = new_key(tmp_path / "impostor").with_suffix(".pub").read_text().split()
    known = tmp_path / "known_hosts"
    hop = bastion.hops[0]
    known.write_text(ssh_rig.known_hosts.read_text() + f"[{hop.address}]:{hop.port} {impostor[0]} {impostor[1]}\n")
    inventory.write("rig", reach_inventory(ssh_rig, bastion, rig_hosts, tmp_path / "h", jump=bastion.spec(0),
                                           known_hosts=str(known)))
    mark, fleet_mark = len(bastion.log()), len(ssh_rig.log_text())
    code, by_host = _check()
    assert code == 2  # CRITICAL
    for host in rig_hosts:
        data = by_host[host.name]["data"]
        assert data["stage"] == "hostkey" and data["failed_at"].startswith("jump host")
        assert "host key CHANGED" in by_host[host.name]["reason"]
    assert bastion.connections(mark) == 1  # the failure was shared, not retried per host
    assert bastion.logins(mark) == 0
    assert "Connection from" not in ssh_rig.log_text()[fleet_mark:]  # no host was tried

    code, doc = cli_json("disk.check", "--env", "rig")
    statuses = {t["status"] for t in targets(doc, "disk.check").values()}
    assert statuses == {"unreachable"} and code == 3


def test_unknown_host_key_is_refused_and_never_added(
    inventory: InventoryDir, ssh_rig: SshRig, bastion: Bastion, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """RejectPolicy: a host missing from known_hosts is refused with its fingerprint; the file is untouched;
    the refusal is not retried (one TCP connection to that sshd)."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    target = bastion.hops[1]  # any sshd will do; the bastion's log counts connections
    data = reach_inventory(ssh_rig, bastion, [], tmp_path / "h", known_hosts=str(known))
    data["groups"]["web"]["hosts"]["stranger"] = {"address": target.address, "port": target.port}
    inventory.write("rig", data)
    mark = len(bastion.log())
    code, doc = cli_json("disk.check", "--env", "rig")
    result = targets(doc, "disk.check")["stranger"]
    assert result["status"] == "unreachable" and code == 3
    assert "host key unknown" in result["error"] and "ssh-keyscan" in result["error"]
    assert known.read_text() == ""
    assert bastion.connections(mark) == 1

    code, by_host = _check()
    assert code == 2 and by_host["stranger"]["data"]["stage"] == "hostkey"


def test_ssh_check_names_the_failing_hop(
    inventory: InventoryDir, ssh_rig: SshRig, bastion: Bastion, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """Bastion down, host down behind a working bastion, wrong key: each in words, on the right hop."""
    stranger_key = new_key(tmp_path / "not_authorised")
    data = reach_inventory(ssh_rig, bastion, rig_hosts[:1], tmp_path / "h")
    hosts = data["groups"]["web"]["hosts"]
    hosts["via-dead-bastion"] = {"address": rig_hosts[1].address, "port": ssh_rig.port,
                                 "jump": f"root@{unreachable_address()}:{bastion.rig.port}"}
    hosts["dead-behind-bastion"] = {"address": unreachable_address(), "port": ssh_rig.port, "jump": bastion.spec(0)}
    data["groups"]["keyless"] = {"hosts": {"wrong-key": {"address": rig_hosts[2].address, "port": ssh_rig.port}}}
    inventory.write("rig", data)
    code, by_host = _check()
    assert code == 2
    assert by_host[rig_hosts[0].name]["severity"] == "OK"

    dead_bastion = by_host["via-dead-bastion"]
    assert dead_bastion["data"]["failed_at"] == f"jump host (root@{unreachable_address()}:{bastion.rig.port})"
    assert "TCP connection refused" in dead_bastion["reason"]

    dead_host = by_host["dead-behind-bastion"]
    assert dead_host["data"]["failed_at"] == "the host itself"
    assert dead_host["data"]["stage"] == "forward"
    assert "the jump host cannot open a TCP connection" in dead_host["reason"]

    # wrong key: the same inventory with a key the hosts do not authorise
    data["ssh"]["key_file"] = str(stranger_key)
    data["groups"] = {"keyless": data["groups"]["keyless"]}
    inventory.write("rig", data)
    proc = run_cli("ssh.check", "--env", "rig")  # the table, as an operator sees it
    assert proc.returncode == 2
    assert "CRITICAL" in proc.stdout and "authentication refused for user root" in proc.stdout
    assert "server offers publickey" in proc.stdout and "not_authorised" in proc.stdout


@pytest.fixture
def agent(tmp_path: Path, ssh_rig: SshRig, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real ssh-agent (foreground, so this test owns its pid) holding the rig's key."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert "SSH_AUTH_SOCK" in proc.stdout.readline()  # printed once the socket listens
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(ssh_rig.client_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_agent_keys_without_a_key_file(
    inventory: InventoryDir, ssh_rig: SshRig, bastion: Bastion, rig_hosts: list[RigHost], tmp_path: Path,
    agent: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ssh.agent: true` and no key file: the agent's key logs into the bastion and the host behind it."""
    data = reach_inventory(ssh_rig, bastion, rig_hosts[:2], tmp_path / "h", agent=True, jump=bastion.spec(0))
    del data["ssh"]["key_file"]
    inventory.write("rig", data)
    code, by_host = _check()
    assert code == 0, by_host

    monkeypatch.delenv("SSH_AUTH_SOCK")
    code, by_host = _check()
    assert code == 2
    assert "SSH_AUTH_SOCK is not set" in by_host[rig_hosts[0].name]["reason"]


def test_encrypted_key_with_a_passphrase_reference(
    inventory: InventoryDir, ssh_rig: SshRig, bastion: Bastion, rig_hosts: list[RigHost], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The passphrase is `env:NAME`, never a literal; a wrong one is said in words and never printed."""
    key = new_key(tmp_path / "encrypted", passphrase="correct horse")
    with ssh_rig.authorized_keys.open("a") as keys:  # the rig's hosts and the bastion share this file's key
        keys.write(key.with_suffix(".pub").read_text())
    with bastion.rig.authorized_keys.open("a") as keys:
        keys.write(key.with_suffix(".pub").read_text())
    data = reach_inventory(ssh_rig, bastion, rig_hosts[:1], tmp_path / "h", key_file=str(key),
                           key_passphrase="env:RIG_KEY_PASSPHRASE", jump=bastion.spec(0))
    inventory.write("rig", data)
    monkeypatch.setenv("RIG_KEY_PASSPHRASE", "correct horse")
    code, by_host = _check()
    assert code == 0, by_host

    monkeypatch.setenv("RIG_KEY_PASSPHRASE", "wrong battery")
    code, doc = cli_json("ssh.check", "--env", "rig")
    assert code == 2 and "wrong ssh.key_passphrase" in str(doc)
    assert "wrong battery" not in str(doc)

    data["ssh"]["key_passphrase"] = "correct horse"  # a literal is refused at load
    inventory.write("rig", data)
    proc = run_cli("logs.install-rotation", "--env", "rig", "--check")
    assert proc.returncode == 2 and "never literal values" in proc.stdout + proc.stderr


def test_ssh_config_host_patterns_and_proxyjump(
    inventory: InventoryDir, ssh_rig: SshRig, bastion: Bastion, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """An operator's ssh_config supplies HostName/Port/User/IdentityFile/ProxyJump/UserKnownHostsFile;
    the inventory's explicit values win (here: a Port the config gets wrong); other keys are ignored."""
    hop = bastion.hops[0]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host shop-web-1\n    HostName {rig_hosts[0].address}\n    ProxyJump jumpbox\n"
        f"Host shop-web-2\n    HostName {rig_hosts[1].address}\n    Port 1\n"
        f"Host jumpbox\n    HostName {hop.address}\n    Port {hop.port}\n    User root\n"
        f"Host *\n    User root\n    Port {ssh_rig.port}\n    IdentityFile {ssh_rig.client_key}\n"
        f"    UserKnownHostsFile {bastion.known_hosts}\n    ProxyCommand false\n    ForwardAgent yes\n",
    )
    data = {
        "tier": "staging", "connection": "ssh",
        "ssh": {"config_file": str(config), "connect_timeout": 5},
        "groups": {"web": {"hosts": {"shop-web-1": {}, "shop-web-2": {"port": ssh_rig.port}}}},
    }
    inventory.write("rig", data)
    mark = len(bastion.log())
    code, by_host = _check()
    assert code == 0, by_host
    assert by_host["shop-web-1"]["data"]["route"] == [
        f"jump host jumpbox (root@{hop.address}:{hop.port})", f"root@{rig_hosts[0].address}:{ssh_rig.port}"]
    assert by_host["shop-web-2"]["data"]["route"] == [f"root@{rig_hosts[1].address}:{ssh_rig.port}"]
    assert bastion.forwarded_to(mark, rig_hosts[0]) == 1


def test_bastion_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks.bastion shrunk (3 hosts, one run) so it cannot rot: it checks one bastion login per run."""
    from benchmarks import bastion as bench
    from benchmarks.common import BENCH_PREFIX, free_port

    port = free_port(BENCH_PREFIX + "1")
    assert bench.main(["--hosts", "3", "--runs", "1", "--port", str(port), "--out", str(tmp_path / "r.json")]) == 0
    assert "one bastion login per run, 3 forwarded channels" in capsys.readouterr().out
    assert (tmp_path / "r.json").is_file()


def test_as_a_preflight_gate_only_the_named_groups_and_unreachable_fails(
    inventory: InventoryDir, ssh_rig: SshRig, bastion: Bastion, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    """Through the registry, as a playbook's preflight builds it: only the window's groups are checked,
    and a host behind a dead bastion is `unreachable` (a failed step: gated phases do not start)."""
    from indostar_ops import Context, Runner, load_environment
    from indostar_ops.registry import step_class

    data = reach_inventory(ssh_rig, bastion, rig_hosts[:1], tmp_path / "h")
    data["groups"]["web"]["hosts"]["behind-dead-bastion"] = {
        "address": rig_hosts[1].address, "port": ssh_rig.port,
        "jump": f"root@{unreachable_address()}:{bastion.rig.port}"}
    data["groups"]["untouched"] = {"hosts": {"other": {"address": unreachable_address(), "port": 1}}}
    inventory.write("rig", data)
    with Context(load_environment("rig"), check=True) as ctx:
        result = Runner(ctx).run([step_class("ssh.check")(groups=["web"])], task="preflight")
    by_target = {r.target: r for r in result.results}
    assert set(by_target) == {rig_hosts[0].name, "behind-dead-bastion"}
    assert by_target[rig_hosts[0].name].status == "ok"
    dead = by_target["behind-dead-bastion"]
    assert dead.status == "unreachable" and result.failed
    assert f"jump host (root@{unreachable_address()}:{bastion.rig.port}): TCP connection refused" in dead.error
