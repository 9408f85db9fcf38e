"""Fan-out benchmark: `logs.install-rotation` on N loopback SSH hosts, side by side with the peers.

    .venv/bin/python -m benchmarks.fanout --hosts 5,20,50 --runs 5          # the full comparison
    .venv/bin/python -m benchmarks.fanout --hosts 3 --runs 1 --impl ours    # what the smoke test does

For each fleet size one set of sshd hosts is started; then, repeatedly and in rotating
order so drift on a shared machine hits everyone alike, each implementation does a first
run on fresh hosts and an idempotent re-run. Every sample is a whole fresh process, start-up
included, and is checked: a first run must install the config on every host, a re-run must
write nothing. Prints a Markdown table (medians [min-max]), ours/peer ratios, the per-host
slope and the PERFORMANCE.md targets; raw samples go to benchmarks/results/fanout-*.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import (
    BENCH_PORT,
    Fleet,
    Stats,
    Timed,
    fleet,
    machine_note,
    precompile,
    slope,
    timed,
    write_result,
)
from .peers import IMPLEMENTATIONS, Implementation

PHASES = ("first", "rerun")


class BenchError(RuntimeError):
    """An implementation did not do the job: its timing would mean nothing."""


@dataclass
class Samples:
    """Seconds per (hosts, implementation, phase)."""

    data: dict[int, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    rendered: dict[int, dict[str, str]] = field(default_factory=dict)

    def add(self, n: int, impl: str, phase: str, seconds: float) -> None:
        self.data.setdefault(n, {}).setdefault(impl, {p: [] for p in PHASES})[phase].append(seconds)

    def stats(self, n: int, impl: str, phase: str) -> Stats | None:
        values = self.data.get(n, {}).get(impl, {}).get(phase)
        return Stats.of(values) if values else None


def run_once(impl: Implementation, f: Fleet, scratch: Path, *, first: bool) -> Timed:
    """One timed, verified run; raises BenchError if the hosts do not show the expected outcome."""
    if first:
        f.reset()
    before = f.snapshot()
    cmd = impl.command(f, scratch)
    try:
        result = timed(cmd.argv, env=cmd.env, cwd=cmd.cwd)
    finally:
        impl.cleanup(scratch)
    after = f.snapshot()
    phase = "first run" if first else "re-run"
    problem = None
    if result.returncode != 0:
        problem = f"exit code {result.returncode}"
    elif missing := [h for h, v in after.items() if v is None or h not in v[1]]:
        problem = f"no config (with the host name) on {missing}"
    elif not first and (touched := [h for h in after if after[h] != before[h]]):
        problem = f"re-run rewrote {touched}"
    elif (said := impl.changed(f, result)) is not None and said != (len(f.hosts) if first else 0):
        problem = f"reports {said} changed, expected {len(f.hosts) if first else 0}"
    if problem:
        raise BenchError(f"{impl.key} {phase} on {len(f.hosts)} hosts: {problem}\n$ {' '.join(cmd.argv)}\n"
                         f"--- stdout (tail)\n{result.stdout[-3000:]}\n--- stderr (tail)\n{result.stderr[-3000:]}")
    return result


def bench_size(n: int, impls: Sequence[Implementation], runs: int, samples: Samples, *, warmup: int = 1,
               port: int = BENCH_PORT, parallelism: int | None = None, workdir: Path, log: Any) -> None:
    """All samples for one fleet size, implementations interleaved round-robin."""
    with fleet(n, workdir, port=port, parallelism=parallelism) as f:
        scratch = workdir / "scratch"
        scratch.mkdir(exist_ok=True)
        for impl in impls:  # warm-up: proves each implementation works here, fills the page cache
            for _ in range(warmup):
                run_once(impl, f, scratch, first=True)
                installed = f.snapshot()[f.hosts[0].name]
                samples.rendered.setdefault(n, {})[impl.key] = installed[1] if installed else ""
                run_once(impl, f, scratch, first=False)
        for rep in range(runs):
            order = [*impls[rep % len(impls):], *impls[:rep % len(impls)]]
            for impl in order:
                for phase in PHASES:
                    result = run_once(impl, f, scratch, first=phase == "first")
                    samples.add(n, impl.key, phase, result.seconds)
                    print(f"  {n:>3} hosts  run {rep + 1}/{runs}  {impl.key:8} {phase:6} {result.seconds:7.2f} s",
                          file=log, flush=True)


def report(samples: Samples, impls: Sequence[Implementation]) -> tuple[str, dict[str, Any]]:
    """Markdown table + ratios + slope + target verdicts (and the same as data)."""
    sizes = sorted(samples.data)
    keys = [i.key for i in impls]
    lines = ["| hosts | implementation | first run (s) | re-run (s) | ours / it, first | ours / it, re-run |",
             "|---:|---|---|---|---:|---:|"]
    for n in sizes:
        for key in keys:
            first, rerun = samples.stats(n, key, "first"), samples.stats(n, key, "rerun")
            if first is None or rerun is None:
                continue
            ratio = ["", ""]
            ours = [samples.stats(n, "ours", p) for p in PHASES]
            if key != "ours" and ours[0] and ours[1]:
                ratio = [f"{ours[0].median / first.median:.2f}", f"{ours[1].median / rerun.median:.2f}"]
            lines.append(f"| {n} | {key} | {first.cell()} | {rerun.cell()} | {ratio[0]} | {ratio[1]} |")
    slopes: dict[str, dict[str, float | None]] = {}
    if len(sizes) > 1:
        lines += ["", "Per extra host (least-squares slope of the medians over "
                  f"{'/'.join(map(str, sizes))} hosts), ms:", "",
                  "| implementation | first run | re-run |", "|---|---:|---:|"]
        for key in keys:
            slopes[key] = {}
            for phase in PHASES:
                pts = {n: s.median for n in sizes if (s := samples.stats(n, key, phase))}
                slopes[key][phase] = slope(pts)
            cells = [f"{v * 1000:.0f}" if v is not None else "-" for v in slopes[key].values()]
            lines.append(f"| {key} | {cells[0]} | {cells[1]} |")
    verdicts = targets(samples)
    if verdicts:
        lines += ["", "Targets (shared/PERFORMANCE.md):", ""]
        lines += [f"- [{'met' if ok else 'MISSED'}] {text}" for text, ok in verdicts]
    differing = {n: sorted({k for k, v in r.items() if v != r.get("ours")}) for n, r in samples.rendered.items()}
    if any(differing.values()):
        lines += ["", f"Note: rendered config differs from ours for {differing}"]
    data = {"sizes": sizes, "slopes_s_per_host": slopes, "targets": [{"target": t, "met": ok} for t, ok in verdicts]}
    return "\n".join(lines), data


def targets(samples: Samples) -> list[tuple[str, bool]]:
    """The PERFORMANCE.md fan-out targets that the measured sizes allow to judge."""
    out: list[tuple[str, bool]] = []
    ours20 = samples.stats(20, "ours", "rerun")
    if ours20:
        for key, factor, wording in (("fabric", 1.0, "no slower than the bare fabric thread pool"),
                                     ("pyinfra", 2.0, ">= 2x faster than pyinfra"),
                                     ("ansible", 15.0, ">= 15x faster than Ansible")):
            peer = samples.stats(20, key, "rerun")
            if peer:
                speedup = peer.median / ours20.median
                out.append((f"20-host re-run {wording}: ours {ours20.median:.2f} s vs {key} {peer.median:.2f} s "
                            f"= {speedup:.2f}x", speedup >= factor))
    for phase in PHASES:
        a, b = samples.stats(20, "ours", phase), samples.stats(50, "ours", phase)
        if a and b:
            out.append((f"50 hosts < 2.5x the cost of 20 ({phase}): {b.median:.2f} / {a.median:.2f} s "
                        f"= {b.median / a.median:.2f}x", b.median / a.median < 2.5))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="5,20,50", help="comma-separated fleet sizes (default 5,20,50)")
    parser.add_argument("--runs", type=int, default=5, help="timed repetitions per size (default 5)")
    parser.add_argument("--impl", default=",".join(IMPLEMENTATIONS),
                        help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)} (default: all)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first+re-run pairs per size (default 1)")
    parser.add_argument("--parallelism", type=int, default=None,
                        help="our inventory's `parallelism` (default: the inventory default)")
    parser.add_argument("--port", type=int, default=BENCH_PORT, help=f"sshd port on 127.0.3.x (default {BENCH_PORT})")
    parser.add_argument("--workdir", type=Path, default=None, help="keep hosts/journals here (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="raw samples JSON (default benchmarks/results/)")
    args = parser.parse_args(argv)

    sizes = [int(n) for n in args.hosts.split(",") if n]
    try:
        impls = [IMPLEMENTATIONS[k]() for k in args.impl.split(",") if k]
    except KeyError as exc:
        parser.error(f"unknown implementation {exc}; choose from {', '.join(IMPLEMENTATIONS)}")
    precompile()
    samples = Samples()
    note = machine_note()
    print(f"fan-out: sizes {sizes}, {args.runs} runs, {[i.key for i in impls]} on {note}", file=sys.stderr)
    options = {"warmup": args.warmup, "port": args.port, "parallelism": args.parallelism, "log": sys.stderr}
    try:
        for n in sizes:
            if args.workdir:
                bench_size(n, impls, args.runs, samples, workdir=args.workdir / f"n{n}", **options)
            else:
                with tempfile.TemporaryDirectory(prefix=f"bench-fanout-{n}-") as tmp:
                    bench_size(n, impls, args.runs, samples, workdir=Path(tmp), **options)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    table, data = report(samples, impls)
    command = "python -m benchmarks.fanout " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n`{command.strip()}` on {note} (load at the end)\n\n{table}")
    path = write_result("fanout", {"command": command, "machine": note, "samples": samples.data, **data}, args.out)
    print(f"\nraw samples: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
