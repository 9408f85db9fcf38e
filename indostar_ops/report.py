"""What the operator sees: per-target progress as results arrive, then an ok/changed/skipped/failed table.

`--json` replaces all of it with one JSON document on stdout.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, Any

from .results import RunResult, TargetResult

__all__ = ["ConsoleReporter", "print_json", "print_summary"]

_STYLE = {"ok": "green", "changed": "yellow", "skipped": "cyan", "failed": "bold red"}
_SEVERITY_STYLE = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red", "UNKNOWN": "magenta"}


def _console(stream: IO[str]) -> Any:
    from rich.console import Console

    return Console(file=stream, highlight=False, soft_wrap=True)


class ConsoleReporter:
    """Prints one line per (step, target) as it finishes; diffs for changes. Thread-safe."""

    def __init__(self, *, check: bool, stream: IO[str] | None = None, show_diff: bool = True) -> None:
        self.console = _console(stream or sys.stdout)
        self.check = check
        self.show_diff = show_diff
        self._lock = threading.Lock()

    def __call__(self, result: TargetResult) -> None:
        from rich.markup import escape

        status = "would change" if self.check and result.changed else result.status
        style = _STYLE[result.status]
        severity = ""
        if result.severity is not None:
            sev = result.severity.name
            severity = f" [{_SEVERITY_STYLE[sev]}]{sev}[/]"
        detail = result.error or result.reason or "; ".join(c.summary for c in result.changes)
        with self._lock:
            self.console.print(
                f"[{style}]{status:>12}[/] {escape(result.step)} [bold]{escape(result.target)}[/]"
                f"{severity} ({result.duration:.2f}s)" + (f": {escape(detail)}" if detail else ""),
            )
            if self.show_diff:
                for change in result.changes:
                    if change.diff:
                        for line in change.diff.rstrip("\n").splitlines():
                            color = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
                            self.console.print(f"             [{color}]{escape(line)}[/]")
            for action in result.actions:
                self.console.print(f"             [dim]-> {escape(str(action.get('summary')))}[/]")


def print_summary(result: RunResult, stream: IO[str] | None = None) -> None:
    from rich.table import Table

    console = _console(stream or sys.stdout)
    table = Table(title=f"{result.task} on {result.env}" + (" (check mode: nothing written)" if result.check else ""),
                  title_justify="left")
    for column in ("ok", "changed", "skipped", "failed"):
        table.add_column(column, justify="right", style=_STYLE[column])
    counts = result.counts
    table.add_row(*(str(counts[c]) for c in ("ok", "changed", "skipped", "failed")))
    console.print(table)
    if result.failed:
        from rich.markup import escape

        console.print("[bold red]Failed:[/]")
        for r in result.failed:
            console.print(f"  [red]{escape(r.step)} on {escape(r.target)}[/]: {escape(r.error or '')}")
    console.print(f"run {result.run_id} in {result.duration:.2f}s; journal: {result.journal}")


def print_json(document: dict[str, Any], stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(document, indent=2, default=str) + "\n")
    out.flush()
