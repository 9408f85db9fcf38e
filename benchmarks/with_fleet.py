"""Run any command against N benchmark hosts, for profiling one implementation by hand.

    .venv/bin/python -m benchmarks.with_fleet 20 -- \
        .venv/bin/pyinstrument -m invoke logs.install-rotation --env bench-20
    .venv/bin/python -m benchmarks.with_fleet 20 --first -- benchmarks/.venv/bin/py-spy record --gil -o p.svg -- \
        .venv/bin/invoke logs.install-rotation --env bench-20

Starts the hosts, sets INDOSTAR_INVENTORY_DIR / INDOSTAR_JOURNAL_DIR (our CLI) and BENCH_SPEC
(the spec the peers read), runs the command once from the repository, stops the hosts. Without
`--first` the hosts already have the config (the command sees an idempotent re-run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .common import BENCH_PORT, REPO, fleet, ours_argv, precompile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hosts", type=int)
    parser.add_argument("--first", action="store_true", help="fresh hosts (a first run) instead of a re-run")
    parser.add_argument("--port", type=int, default=BENCH_PORT)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    precompile()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp, fleet(args.hosts, Path(tmp), port=args.port) as f:
        env = {**f.ours_env(), "BENCH_SPEC": str(f.spec_path)}
        f.reset()
        if not args.first:
            subprocess.run(ours_argv(f.env_name), env=env, cwd=REPO, check=True, capture_output=True)
        return subprocess.run(command, env=env, cwd=REPO, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
