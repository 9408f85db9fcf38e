"""`maintenance.window`: the playbook `playbooks/maintenance-window.yml`, run with the window's engine
features switched on (phases, lock, deadline, undo, resume), and its report.

The phases: preflight (window hours, 24 h notice, lock, baseline health, ssh.check where registered)
-> backup (snapshot labelled with the run id, configuration, "document current state")
-> enter (status page, maintenance on) -> execute (the procedures) -> verify (health + smoke),
then on_failure, then always (maintenance off, status page, chat summary; the lock is released last).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .context import Context
    from .inventory import Environment
    from .results import RunResult

__all__ = ["WindowOptions", "open_windows", "print_window_report", "window_sections"]

PLAYBOOK = "maintenance-window"
TASK = "maintenance.window"


@dataclass
class WindowOptions:
    force_window: bool = False
    break_lock: bool = False
    deadline: str = ""  # "HH:MM" (environment's timezone) or "+45m": shortens the window, never extends it
    playbook: str = PLAYBOOK


def window_sections(environment: Environment, only: list[str], skip: list[str], options: WindowOptions) -> Any:
    """The window's phases for this environment (its overrides applied), guards told about --force-window."""
    from .cli import Sections
    from .playbook import load_playbook

    book = load_playbook(options.playbook).for_env(environment.name)
    phases = book.build(only, skip)
    for phase in phases:
        phase.steps = _strategy(environment, phase.steps)
        for step in phase.steps:
            if step.name == "window.hours":
                step._force = options.force_window  # type: ignore[attr-defined]
    return Sections(phases, _strategy(environment, [s.build() for s in book.on_failure]),
                    _strategy(environment, [s.build() for s in book.always]))


# maintenance.strategy alb: the ALB fixed-response rule instead of the nginx flag (no page to install)
_ALB = {"maintenance.install": None, "maintenance.on": "maintenance.alb-on", "maintenance.off": "maintenance.alb-off"}


def _strategy(environment: Environment, steps: list[Any]) -> list[Any]:
    if environment.maintenance.strategy != "alb":
        return steps
    from .registry import step_class

    chosen = []
    for step in steps:
        if step.name not in _ALB:
            chosen.append(step)
            continue
        replacement = _ALB[step.name]
        if replacement is not None:
            alb = step_class(replacement)()
            alb.phase = step.phase
            chosen.append(alb)
    return chosen


def window_deadline(env: Environment, options: WindowOptions, now: datetime | None = None) -> datetime | None:
    """The window's end (when we are inside it), shortened by --deadline; None outside a window (forced)."""
    from .steps.window import parse_duration, window_bounds

    now = now or datetime.now(UTC)
    _start, end, inside = window_bounds(env, now)
    deadline = end if inside and env.tier != "sandbox" else None
    if options.deadline:
        text = options.deadline.strip()
        if text.startswith("+"):
            chosen = now + parse_duration(text[1:])
        else:
            try:
                hh, mm = (int(x) for x in text.split(":"))
                local = now.astimezone(env.zone)
                chosen = local.replace(hour=hh, minute=mm, second=0, microsecond=0)
            except ValueError:
                raise UsageError(f"bad --deadline {text!r}", hint="HH:MM in the environment's timezone, or +45m") \
                    from None
            if chosen <= local:
                chosen += timedelta(days=1)
        deadline = chosen if deadline is None else min(deadline, chosen)
    return deadline


def batch_options(serial: str, max_fail_percent: str) -> dict[str, Any]:
    """--serial N|N% and --max-fail-percent P as Runner options; a bad value is a usage error (exit 2)."""
    import re

    from .tasks._help import float_flag

    options: dict[str, Any] = {}
    if serial:
        if not re.fullmatch(r"[1-9][0-9]{0,3}%?", serial) or (serial.endswith("%") and int(serial[:-1]) > 100):
            raise UsageError(f"--serial {serial!r}: a number of hosts (2) or a percentage (25%)")
        options["serial"] = serial if serial.endswith("%") else int(serial)
    percent = float_flag(max_fail_percent, "--max-fail-percent")
    if percent is not None:
        if not 0 <= percent <= 100:
            raise UsageError(f"--max-fail-percent {max_fail_percent!r}: a number from 0 to 100")
        options["max_fail_percent"] = percent
    return options


