"""Start-up benchmark: how long a fresh process takes before it does anything, ours vs the peers.

    .venv/bin/python -m benchmarks.startup --runs 10

Start-up is paid on every command an operator types and on every host-less task, so it is
measured on its own: `invoke --list`, `invoke --help` and one read-only task on the embedded
sandbox (`disk.check --env sandbox`, local hosts, no network), next to `ansible --version`,
`ansible-playbook --version` and `pyinfra --version` (the cheapest thing each peer can do),
with `python -c pass` as the floor. Runs are interleaved; medians [min-max].
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .common import BENCH_VENV, PROJECT_PYTHON, REPO, Stats, machine_note, precompile, timed, write_result

INVOKE = str(REPO / ".venv" / "bin" / "invoke")

# (label, argv, exit codes that count as success; monitoring tasks exit 0-3 by design)
OURS: list[tuple[str, list[str], tuple[int, ...]]] = [
    ("python -c pass", [str(PROJECT_PYTHON), "-c", "pass"], (0,)),
    ("invoke --version", [INVOKE, "--version"], (0,)),
    ("invoke --list", [INVOKE, "--list"], (0,)),
    ("invoke --help", [INVOKE, "--help"], (0,)),
    ("invoke disk.check --env sandbox", [INVOKE, "disk.check", "--env", "sandbox"], (0, 1, 2, 3)),
]
PEERS: list[tuple[str, list[str], tuple[int, ...]]] = [
    ("ansible --version", [str(BENCH_VENV / "bin" / "ansible"), "--version"], (0,)),
    ("ansible-playbook --version", [str(BENCH_VENV / "bin" / "ansible-playbook"), "--version"], (0,)),
    ("pyinfra --version", [str(BENCH_VENV / "bin" / "pyinfra"), "--version"], (0,)),
]
LIST_TARGET_S = 0.35


def measure(commands: Sequence[tuple[str, list[str], tuple[int, ...]]], runs: int, warmup: int,
            env: dict[str, str]) -> dict[str, list[float]]:
    """Seconds per command, interleaved so that load drift hits every command alike."""
    samples: dict[str, list[float]] = {label: [] for label, _argv, _ok in commands}
    for rep in range(warmup + runs):
        for label, argv, ok in commands:
            result = timed(argv, env=env, timeout=120)
            if result.returncode not in ok:
                raise SystemExit(f"{label} exited {result.returncode}:\n{result.stderr[-2000:]}")
            if rep >= warmup:
                samples[label].append(result.seconds)
    return samples


def report(samples: dict[str, list[float]]) -> tuple[str, list[tuple[str, bool]]]:
    stats = {label: Stats.of(values) for label, values in samples.items()}
    peers = [p for p in ("ansible --version", "pyinfra --version") if p in stats]
    head = "| command | seconds | " + " | ".join(f"vs {p}" for p in peers) + " |"
    lines = [head, "|---|---|" + "---:|" * len(peers)]
    for label, s in stats.items():
        ratios = [f"{s.median / stats[p].median:.2f}" for p in peers]
        lines.append(f"| `{label}` | {s.cell()} | " + " | ".join(ratios) + " |")
    verdicts: list[tuple[str, bool]] = []
    if "invoke --list" in stats:
        listing = stats["invoke --list"].median
        verdicts.append((f"`invoke --list` under {LIST_TARGET_S} s: {listing:.2f} s", listing < LIST_TARGET_S))
    lines += ["", "Targets (shared/PERFORMANCE.md):", ""]
    lines += [f"- [{'met' if ok else 'MISSED'}] {text}" for text, ok in verdicts]
    if "invoke --list" in stats and "ansible --version" in stats:
        speedup = stats["ansible --version"].median / stats["invoke --list"].median
        lines.append(f"- (goal, not a gate) `invoke --list` about 3x faster than `ansible --version`: {speedup:.1f}x")
    return "\n".join(lines), verdicts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--ours-only", action="store_true", help="skip the peers (no bench venv needed)")
    parser.add_argument("--out", type=Path, default=None, help="raw samples JSON (default benchmarks/results/)")
    args = parser.parse_args(argv)

    commands = list(OURS)
    if not args.ours_only:
        missing = [argv[0] for _label, argv, _ok in PEERS if not Path(argv[0]).exists()]
        if missing:
            print(f"error: {missing[0]} not found: run `bash benchmarks/setup.sh` first", file=sys.stderr)
            return 2
        commands += PEERS
    precompile()
    note = machine_note()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INDOSTAR_")}
        env.update(INDOSTAR_SANDBOX_ROOT=f"{tmp}/sandbox", INDOSTAR_JOURNAL_DIR=f"{tmp}/journal")
        samples = measure(commands, args.runs, args.warmup, env)
    table, verdicts = report(samples)
    command = "python -m benchmarks.startup " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"`{command.strip()}` on {note}\n\n{table}")
    payload = {"command": command, "machine": note, "samples": samples,
               "targets": [{"target": t, "met": ok} for t, ok in verdicts]}
    path = write_result("startup", payload, args.out)
    print(f"\nraw samples: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
