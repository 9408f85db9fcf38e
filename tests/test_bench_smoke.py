"""The fan-out benchmark, shrunk so it runs in the suite and cannot rot: N = 3, one run, our side only.

It checks outcomes, never timings: the real CLI installs the config on all three hosts, and
the re-run changes nothing. The full side-by-side comparison runs on demand
(`python -m benchmarks.fanout`, see benchmarks/README.md). The peers' files are checked for
syntax here too, without installing the peers.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from benchmarks import fanout
from benchmarks.common import BENCH_PREFIX, fleet, free_port
from benchmarks.peers import IMPLEMENTATIONS, PEERS, ansible_inventory


def test_fanout_smoke_ours_installs_then_changes_nothing(tmp_path: Path) -> None:
    ours = IMPLEMENTATIONS["ours"]()
    with fleet(3, tmp_path, port=free_port(BENCH_PREFIX + "1")) as f:
        assert [h.address for h in f.hosts] == [f"{BENCH_PREFIX}{i}" for i in (1, 2, 3)]

        first = fanout.run_once(ours, f, tmp_path, first=True)
        installed = f.snapshot()
        for host in f.hosts:
            entry = installed[host.name]
            assert entry is not None, f"{host.name}: no config installed"
            assert host.name in entry[1]
            assert f'"{f.hosts_root / host.name}/var/log/indostar/*.log"' in entry[1]
        assert ours.changed(f, first) == 3

        again = fanout.run_once(ours, f, tmp_path, first=False)
        assert ours.changed(f, again) == 0
        assert f.snapshot() == installed  # same content, same mtime: nothing rewritten


def test_fanout_cli_reports_a_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "result.json"
    code = fanout.main(["--hosts", "3", "--runs", "1", "--warmup", "0", "--impl", "ours",
                        "--port", str(free_port(BENCH_PREFIX + "1")), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 3 | ours |" in printed
    samples = json.loads(out.read_text())["samples"]
    assert len(samples["3"]["ours"]["first"]) == 1 and len(samples["3"]["ours"]["rerun"]) == 1


def test_peer_definitions_are_well_formed(tmp_path: Path) -> None:
    """Ansible playbook/config and pyinfra files parse, and the generated inventory names every host."""
    playbook = yaml.safe_load((PEERS / "ansible" / "playbook.yml").read_text())
    modules = [next(k for k in task if k.startswith("ansible.builtin.")) for task in playbook[0]["tasks"]]
    assert modules == ["ansible.builtin.template", "ansible.builtin.command"]
    assert "pipelining = True" in (PEERS / "ansible" / "ansible.cfg").read_text()
    for name in ("inventory.py", "deploy.py"):
        path = PEERS / "pyinfra" / name
        compile(path.read_text(), str(path), "exec")
    spec = {"env": "bench-2", "template": "t.j2", "user": "root", "key_file": "k", "known_hosts": "kh",
            "policy": {"rotate": 7},
            "hosts": [{"name": f"host-{i}", "address": f"127.0.3.{i}", "port": 2422, "config": f"/c{i}",
                       "paths": [f"/l{i}/*.log"]} for i in (1, 2)]}
    inventory = ansible_inventory(spec)["all"]
    assert sorted(inventory["hosts"]) == ["host-1", "host-2"]
    assert inventory["hosts"]["host-2"]["ansible_host"] == "127.0.3.2"
    assert "StrictHostKeyChecking=yes" in inventory["vars"]["ansible_ssh_common_args"]
