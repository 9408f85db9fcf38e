"""Runs steps in order; a host step fans out over its hosts in parallel.

Before anything connects, every step's `preflight` runs (no I/O): a usage
error there exits 2 with nothing run. Then each step runs in two phases over
all its targets: check + plan everywhere, then (after a confirmation on
production tiers) apply + verify where the plan has changes. One target's
failure never stops the others' current step; it stops the steps after it
unless `keep_going`. Check mode stops after phase one. Every TargetResult
passes through `_emit`, the one place results are redacted, journaled and
reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .context import Context
from .errors import ConfirmationRequired, IndostarError, TransientError, Unreachable
from .journal import Journal, journal_dir, new_run_id
from .results import RunResult, TargetResult
from .step import Change, Outcome, Plan, Step, thaw

__all__ = ["Runner"]

T = TypeVar("T")
Reporter = Callable[[TargetResult], None]


class Runner:
    """`Runner(ctx).run([StepA(), StepB()], task="name")` -> RunResult (never raises for step failures)."""

    def __init__(
        self,
        ctx: Context,
        *,
        parallelism: int | None = None,
        reporter: Reporter | None = None,
        keep_going: bool = False,
        attempts: int = 3,
    ) -> None:
        self.ctx = ctx
        self.parallelism = parallelism or ctx.env.parallelism
        self.reporter = reporter
        self.keep_going = keep_going
        self.attempts = attempts

    def run(
        self,
        steps: Sequence[Step[Any]],
        *,
        task: str = "adhoc",
        on_failure: Sequence[Step[Any]] = (),
        always: Sequence[Step[Any]] = (),
    ) -> RunResult:
        """Run `steps` in order; then `on_failure` if any failed; then `always`, even after Ctrl-C."""
        ctx = self.ctx
        env = ctx.env
        run_id = new_run_id(env.name)
        for step in (*steps, *on_failure, *always):
            step.preflight(ctx)  # no I/O; a UsageError here means nothing ran (exit 2)
        mutating = [s.name for s in (*steps, *on_failure, *always) if not s.read_only]
        if env.is_production and mutating and not ctx.check and not ctx.assume_yes and not ctx.interactive:
            refusal = ConfirmationRequired(
                f"environment {env.name!r} is production-tier and {task} may change it "
                f"({', '.join(dict.fromkeys(mutating))}); refusing without confirmation",
                hint=f"preview with --check, then re-run with --yes: invoke {task} --env {env.name} --yes",
            )
            with contextlib.closing(Journal(journal_dir(env), run_id, env.redactor)) as audit:
                audit.event("run.refused", env=env.name, tier=env.tier, task=task, user=ctx.user,
                            reason=refusal.message)
            raise refusal
        journal = Journal(journal_dir(env), run_id, env.redactor)
        ctx.journal = journal
        result = RunResult(run_id=run_id, env=env.name, task=task, check=ctx.check, journal=str(journal.path))
        journal.event("run.start", env=env.name, tier=env.tier, task=task, user=ctx.user, check=ctx.check,
                      steps=[s.name for s in steps])
        started = time.monotonic()
        try:
            self._section(steps, result, stop_on_failure=not self.keep_going)
            if result.failed and on_failure:
                self._section(on_failure, result, stop_on_failure=False)
        finally:
            try:
                self._section(always, result, stop_on_failure=False)
            finally:
                result.duration = time.monotonic() - started
                journal.event("run.end", status=result.status, counts=result.counts,
                              duration=round(result.duration, 3))
                journal.close()
        return result

    def _section(self, steps: Sequence[Step[Any]], result: RunResult, *, stop_on_failure: bool) -> None:
        failed_before = False
        for step in steps:
            if failed_before and stop_on_failure:
                self._skip_all(step, "not run: an earlier step failed", result)
                continue
            step_results = self._run_step(step)
            result.results.extend(step_results)
            failed_before = failed_before or any(r.failed or r.status == "declined" for r in step_results)

    # -- one step ------------------------------------------------------------

    def _run_step(self, step: Step[Any]) -> list[TargetResult]:
        ctx = self.ctx
        try:
            targets = list(self._retry(lambda: step.targets(ctx)))
        except Exception as exc:  # noqa: BLE001 - e.g. the database is down: this step fails, the run goes on
            return [self._emit(self._failure(step, ctx.env.name, ctx, exc, time.monotonic()))]
        assert ctx.journal is not None
        ctx.journal.event("step.start", step=step.name, step_id=step.identity(), phase=step.phase,
                          targets=[str(t) for t in targets])
        if not targets:
            return [self._emit(TargetResult(step.name, ctx.env.name, "skipped", step_id=step.identity(),
                                            reason="no targets: " + self._why_no_targets(step)))]

        planned = self._map(lambda t: self._check(step, t), targets, step.max_parallel)
        outcome = [p for p in planned if isinstance(p, TargetResult)]
        to_apply = [p for p in planned if not isinstance(p, TargetResult)]

        if to_apply and ctx.env.is_production and not ctx.assume_yes and not self._confirm(step, to_apply):
            for target, tctx, plan, took in to_apply:
                declined = self._result(step, target, "declined", plan, tctx, took)
                outcome.append(self._emit(dataclasses.replace(
                    declined, reason="declined at the confirmation prompt: nothing changed")))
            to_apply = []

        outcome.extend(self._map(lambda item: self._emit(self._apply(step, *item)), to_apply, step.max_parallel))
        order = {str(t): i for i, t in enumerate(targets)}
        return sorted(outcome, key=lambda r: order.get(r.target, len(order)))

    @staticmethod
    def _why_no_targets(step: Step[Any]) -> str:
        if step.scope == "host":
            return f"no hosts in group(s) {', '.join(step.groups or ['(all)'])}"
        return "nothing of this kind in the environment"

    def _check(self, step: Step[Any], target: Any) -> TargetResult | tuple[Any, Context, Plan, float]:
        """Phase one on one target: a final result (no-op, check mode, failure) or a plan to apply."""
        tctx = self.ctx.scoped(step.name, str(target), step.identity())
        started = time.monotonic()
        try:
            plan = step.plan(self._retry(lambda: step.check(tctx, target)))
        except Exception as exc:  # noqa: BLE001 - any failure is this target's result, not the run's
            return self._emit(self._failure(step, target, tctx, exc, started))
        took = time.monotonic() - started
        if plan.noop or self.ctx.check:
            status = "changed" if plan.changes else "ok"
            return self._emit(self._result(step, target, status, plan, tctx, took))
        return target, tctx, plan, took

    def _apply(self, step: Step[Any], target: Any, tctx: Context, plan: Plan, took: float) -> TargetResult:
        started = time.monotonic() - took
        try:
            outcome = step.apply(tctx, target, plan) or Outcome()
            step.verify(tctx, target, plan, outcome)
        except Exception as exc:  # noqa: BLE001 - any failure is this target's result, not the run's
            return self._failure(step, target, tctx, exc, started, plan)
        return self._result(step, target, "changed", plan, tctx, time.monotonic() - started, outcome)

    def _retry(self, fn: Callable[[], T]) -> T:
        """Reads are safe to repeat: retry a dropped link (TransientError) with backoff.

        Never an Unreachable (connect, banner, auth, host key): a dead host costs one timeout.
        """
        try:
            return fn()
        except TransientError:
            if self.attempts <= 1:
                raise
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        for attempt in Retrying(
            stop=stop_after_attempt(self.attempts - 1),
            wait=wait_exponential(multiplier=0.3, max=3),
            retry=retry_if_exception_type(TransientError),
            reraise=True,
        ):
            with attempt:
                return fn()
        raise AssertionError("unreachable")

    # -- helpers ---------------------------------------------------------------

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any], limit: int | None = None) -> list[T]:
        workers = min(self.parallelism, len(items), limit or len(items))
        if workers <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))

    def _result(self, step: Step[Any], target: Any, status: Any, plan: Plan, tctx: Context,
                took: float, outcome: Outcome | None = None) -> TargetResult:
        data = {**thaw(plan.data), **(thaw(outcome.data) if outcome else {})}
        return TargetResult(
            step=step.name,
            target=str(target),
            status=status,
            changes=outcome.changes if outcome and outcome.changes is not None else plan.changes,
            reason=(outcome.reason if outcome and outcome.reason else plan.reason),
            actions=tuple(tctx.actions),
            duration=took,
            severity=plan.severity,
            data=data,
            receipt=outcome.receipt if outcome else None,
            step_id=step.identity(),
        )

    def _failure(self, step: Step[Any], target: Any, tctx: Context, exc: BaseException, started: float,
                 plan: Plan | None = None) -> TargetResult:
        message = str(exc) if isinstance(exc, IndostarError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, IndostarError) and self.ctx.journal is not None:  # a bug: keep where, for the report
            import traceback

            self.ctx.journal.event("error.trace", step=step.name, target=str(target),
                                   trace="".join(traceback.format_exception(exc))[-4000:])
        return TargetResult(
            step=step.name,
            target=str(target),
            status="unreachable" if isinstance(exc, Unreachable) else "failed",
            changes=plan.changes if plan else (),
            error=message,
            error_type=type(exc).__name__,
            retryable=isinstance(exc, TransientError),
            actions=tuple(tctx.actions),
            duration=time.monotonic() - started,
            step_id=step.identity(),
        )

    def _redact(self, result: TargetResult) -> TargetResult:
        """The one redactor for every channel: report lines, --json, the journal and RunResult."""
        redact = self.ctx.env.redactor
        return dataclasses.replace(
            result,
            changes=tuple(Change(**redact.data({k: v for k, v in c.__dict__.items() if k != "params"}))
                          for c in result.changes),
            reason=redact.text(result.reason) if result.reason else None,
            error=redact.text(result.error) if result.error else None,
            actions=tuple(redact.data(a) for a in result.actions),
            data=redact.data(result.data),
        )

    def _skip_all(self, step: Step[Any], reason: str, result: RunResult) -> None:
        """Name the hosts a skipped host step would have touched; other steps are not asked (that reads)."""
        targets = [self.ctx.env.name]
        if step.scope == "host":
            with contextlib.suppress(IndostarError):
                targets = [str(t) for t in step.targets(self.ctx)]
        for target in targets:
            result.results.append(self._emit(TargetResult(step.name, target, "skipped", reason=reason,
                                                          step_id=step.identity())))

    def _emit(self, result: TargetResult) -> TargetResult:
        result = self._redact(result)
        if self.ctx.journal is not None:
            self.ctx.journal.event("target.result", **{k: v for k, v in result.as_dict().items()
                                                       if k != "actions"})
        if self.reporter is not None:
            self.reporter(result)
        return result

    def _confirm(self, step: Step[Any], to_apply: list[Any]) -> bool:
        lines = [f"{step.name} will change {len(to_apply)} target(s) in {self.ctx.env.name} (production):"]
        for target, _tctx, plan, _took in to_apply:
            lines += [f"  {target}: {c.summary}" for c in plan.changes]
        prompt = self.ctx.env.redactor.text("\n".join(lines))
        ask = self.ctx.confirm or _ask
        approved = ask(prompt)
        if self.ctx.journal is not None:
            self.ctx.journal.event("confirmation", step=step.name, user=self.ctx.user, approved=approved)
        return approved


def _ask(prompt: str) -> bool:
    import sys

    sys.stderr.write(prompt + "\nProceed? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in {"y", "yes"}
