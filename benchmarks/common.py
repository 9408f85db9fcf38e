"""What every benchmark shares: the loopback fleet, one spec of the per-host work, timing and stats.

Why one spec file: every implementation (ours, the bare fabric pool, pyinfra, Ansible)
must render the same template with the same variables into the same per-host path, so
the harness writes the work down once (JSON) and each implementation reads it in its
own idiom. Nothing here is imported by the library.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec.structs
import yaml

from tests.rig import sshd as rig_module
from tests.rig.sshd import RigHost, SshRig
from tests.support import host_paths, rig_inventory

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
BENCH_VENV = Path(os.environ.get("BENCH_VENV", BENCH_DIR / ".venv"))
RESULTS_DIR = BENCH_DIR / "results"
TEMPLATE = REPO / "templates" / "logrotate.j2"

# Away from the test suite's rig (127.0.2.x:2322) so a benchmark and `pytest` can run at once.
BENCH_PORT = 2422
BENCH_PREFIX = "127.0.3."
_SUBDIRS = ("etc/logrotate.d", "var/log/indostar", "var/backups", "tmp/indostar")
_prefix_lock = threading.Lock()


class BenchRig(SshRig):
    """SshRig on the benchmark's own loopback range (127.0.3.x).

    Why a subclass: SshRig reads the module constant ADDRESS_PREFIX when it starts and has
    no parameter for it; the constant is swapped only for the duration of `start` and put back.
    """

    def __init__(self, workdir: Path, port: int = BENCH_PORT, prefix: str = BENCH_PREFIX) -> None:
        super().__init__(workdir, port=port, address_prefix=prefix)
        self.prefix = prefix

    def start(self, n_hosts: int) -> list[RigHost]:
        with _prefix_lock:
            saved = rig_module.ADDRESS_PREFIX
            rig_module.ADDRESS_PREFIX = self.prefix
            try:
                return super().start(n_hosts)
            finally:
                rig_module.ADDRESS_PREFIX = saved


@dataclass
class Fleet:
    """N running loopback hosts plus the files every implementation reads.

    Layout under `root`: hosts/<host>/... (each host's files), inventory/bench-N.yaml (ours),
    spec.json (the work, for the peers), journal/ (ours).
    """

    rig: BenchRig
    hosts: list[RigHost]
    root: Path
    env_name: str
    parallelism: int | None = None
    spec_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.spec_path = self.root / "spec.json"
        self.write_files()

    @property
    def hosts_root(self) -> Path:
        return self.root / "hosts"

    @property
    def inventory_dir(self) -> Path:
        return self.root / "inventory"

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"

    def config_path(self, host: RigHost) -> Path:
        return Path(host_paths(self.hosts_root, host.name)["logrotate_config"])

    def write_files(self) -> None:
        """Our inventory (through the tests' `rig_inventory`) and the peers' spec, from the same hosts."""
        from indostar_ops.inventory import LogrotatePolicy

        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        overrides: dict[str, Any] = {"parallelism": self.parallelism} if self.parallelism else {}
        data = rig_inventory(self.rig, self.hosts, self.hosts_root, **overrides)
        (self.inventory_dir / f"{self.env_name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        spec = {
            "env": self.env_name,
            "template": str(TEMPLATE),
            "user": self.rig.user,
            "key_file": str(self.rig.client_key),
            "known_hosts": str(self.rig.known_hosts),
            "policy": msgspec.structs.asdict(LogrotatePolicy()),
            "hosts": [
                {
                    "name": h.name,
                    "address": h.address,
                    "port": h.port,
                    "config": str(self.config_path(h)),
                    "paths": [
                        f"{d}/{p}" for d in host_paths(self.hosts_root, h.name)["log_dirs"] for p in ["*.log"]
                    ],
                }
                for h in self.hosts
            ],
        }
        self.spec_path.write_text(json.dumps(spec, indent=1))

    def reset(self) -> None:
        """Fresh hosts for a "first run": empty per-host directories, no config, no backups."""
        for host in self.hosts:
            base = self.hosts_root / host.name
            shutil.rmtree(base, ignore_errors=True)
            for sub in _SUBDIRS:
                (base / sub).mkdir(parents=True, exist_ok=True)

    def snapshot(self) -> dict[str, tuple[int, str] | None]:
        """(mtime_ns, content) of every host's config: proves installs, and no writes on a re-run."""
        out: dict[str, tuple[int, str] | None] = {}
        for host in self.hosts:
            path = self.config_path(host)
            out[host.name] = (path.stat().st_mtime_ns, path.read_text()) if path.exists() else None
        return out

    def ours_env(self) -> dict[str, str]:
        """Environment for `invoke logs.install-rotation --env bench-N` against this fleet."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("INDOSTAR_")}
        env.update(INDOSTAR_INVENTORY_DIR=str(self.inventory_dir), INDOSTAR_JOURNAL_DIR=str(self.journal_dir),
                   INDOSTAR_SANDBOX_ROOT=str(self.root / "sandbox"))
        return env


@contextmanager
def fleet(n_hosts: int, workdir: Path, *, port: int = BENCH_PORT, parallelism: int | None = None) -> Iterator[Fleet]:
    """Start N loopback sshd hosts and stop them (only the sshd processes started here) afterwards."""
    rig = BenchRig(workdir / "ssh", port=port)
    hosts = rig.start(n_hosts)
    try:
        yield Fleet(rig, hosts, workdir, f"bench-{n_hosts}", parallelism)
    finally:
        rig.stop()


def ours_argv(env_name: str, *extra: str) -> list[str]:
    """Our real CLI, as a user runs it from the checkout (start-up included in the timing)."""
    return [str(REPO / ".venv" / "bin" / "invoke"), "logs.install-rotation", "--env", env_name, *extra]


@dataclass
class Timed:
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def timed(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path = REPO,
          timeout: float = 600) -> Timed:
    """Wall time of one whole command (fork/exec to exit), output kept for checks and the log."""
    started = time.perf_counter()
    proc = subprocess.run(list(argv), cwd=cwd, env=dict(env) if env is not None else None, capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    return Timed(time.perf_counter() - started, proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Stats:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def cell(self) -> str:
        return f"{self.median:.2f} [{self.low:.2f}-{self.high:.2f}]" if self.n > 1 else f"{self.median:.2f}"


def slope(points: Mapping[int, float]) -> float | None:
    """Least-squares seconds per extra host over the measured fleet sizes (None with fewer than 2)."""
    if len(points) < 2:
        return None
    xs, ys = list(points), list(points.values())
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def machine_note() -> str:
    """One line describing where the numbers came from (they only compare side by side)."""
    import platform

    load = os.getloadavg()
    return (f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")


def precompile() -> None:
    """Byte-compile our package like `pip install` does for the peers' packages.

    Why: this machine exports PYTHONDONTWRITEBYTECODE=1 and the project is installed editable,
    so without this our CLI would recompile its own modules on every start (~25 ms) while
    ansible-core, pyinfra and fabric load the .pyc files pip wrote at install time.
    """
    import compileall

    compileall.compile_dir(str(REPO / "indostar_ops"), quiet=1)
    compileall.compile_file(str(REPO / "tasks.py"), quiet=1)


def bench_tool(name: str) -> Path:
    """A peer's executable in the bench venv; a clear error if `benchmarks/setup.sh` has not run."""
    path = BENCH_VENV / "bin" / name
    if not path.exists():
        raise SystemExit(f"{path} not found: run `bash benchmarks/setup.sh` first (installs the bench extra)")
    return path


def write_result(kind: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Raw samples as JSON (benchmarks/results/ is git-ignored): the README table is derived from them."""
    path = path or RESULTS_DIR / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


def free_port(address: str) -> int:
    """A TCP port free on `address` (the smoke test's rig, so concurrent test sessions never collide)."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])
