"""The four implementations of one job, each as the command a user would type.

Every implementation is timed as a whole fresh process (start-up included) and must
leave the same files behind; `Implementation.verify` checks that from the hosts' side
(installed on a first run, untouched on a re-run) and from the tool's own report.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..common import BENCH_DIR, PROJECT_PYTHON, REPO, Fleet, Timed, bench_tool, ours_argv

PEERS = Path(__file__).resolve().parent

__all__ = ["IMPLEMENTATIONS", "Implementation", "ansible_inventory"]


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


class Implementation:
    """One way of doing the job; subclasses say how to run it and how to read its outcome."""

    key = ""
    label = ""

    def command(self, fleet: Fleet, scratch: Path) -> Command:
        raise NotImplementedError

    def changed(self, fleet: Fleet, run: Timed) -> int | None:
        """How many hosts the tool itself says it changed (None if it does not say)."""
        return None

    def cleanup(self, scratch: Path) -> None:
        """Anything the tool leaves running after it exits (Ansible's SSH masters)."""


class Ours(Implementation):
    """The real CLI, `invoke logs.install-rotation --env bench-N`, from the project venv."""

    key = "ours"
    label = "indostar_ops `invoke logs.install-rotation`"

    def command(self, fleet: Fleet, scratch: Path) -> Command:
        return Command(ours_argv(fleet.env_name), fleet.ours_env(), REPO)

    def changed(self, fleet: Fleet, run: Timed) -> int | None:
        journals = sorted(fleet.journal_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime_ns)
        if not journals:
            return None
        for line in reversed(journals[-1].read_text().splitlines()):
            record = json.loads(line)
            if record.get("event") == "run.end":
                return int(record["counts"].get("changed", 0))
        return None


class FabricPool(Implementation):
    """benchmarks/baseline_fabric.py: fabric + a thread pool, nothing else (the floor)."""

    key = "fabric"
    label = "fabric thread pool (baseline)"

    def command(self, fleet: Fleet, scratch: Path) -> Command:
        return Command([str(PROJECT_PYTHON), str(BENCH_DIR / "baseline_fabric.py"), str(fleet.spec_path)],
                       fleet.ours_env(), REPO)

    def changed(self, fleet: Fleet, run: Timed) -> int | None:
        return int(json.loads(run.stdout.strip().splitlines()[-1])["changed"])


class Pyinfra(Implementation):
    """`pyinfra inventory.py deploy.py -y --parallel N --no-wait` (its fastest mode)."""

    key = "pyinfra"
    label = "pyinfra"

    def command(self, fleet: Fleet, scratch: Path) -> Command:
        argv = [str(bench_tool("pyinfra")), "inventory.py", "deploy.py", "-y",
                "--parallel", str(len(fleet.hosts)), "--no-wait"]
        return Command(argv, {**fleet.ours_env(), "BENCH_SPEC": str(fleet.spec_path)}, PEERS / "pyinfra")


class Ansible(Implementation):
    """`ansible-playbook -f N` with ControlPersist + pipelining, no facts, fixed interpreter.

    Each timed run gets a fresh ControlPath directory, so, like every other implementation,
    it starts with no open connection; the SSH masters it leaves behind are closed afterwards.
    """

    key = "ansible"
    label = "ansible-playbook (ControlPersist + pipelining)"

    def command(self, fleet: Fleet, scratch: Path) -> Command:
        inventory = scratch / "ansible-inventory.yml"
        if not inventory.exists():
            inventory.write_text(yaml.safe_dump(ansible_inventory(json.loads(fleet.spec_path.read_text())),
                                                sort_keys=False))
        control = Path(tempfile.mkdtemp(prefix="cp-", dir=scratch))
        env = {**fleet.ours_env(), "ANSIBLE_CONFIG": str(PEERS / "ansible" / "ansible.cfg"),
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control), "ANSIBLE_LOCAL_TEMP": str(scratch / "ansible-tmp"),
               "ANSIBLE_HOME": str(scratch / "ansible-home"), "ANSIBLE_NOCOLOR": "1"}
        argv = [str(bench_tool("ansible-playbook")), "-i", str(inventory), "-f", str(len(fleet.hosts)),
                str(PEERS / "ansible" / "playbook.yml")]
        return Command(argv, env, PEERS / "ansible")

    def changed(self, fleet: Fleet, run: Timed) -> int | None:
        recap = [line for line in run.stdout.splitlines() if " changed=" in line and " ok=" in line]
        return sum(int(line.split(" changed=")[1].split()[0]) for line in recap) if recap else None

    def cleanup(self, scratch: Path) -> None:
        for control in scratch.glob("cp-*"):
            for socket in control.iterdir():
                subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={socket}", "-O", "exit", "bench"],
                               capture_output=True, check=False, timeout=10)
                socket.unlink(missing_ok=True)
            control.rmdir()


def ansible_inventory(spec: dict[str, Any]) -> dict[str, Any]:
    """An Ansible YAML inventory for the spec's hosts: strict host keys against the rig's known_hosts."""
    ssh_common = (f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={spec['known_hosts']} "
                  "-o GlobalKnownHostsFile=/dev/null")
    return {
        "all": {
            "vars": {
                "ansible_user": spec["user"],
                "ansible_ssh_private_key_file": spec["key_file"],
                "ansible_ssh_common_args": ssh_common,
                "bench_env": spec["env"],
                "bench_template": spec["template"],
                "bench_policy": spec["policy"],
            },
            "hosts": {
                h["name"]: {"ansible_host": h["address"], "ansible_port": h["port"],
                            "rotation_config": h["config"], "rotation_paths": h["paths"]}
                for h in spec["hosts"]
            },
        },
    }


IMPLEMENTATIONS: dict[str, type[Implementation]] = {
    cls.key: cls for cls in (Ours, FabricPool, Pyinfra, Ansible)
}
