"""What the operator sees: per-target progress as results arrive, then an ok/changed/skipped/failed summary.

On a terminal it is colored (rich); otherwise (CI logs, pipes) plain lines that grep well, which also
keeps rich's import off the start-up path of scripted runs. `--json` replaces all of it with one JSON
document on stdout.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, Any

from .results import STATUSES, RunResult, TargetResult

__all__ = ["ConsoleReporter", "print_json", "print_summary"]

_STYLE = {"ok": "green", "changed": "yellow", "skipped": "cyan", "failed": "bold red", "unreachable": "bold red",
          "declined": "magenta"}
_SEVERITY_STYLE = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red", "UNKNOWN": "magenta"}
_INDENT = " " * 13


class _Writer:
    """Prints markup-free text; adds rich colors only when the stream is a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.console: Any = None
        if stream.isatty():
            from rich.console import Console

            self.console = Console(file=stream, highlight=False, soft_wrap=True)

    def line(self, text: str, style: str | None = None, *, parts: list[tuple[str, str | None]] | None = None) -> None:
        if self.console is None:
            self.stream.write("".join(t for t, _ in parts) if parts else text)
            self.stream.write("\n")
            return
        from rich.text import Text

        rendered = Text()
        for chunk, chunk_style in parts or [(text, style)]:
            rendered.append(chunk, style=chunk_style)
        self.console.print(rendered)


class ConsoleReporter:
    """Prints one line per (step, target) as it finishes, with diffs and actions. Thread-safe."""

    def __init__(self, *, check: bool, stream: IO[str] | None = None, show_diff: bool = True) -> None:
        self.out = _Writer(stream or sys.stdout)
        self.check = check
        self.show_diff = show_diff
        self._lock = threading.Lock()

    def __call__(self, result: TargetResult) -> None:
        status = "would change" if self.check and result.changed else result.status
        detail = result.error or result.reason or "; ".join(c.summary for c in result.changes)
        parts: list[tuple[str, str | None]] = [(f"{status:>12} ", _STYLE[result.status]), (f"{result.step} ", None),
                                               (result.target, "bold")]
        if result.severity is not None:
            parts.append((f" {result.severity.name}", _SEVERITY_STYLE[result.severity.name]))
        parts.append((f" ({result.duration:.2f}s)" + (f": {detail}" if detail else ""), None))
        with self._lock:
            self.out.line("", parts=parts)
            if self.show_diff:
                for change in result.changes:
                    for diff_line in (change.diff or "").rstrip("\n").splitlines():
                        color = "green" if diff_line.startswith("+") else "red" if diff_line.startswith("-") else "dim"
                        self.out.line(_INDENT + diff_line, color)
            for action in result.actions:
                self.out.line(f"{_INDENT}-> {action.get('summary')}", "dim")


def print_summary(result: RunResult, stream: IO[str] | None = None) -> None:
    out = _Writer(stream or sys.stdout)
    counts = result.counts
    parts: list[tuple[str, str | None]] = [(f"{result.task} on {result.env}:", "bold")]
    for status in STATUSES:
        parts.append((f" {status}={counts[status]}", _STYLE[status] if counts[status] else None))
    if result.check:
        parts.append((" (check mode: nothing written)", "cyan"))
    out.line("", parts=parts)
    if result.failed:
        out.line("Failed:", "bold red")
        for r in result.failed:
            out.line("", parts=[(f"  {r.step} on {r.target}", "red"), (f": {r.error}", None)])
    out.line(f"run {result.run_id} in {result.duration:.2f}s; journal: {result.journal}", "dim")


def print_json(document: dict[str, Any], stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(document, indent=2, default=str) + "\n")
    out.flush()
