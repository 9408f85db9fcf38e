"""diagnose.all: wall time against its slowest probe (target <= 1.3x), and against running them one by one.

    INDOSTAR_SANDBOX_ROOT=/tmp/bench-sandbox .venv/bin/python -m benchmarks.diagnose --runs 7

Runs `diagnose.all` in check mode on the embedded sandbox (local PostgreSQL and Redis, moto for
CloudWatch/ELB, the sandbox's fake Sentry/status pages on loopback, the local platform, two local
hosts): 19 probes. Each run reports the step's own wall time (threads started -> last joined), the
slowest probe's own duration and the sum of all probe durations (what a sequential run would cost).
The first run (connections, imports, sandbox seeding) is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from .common import machine_note, write_result

TARGET = 1.3


def one_run(env_name: str) -> dict[str, Any]:
    from indostar_ops import Context, Runner, load_environment
    from indostar_ops.steps.diagnose import Diagnose

    env = load_environment(env_name)
    started = time.monotonic()
    with Context(env, check=True) as ctx:
        result = Runner(ctx).run([Diagnose()], task="diagnose.all")
    total = time.monotonic() - started
    data = result.results[0].data
    durations = {p["probe"]: p["duration"] for p in data["probes"]}
    slowest = max(durations, key=lambda k: durations[k])
    return {"wall_s": data["wall_s"], "slowest_probe": slowest, "slowest_probe_s": durations[slowest],
            "sum_probes_s": round(sum(durations.values()), 3), "run_s": round(total, 3),
            "probes": len(durations), "statuses": sorted({p["status"] for p in data["probes"]}),
            "errors": [f["summary"] for f in data["findings"] if f["summary"].startswith("probe ")]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--env", default="sandbox")
    args = parser.parse_args(argv)

    one_run(args.env)  # warm-up: sandbox seeding, first connections, imports
    runs = [one_run(args.env) for _ in range(args.runs)]
    ratios = [r["wall_s"] / r["slowest_probe_s"] for r in runs]
    median = statistics.median(ratios)
    print(f"diagnose.all on {args.env}: {runs[0]['probes']} probes, {args.runs} runs ({machine_note()})")
    print(f"{'wall s':>8} {'slowest s':>10} {'ratio':>6} {'sum s':>7} {'run s':>7}  slowest probe")
    for r, ratio in zip(runs, ratios, strict=True):
        print(f"{r['wall_s']:>8.3f} {r['slowest_probe_s']:>10.3f} {ratio:>6.2f} {r['sum_probes_s']:>7.3f} "
              f"{r['run_s']:>7.3f}  {r['slowest_probe']}")
    print(f"median wall/slowest = {median:.2f}x (target <= {TARGET}x); median wall "
          f"{statistics.median(r['wall_s'] for r in runs):.3f} s vs one-by-one "
          f"{statistics.median(r['sum_probes_s'] for r in runs):.3f} s")
    path = write_result("diagnose", {"runs": runs, "ratios": ratios, "median_ratio": median, "target": TARGET})
    print(f"raw: {path}")
    return 0 if median <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
