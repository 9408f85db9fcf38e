"""What the operator sees: per-target progress as results arrive, then an ok/changed/skipped/failed summary.

On a terminal it is colored (rich); otherwise (CI logs, pipes) plain lines that grep well, which also
keeps rich's import off the start-up path of scripted runs. `--json` replaces all of it with one JSON
document on stdout.

Every write goes through `write()`: when the reader goes away (`invoke ... | head`), the stream is
silenced like any Unix tool's (no traceback, no "Exception ignored" at exit) and the run itself goes
on to its end: a mutating run is never interrupted halfway because nobody reads its output.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
from typing import IO, Any

from .results import STATUSES, RunResult, TargetResult

__all__ = ["ConsoleReporter", "print_json", "print_summary", "write"]

_STYLE = {"ok": "green", "changed": "yellow", "skipped": "cyan", "failed": "bold red", "unreachable": "bold red",
          "declined": "magenta"}
_SEVERITY_STYLE = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red", "UNKNOWN": "magenta"}
_INDENT = " " * 13


_silenced: set[int] = set()  # file descriptors whose reader went away
_silence_lock = threading.Lock()


def _descriptor(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def _silence(stream: IO[str]) -> None:
    """Stop writing to `stream`; point its descriptor at /dev/null so the interpreter's last flush is quiet."""
    fd = _descriptor(stream)
    with _silence_lock:
        if fd is None or fd in _silenced:
            return
        _silenced.add(fd)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except OSError:
            pass


def write(stream: IO[str], text: str) -> bool:
    """Write and flush; False (and nothing more is written there) once the reader has gone away (EPIPE)."""
    if _descriptor(stream) in _silenced:
        return False
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        _silence(stream)
        return False
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        _silence(stream)
        return False
    return True


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
            write(self.stream, ("".join(t for t, _ in parts) if parts else text) + "\n")
            return
        if _descriptor(self.stream) in _silenced:
            return
        from rich.text import Text

        rendered = Text()
        for chunk, chunk_style in parts or [(text, style)]:
            rendered.append(chunk, style=chunk_style)
        try:
            self.console.print(rendered)
        except BrokenPipeError:
            _silence(self.stream)


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
    write(stream or sys.stdout, json.dumps(document, indent=2, default=str) + "\n")
