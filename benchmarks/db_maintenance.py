"""Writers during index maintenance: `db.reindex --all-bloated` vs the runbook's `REINDEX DATABASE`.

    .venv/bin/python -m benchmarks.db_maintenance                  # scale 70 (~1.1 GB), ~6 minutes
    .venv/bin/python -m benchmarks.db_maintenance --scale 10 --duration 40 --no-baseline   # a quick look

What it does, on a private PostgreSQL cluster (initdb under /tmp, port 15432, fsync off:
the shared server and its users are never touched):
1. `pgbench -i -s SCALE` (~15 MB per unit of scale), then bloat the big index the way an
   application does: a non-HOT UPDATE of half of pgbench_accounts and a VACUUM leave
   pgbench_accounts_pkey about twice its size with half-empty pages.
2. For each scenario, a fresh copy of that database (CREATE DATABASE ... TEMPLATE), 4 pgbench
   writer clients (the TPC-B-like script: 3 UPDATEs and an INSERT per transaction) with a
   per-transaction log, and after LEAD seconds the maintenance: our CLI exactly as an operator
   runs it (`invoke db.reindex --all-bloated`), or `REINDEX DATABASE` through psql, or nothing
   (the noise floor).
3. From the transaction logs, over the maintenance window: the writers' worst stall (longest
   transaction, and longest time with no transaction finishing at all), p99 latency, seconds
   below 10 % of the throughput before maintenance. Target (PERFORMANCE.md): no writer stalled
   more than 1 s during db.reindex.

Prints a Markdown table; raw figures go to benchmarks/results/db_maintenance-*.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from glob import glob
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from .common import REPO, machine_note, write_result

HOST = "127.0.0.1"
BASE_DB = "bench_base"
INDEX = "pgbench_accounts_pkey"


# ---------------------------------------------------------------- the private cluster


def _pg_bin(tool: str) -> str:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        raise SystemExit(f"PostgreSQL server binaries not found ({tool}): apt-get install postgresql")
    return found[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres OS user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def private_cluster(port: int) -> Iterator[Path]:
    """initdb + start under a fresh /tmp directory; stop and delete it afterwards, whatever happens."""
    root = Path(tempfile.mkdtemp(prefix="indostar-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                 "--no-sync"]), check=True, capture_output=True)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"port={port}\nlisten_addresses='{HOST}'\nunix_socket_directories='{root}'\n"
                   "fsync=off\nsynchronous_commit=off\nfull_page_writes=off\n"
                   "shared_buffers=256MB\nmax_wal_size=4GB\nmaintenance_work_mem=256MB\n")
    ctl = _pg_bin("pg_ctl")
    subprocess.run(_as_postgres([ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "start"]), check=True,
                   capture_output=True)
    try:
        yield root
    finally:
        subprocess.run(_as_postgres([ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), check=False,
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def connect(port: int, dbname: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(host=HOST, port=port, user="postgres", dbname=dbname, autocommit=True)


def pgbench(port: int, *args: str, cwd: Path | None = None) -> list[str]:
    return ["pgbench", "-h", HOST, "-p", str(port), "-U", "postgres", *args]


def index_size(port: int, dbname: str) -> int:
    with connect(port, dbname) as conn:
        row = conn.execute("SELECT pg_relation_size(%s::regclass)", (INDEX,)).fetchone()
        assert row is not None
        return int(row[0])


def prepare(port: int, scale: int) -> dict[str, Any]:
    """The bloated database every scenario starts from (copied, never used directly)."""
    with connect(port) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BASE_DB)))
    started = time.monotonic()
    subprocess.run(pgbench(port, "-i", "-s", str(scale), "-q", BASE_DB), check=True, capture_output=True)
    with connect(port, BASE_DB) as conn:
        fresh = index_size(port, BASE_DB)
        # pgbench tables have fillfactor 100: no room for HOT, every updated row gets a new index entry
        conn.execute("UPDATE pgbench_accounts SET abalance = abalance WHERE aid % 2 = 0")
        conn.execute("VACUUM ANALYZE")
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        assert row is not None
        size = int(row[0])
    return {"scale": scale, "database_bytes": size, "index_fresh_bytes": fresh,
            "index_bloated_bytes": index_size(port, BASE_DB), "prepare_s": round(time.monotonic() - started, 1)}


# ---------------------------------------------------------------- maintenance under write load


@dataclass
class Outcome:
    scenario: str
    maintenance_s: float
    index_before_bytes: int
    index_after_bytes: int
    tps_before: float
    tps_during: float
    max_latency_ms: float
    p99_ms: float
    longest_gap_ms: float
    seconds_below_10pct: int
    transactions: int
    writer_errors: int
    note: str = ""


def read_log(directory: Path) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of every transaction, from pgbench's per-transaction logs."""
    out = []
    for path in directory.glob("tx.*"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 6 or parts[2] == "failed":
                continue
            latency = int(parts[2]) / 1e6
            end = int(parts[4]) + int(parts[5]) / 1e6
            out.append((end - latency, end))
    return sorted(out, key=lambda t: t[1])


def window_stats(txs: list[tuple[float, float]], t0: float, t1: float) -> dict[str, Any]:
    """Latency and throughput of the writers over [t0, t1], against the 5 s before t0."""
    during = [(s, e) for s, e in txs if s < t1 and e > t0]
    latencies = sorted((e - s) * 1000 for s, e in during)
    p99 = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)] if latencies else math.nan
    ends = [t0] + [e for _, e in txs if t0 <= e <= t1] + [t1]
    gap = max(b - a for a, b in pairwise(ends)) * 1000
    before = sum(1 for _, e in txs if t0 - 5 <= e < t0) / 5
    buckets = Counter(int(e - t0) for _, e in txs if t0 <= e < t1)
    seconds = max(1, math.floor(t1 - t0))
    below = sum(1 for i in range(seconds) if buckets.get(i, 0) < 0.1 * before)
    return {"tps_before": round(before, 1), "tps_during": round(sum(buckets.values()) / max(t1 - t0, 1e-9), 1),
            "max_latency_ms": round(max(latencies, default=math.nan), 1), "p99_ms": round(p99, 1),
            "longest_gap_ms": round(gap, 1), "seconds_below_10pct": below, "transactions": len(during)}