def lock_factory(env: Environment, options: WindowOptions, task: str = TASK) -> Any:
    from .lock import LockKeeper

    def make(ctx: Context, run_id: str) -> LockKeeper:
        return LockKeeper(env, ctx, run_id, task=task, break_lock=options.break_lock)

    return make


def open_windows(env: Environment) -> list[dict[str, Any]]:
    """Window runs of this environment that never ended (killed, or still running), newest first."""
    from .journal import journal_dir, list_runs

    directory = journal_dir(env)
    if not directory.is_dir():
        return []
    found = []
    for run in list_runs(directory, limit=50):
        if run["env"] == env.name and run["task"] == TASK and run["status"] == "unfinished" and not run["check"]:
            found.append(run)
    return found


def window_lines(env: Environment) -> list[str]:
    """What maintenance.status and runs.list say about windows left open, and the lock's holder."""
    lines = []
    for run in open_windows(env):
        lines.append(f"window {run['run_id']} by {run['user']} started {run['started']} did not finish: "
                     f"resume with: invoke maintenance.window --env {env.name} --resume {run['run_id']}")
    try:
        from .context import Context
        from .lock import open_lock

        with Context(env, check=True) as ctx:
            backend = open_lock(env, ctx)
            holder = backend.holder()
            backend.close()
        if holder is not None:
            lines.append(f"lock ({env.maintenance.lock.backend}) held by {holder.describe()}")
    except Exception as exc:  # noqa: BLE001 - a status report says what it could not read
        lines.append(f"lock: could not read ({exc})")
    return lines


# ---------------------------------------------------------------- report


def _phase(step_id: str | None) -> str:
    return (step_id or "main/").split("/", 1)[0]


def print_window_report(result: RunResult, environment: Environment, stream: IO[str] | None = None) -> None:
    """Before the summary: maintenance-off failure FIRST (red, exact command), then what each phase did."""
    import sys

    env_name = environment.name
    from .report import _Writer

    out = _Writer(stream or sys.stdout)
    off_failed = [r for r in result.results if r.step == "maintenance.off" and r.failed]
    if off_failed:
        out.line(f"MAINTENANCE MODE IS STILL ON in {env_name}: maintenance.off failed "
                 f"({'; '.join(f'{r.target}: {r.error}' for r in off_failed)})", "bold red")
        out.line(f"  run now: invoke maintenance.off --env {env_name} --yes", "bold red")
    out.line("")
    out.line(f"window {result.run_id} on {env_name}, phase by phase:", "bold")
    phases: dict[str, dict[str, int]] = {}
    for r in result.results:
        counts = phases.setdefault(_phase(r.step_id), {})
        counts[r.status] = counts.get(r.status, 0) + 1
    for name, counts in phases.items():
        text = ", ".join(f"{k} {v}" for k, v in counts.items())
        bad = counts.get("failed") or counts.get("unreachable")
        out.line(f"  {name:12} {text}", "red" if bad else None)
    undelivered = [u for r in result.results for u in (r.data or {}).get("undelivered", [])]
    for line in undelivered:
        out.line(f"  notification {line}", "yellow")
    for note in result.notes:
        if note.startswith("ALWAYS-SECTION FAILURE"):
            out.line(f"  {note}", "bold red")
            continue
        out.line(f"  {note}", "yellow" if note.startswith(("deadline", "interrupted", "undo")) else "dim")


def progress_listener() -> Any:
    """A progress bar on stderr when it is a terminal (waits report through `ctx.progress`)."""
    import sys

    if not sys.stderr.isatty() or os.environ.get("CI"):
        return None

    def show(progress: Any) -> None:
        total = progress.elapsed + progress.remaining
        filled = int(20 * progress.elapsed / total) if total else 20
        bar = "#" * filled + "-" * (20 - filled)
        sys.stderr.write(f"\r  {progress.what[:50]:50} [{bar}] {progress.remaining:5.0f}s left ")
        if progress.remaining <= 0 or progress.detail.startswith("done"):
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
