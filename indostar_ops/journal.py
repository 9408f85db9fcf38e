"""The audit trail: one JSON-lines file per run, secrets redacted, flushed per event.

Flushing every line means a killed run still leaves a readable journal, which
is what post-mortems (and, later, `--resume`) read.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .inventory import Environment
    from .secrets import Redactor

__all__ = ["Journal", "journal_dir", "list_runs", "load_run", "new_run_id"]


def journal_dir(env: Environment | None = None) -> Path:
    """INDOSTAR_JOURNAL_DIR, else the environment's journal_dir, else ~/.local/state/indostar-ops/journal."""
    configured = os.environ.get("INDOSTAR_JOURNAL_DIR")
    if configured:
        return Path(configured)
    if env is not None and env.journal_dir:
        return Path(env.journal_dir)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "indostar-ops" / "journal"


def new_run_id(env_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{env_name}-{secrets.token_hex(3)}"


class Journal:
    def __init__(self, directory: Path, run_id: str, redactor: Redactor) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.path = directory / f"{run_id}.jsonl"
        self._redactor = redactor
        self._lock = threading.Lock()
        self._handle: IO[str] | None = self.path.open("a", encoding="utf-8")

    def event(self, event: str, **fields: Any) -> None:
        record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "run_id": self.run_id,
                  "event": event, **fields}
        line = json.dumps(self._redactor.data(record), default=str, sort_keys=False)
        with self._lock:
            if self._handle is None:
                return
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def load_run(directory: Path, run_id: str) -> list[dict[str, Any]]:
    path = directory / f"{Path(run_id).name}.jsonl"
    if not path.is_file():
        matches = sorted(directory.glob(f"{Path(run_id).name}*.jsonl"))
        if len(matches) != 1:
            raise UsageError(f"no run {run_id!r} in {directory}", hint="invoke runs.list shows the runs")
        path = matches[0]
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append({"event": "unreadable", "line": line[:200]})
    return records


def list_runs(directory: Path, limit: int = 20) -> list[dict[str, Any]]:
    """Newest first: run id, env, task, who, when, and the final status if the run ended."""
    runs = []
    for path in sorted(directory.glob("*.jsonl"), reverse=True)[:limit]:
        records = load_run(directory, path.stem)
        start = next((r for r in records if r.get("event") == "run.start"), {})
        end = None
        for r in reversed(records):  # the last attempt (a resumed run appends to its own journal)
            if r.get("event") in ("run.start", "run.resume"):
                break
            if r.get("event") == "run.end":
                end = r
                break
        runs.append({
            "run_id": path.stem,
            "env": start.get("env"),
            "task": start.get("task"),
            "user": start.get("user"),
            "check": start.get("check"),
            "started": start.get("ts"),
            "status": end.get("status") if end else "unfinished",
            "resumed": sum(1 for r in records if r.get("event") == "run.resume"),
            "counts": end.get("counts") if end else None,
        })
    return runs