def scenario(name: str, port: int, work: Path, maintenance: Callable[[str], str], *, duration: int, lead: int,
             clients: int) -> Outcome:
    """Copy the bloated database, start the writers, run `maintenance(dbname)` after `lead` seconds."""
    dbname = f"bench_{name.replace('-', '_').replace(' ', '_').lower()}"
    with connect(port) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(dbname), sql.Identifier(BASE_DB)))
    logs = work / dbname
    logs.mkdir()
    before = index_size(port, dbname)
    writers = subprocess.Popen(
        pgbench(port, "-n", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 2)), "-T", str(duration),
                "-l", "--log-prefix", "tx", dbname),
        cwd=logs, stdout=(logs / "pgbench.out").open("w"), stderr=subprocess.STDOUT)
    time.sleep(lead)
    t0 = time.time()
    note = maintenance(dbname)
    t1 = time.time()
    if writers.wait(timeout=duration + 120) != 0:
        raise SystemExit(f"{name}: pgbench failed, see {logs / 'pgbench.out'}:\n{(logs / 'pgbench.out').read_text()}")
    if t1 > t0 + duration - lead:
        note += f" (maintenance outlasted the writers: raise --duration above {math.ceil(t1 - t0) + lead + 10})"
    txs = read_log(logs)
    errors = sum(1 for p in logs.glob("tx.*") for line in p.read_text().splitlines() if " failed " in line)
    after = index_size(port, dbname)
    with connect(port) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(dbname)))
    return Outcome(name, round(t1 - t0, 2), before, after, writer_errors=errors, note=note.strip(),
                   **window_stats(txs, t0, t1))


