"""Fan-out through a bastion vs direct: `logs.install-rotation` idempotent re-run on N loopback hosts.

    .venv/bin/python -m benchmarks.bastion --hosts 20 --runs 7

One fleet of N sshd hosts (127.0.3.x, like benchmarks.fanout) and one bastion sshd beside it
(127.0.5.1, LogLevel DEBUG1 so its log counts logins and forwarded channels). Two inventories
differ only in `ssh.jump`. After a first run installs the config everywhere, the two re-runs
alternate (direct, bastion, direct, ...) so drift on a shared machine hits both alike. Each
sample is a whole fresh `invoke` process, start-up included, and is checked: exit 0, no host's
file rewritten, and for the bastion runs exactly ONE bastion login and N forwarded channels
(the shared transport). Prints a Markdown table; raw samples go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

from tests.rig.sshd import SshRig

from .common import BENCH_PORT, Fleet, Stats, fleet, machine_note, ours_argv, precompile, timed, write_result

BASTION_PREFIX = "127.0.5."


class BenchError(RuntimeError):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--port", type=int, default=BENCH_PORT + 7)
    parser.add_argument("--out", type=Path, default=None, help="raw samples file (default benchmarks/results/)")
    args = parser.parse_args(argv)
    precompile()
    with tempfile.TemporaryDirectory(prefix="bench-bastion-") as tmp:
        work = Path(tmp)
        with fleet(args.hosts, work, port=args.port) as f:
            bastion = SshRig(work / "bastion", port=args.port, address_prefix=BASTION_PREFIX, log_level="DEBUG1",
                             client_key=f.rig.client_key)
            bastion.start(1)
            try:
                samples = run(f, bastion, args.runs)
            finally:
                bastion.stop()
    direct, via = Stats.of(samples["direct"]), Stats.of(samples["bastion"])
    table = "\n".join([
        f"{args.hosts} hosts, idempotent `logs.install-rotation` re-run, {args.runs} runs each, "
        "whole process (median [min-max], s):", "",
        "| route | re-run (s) |", "|---|---|",
        f"| direct | {direct.cell()} |", f"| through one bastion (`ssh.jump`) | {via.cell()} |", "",
        f"bastion / direct: {via.median / direct.median:.2f}x ({(via.median - direct.median) * 1000:+.0f} ms); "
        f"one bastion login per run, {args.hosts} forwarded channels.", "", machine_note(),
    ])
    print(table)
    path = write_result("bastion", {"hosts": args.hosts, "samples": samples, "machine": machine_note()}, args.out)
    print(f"\nraw samples: {path}", file=sys.stderr)
    return 0


def run(f: Fleet, bastion: SshRig, runs: int) -> dict[str, list[float]]:
    """Same environment name (it is rendered into the file), two inventory directories."""
    data = yaml.safe_load((f.inventory_dir / f"{f.env_name}.yaml").read_text())
    known = f.root / "known_hosts_all"
    known.write_text(f.rig.known_hosts.read_text() + bastion.known_hosts.read_text())
    hop = bastion.hosts[0]
    data["ssh"].update(known_hosts=str(known), jump=f"root@{hop.address}:{hop.port}")
    via_dir = f.root / "inventory-bastion"
    via_dir.mkdir()
    (via_dir / f"{f.env_name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    envs = {"direct": f.ours_env(), "bastion": {**f.ours_env(), "INDOSTAR_INVENTORY_DIR": str(via_dir)}}
    f.reset()
    first = timed(ours_argv(f.env_name), env=envs["direct"])
    if first.returncode != 0:
        raise BenchError(f"first run failed:\n{first.stdout[-2000:]}{first.stderr[-2000:]}")
    samples: dict[str, list[float]] = {"direct": [], "bastion": []}
    for rep in range(runs + 1):  # the first pair is a warm-up
        for route in (("direct", "bastion") if rep % 2 == 0 else ("bastion", "direct")):
            before, mark = f.snapshot(), len(bastion.log_text())
            result = timed(ours_argv(f.env_name), env=envs[route])
            log = bastion.log_text()[mark:]
            if result.returncode != 0 or f.snapshot() != before:
                raise BenchError(f"{route} re-run failed or rewrote files:\n{result.stdout[-2000:]}")
            logins, channels = log.count("Accepted publickey"), log.count("server_request_direct_tcpip")
            expected = (1, len(f.hosts)) if route == "bastion" else (0, 0)
            if (logins, channels) != expected:
                raise BenchError(f"{route}: bastion saw {logins} logins, {channels} channels; expected {expected}")
            if rep:
                samples[route].append(result.seconds)
            print(f"  run {rep}/{runs} {route:8} {result.seconds:6.2f} s", file=sys.stderr, flush=True)
    return samples


if __name__ == "__main__":
    raise SystemExit(main())
