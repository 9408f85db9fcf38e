"""The one poller: `wait_until(ctx, what, probe, done, timeout=...)` with a deadline and progress.

Every wait in the project (snapshot available, rollout complete, volume
optimizing, served certificate moved, /health answering) goes through here, so
each has the same deadline rules (the step's timeout, capped by the run's
deadline), the same progress events in the journal and `--json`, and the same
error when time runs out: what was awaited, on what, and what was last seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import WaitTimeout

if TYPE_CHECKING:
    from .context import Context

__all__ = ["Progress", "wait_until"]

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    what: str
    attempt: int
    elapsed: float
    remaining: float
    detail: str


def wait_until(
    ctx: Context | None,
    what: str,
    probe: Callable[[], T],
    done: Callable[[T], bool] = bool,
    *,
    timeout: float,
    every: float = 2.0,
    describe: Callable[[T], str] = str,
    hint: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `probe` until `done(value)`; return that value, or raise WaitTimeout naming `what`.

    The deadline is `timeout` from now, or the run's deadline (`ctx.deadline`, a
    `time.monotonic()` value) if that comes first. `probe` may raise: the error
    propagates (a wait never hides a failure as "still waiting").
    """
    started = time.monotonic()
    deadline = started + timeout
    run_deadline = getattr(ctx, "deadline", None) if ctx is not None else None
    if run_deadline is not None:
        deadline = min(deadline, run_deadline)
    attempt = 0
    while True:
        attempt += 1
        value = probe()
        now = time.monotonic()
        detail = describe(value)
        if done(value):
            _progress(ctx, Progress(what, attempt, now - started, 0.0, f"done: {detail}"), final=True)
            return value
        remaining = deadline - now
        _progress(ctx, Progress(what, attempt, now - started, max(remaining, 0.0), detail), final=False)
        if remaining <= 0:
            raise WaitTimeout(
                f"{what}: not done after {now - started:.0f} s (last seen: {detail})",
                hint=hint or "look at the resource, then re-run; the step is idempotent and resumes from here",
            )
        sleep(min(every, remaining))


def _progress(ctx: Any, progress: Progress, *, final: bool) -> None:
    if ctx is None:
        return
    journal = getattr(ctx, "journal", None)
    if journal is not None:
        journal.event("wait", step=ctx.step, target=ctx.target, what=progress.what, attempt=progress.attempt,
                      elapsed=round(progress.elapsed, 1), remaining=round(progress.remaining, 1),
                      detail=progress.detail, done=final)
    listener = getattr(ctx, "progress", None)
    if listener is not None:
        listener(progress)