def ours(port: int, work: Path) -> Callable[[str], str]:
    """`invoke db.reindex --all-bloated` against the copy, through a throwaway inventory."""
    inventory = work / "inventory"
    inventory.mkdir(exist_ok=True)

    def run(dbname: str) -> str:
        (inventory / "bench.yaml").write_text(yaml.safe_dump({
            "tier": "staging", "connection": "local",
            "database": {"host": HOST, "port": port, "name": dbname, "user": "postgres"}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INDOSTAR_", "PG"))}
        env.update(INDOSTAR_INVENTORY_DIR=str(inventory), INDOSTAR_JOURNAL_DIR=str(work / "journal"))
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "db.reindex", "--env", "bench",
                               "--all-bloated", "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise SystemExit(f"db.reindex failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        doc = json.loads(proc.stdout)
        changed = [t["target"] for s in doc["steps"] for t in s["targets"] if t["status"] == "changed"]
        return f"rebuilt {', '.join(changed) or 'nothing'} (run {doc['duration']:.1f}s)"

    return run


def reindex_database(port: int) -> Callable[[str], str]:
    def run(dbname: str) -> str:
        subprocess.run(["psql", "-h", HOST, "-p", str(port), "-U", "postgres", "-d", dbname, "-v",
                        "ON_ERROR_STOP=1", "-qc", f'REINDEX DATABASE "{dbname}"'], check=True, capture_output=True)
        return "psql -c 'REINDEX DATABASE ...'"

    return run


def idle(seconds: float) -> Callable[[str], str]:
    def run(_dbname: str) -> str:
        time.sleep(seconds)
        return ""

    return run


def table(outcomes: list[Outcome]) -> str:
    rows = ["| maintenance | took | writers' worst transaction | longest time with no commit | p99 latency "
            "| seconds below 10 % throughput | tps before / during | index size |",
            "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        size = f"{o.index_before_bytes / 2**20:.0f} -> {o.index_after_bytes / 2**20:.0f} MB"
        rows.append(f"| {o.scenario} | {o.maintenance_s:.1f} s | {o.max_latency_ms:.0f} ms | {o.longest_gap_ms:.0f} ms "
                    f"| {o.p99_ms:.1f} ms | {o.seconds_below_10pct} | {o.tps_before:.0f} / {o.tps_during:.0f} "
                    f"| {size} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 = ~1.1 GB)")
    parser.add_argument("--duration", type=int, default=75, help="seconds the writers run per scenario")
    parser.add_argument("--lead", type=int, default=10, help="seconds of writes before the maintenance starts")
    parser.add_argument("--clients", type=int, default=4, help="pgbench writer clients")
    parser.add_argument("--port", type=int, default=15432, help="port of the private cluster")
    parser.add_argument("--no-baseline", action="store_true", help="skip the no-maintenance noise floor")
    args = parser.parse_args(argv)
    if shutil.which("pgbench") is None or shutil.which("psql") is None:
        raise SystemExit("pgbench and psql are needed: apt-get install postgresql-client")

    with private_cluster(args.port) as work:
        print(f"preparing: pgbench -i -s {args.scale}, then bloating {INDEX} ...", file=sys.stderr)
        setup = prepare(args.port, args.scale)
        print(f"  database {setup['database_bytes'] / 2**30:.2f} GB, {INDEX} {setup['index_fresh_bytes'] / 2**20:.0f}"
              f" MB fresh -> {setup['index_bloated_bytes'] / 2**20:.0f} MB bloated ({setup['prepare_s']} s)",
              file=sys.stderr)
        plan: list[tuple[str, Callable[[str], str]]] = [
            ("db.reindex --all-bloated", ours(args.port, work)),
            ("REINDEX DATABASE (the runbook's)", reindex_database(args.port)),
        ]
        outcomes = []
        for name, maintenance in plan:
            print(f"scenario: {name} ...", file=sys.stderr)
            outcomes.append(scenario(name, args.port, work, maintenance, duration=args.duration, lead=args.lead,
                                     clients=args.clients))
        if not args.no_baseline:
            window = max(outcomes[0].maintenance_s, 5)
            print("scenario: noise floor ...", file=sys.stderr)
            outcomes.append(scenario("no maintenance (noise floor)", args.port, work, idle(window),
                                     duration=args.duration, lead=args.lead, clients=args.clients))

    print(f"pgbench -s {args.scale} ({setup['database_bytes'] / 2**30:.2f} GB after bloating), {args.clients} writer "
          f"clients, maintenance after {args.lead} s of writes; {machine_note()}\n")
    print(table(outcomes))
    for o in outcomes:
        if o.note:
            print(f"\n{o.scenario}: {o.note}")
    ours_outcome = outcomes[0]
    verdict = "met" if ours_outcome.max_latency_ms < 1000 else "MISSED"
    print(f"\ntarget: no writer stalled more than 1 s during db.reindex: {verdict} "
          f"(worst transaction {ours_outcome.max_latency_ms:.0f} ms)")
    path = write_result("db_maintenance", {"setup": setup, "args": vars(args), "machine": machine_note(),
                                           "outcomes": [asdict(o) for o in outcomes]})
    print(f"raw figures: {path}", file=sys.stderr)
    return 0 if verdict == "met" else 1


if __name__ == "__main__":
    sys.exit(main())
