"""Runs steps in order; a host step fans out over its hosts in parallel.

Before anything connects, every step's `preflight` runs (no I/O): a usage
error there exits 2 with nothing run. Then each step runs in two phases over
all its targets: check + plan everywhere, then (after a confirmation on
production tiers) apply + verify where the plan has changes. One target's
failure never stops the others' current step; it stops the steps after it
unless `keep_going`. Check mode stops after phase one. Every TargetResult
passes through `_emit`, the one place results are redacted, journaled and
reported.

Long runs (a maintenance window) get more, all optional:
- phases kept at run time (`Phase(name, steps, gate=, deadline=)`): a gated phase runs only if every
  earlier one succeeded; a phase with `deadline=False` (verify) still runs once the deadline passed;
- checkpoints: every `target.result` journal event carries the step instance's identity
  (`phase/name/hash(args)`) and its undo receipt; `resume=RUN_ID` continues that run in its own
  journal: finished idempotent steps are re-checked and skipped if they plan nothing ("done in
  RUN_ID"), finished non-idempotent ones are never repeated, read-only ones run again;
- undo: receipts are stacked as applies succeed; a failure, Ctrl-C, SIGTERM or the deadline unwinds
  them newest first, each undo journaled and reported like a step (`phase` "undo");
- a deadline (`deadline=` aware datetime, `margin=`): no step starts after deadline - margin, waits
  (`ctx.deadline`) end at the deadline, and the notes say what was left;
- rolling batches for host steps: `serial` (N or "N%") and `max_fail_percent`, per step (set by a
  playbook entry) or for the whole run;
- a lock (`lock=` a `LockKeeper` factory) taken before the first step and released after the last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from .context import Context
from .errors import ConfirmationRequired, IndostarError, TransientError, Unreachable
from .journal import Journal, journal_dir, load_run, new_run_id
from .results import RunResult, TargetResult
from .severity import Severity
from .step import Change, Outcome, Plan, Receipt, Step, thaw

__all__ = ["Interrupted", "Phase", "Runner"]

T = TypeVar("T")
Reporter = Callable[[TargetResult], None]
FINISHED = frozenset({"ok", "changed"})


@dataclass
class Phase:
    """A named group of steps kept at run time (preflight, backup, enter, execute, verify...)."""

    name: str
    steps: Sequence[Step[Any]] = ()
    gate: bool = True  # run only if every earlier phase succeeded
    deadline: bool = True  # False: still runs once the run's deadline has passed (verify)
    strict: bool = False  # a check answering CRITICAL fails the phase (preflight: ssh.check, guards)
    budget: float | None = None  # seconds: no step of this phase starts later than its start + budget


class Interrupted(BaseException):  # like KeyboardInterrupt, for SIGTERM too
    """SIGTERM (or SIGINT) during the main phases: stop starting steps, unwind, run `always`."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


@dataclass
class _Undo:
    step_id: str
    target: str
    receipt: Receipt
    done: bool = False


@dataclass
class _RunState:
    resumed_from: str | None = None
    checkpoints: dict[tuple[str, str], str] = field(default_factory=dict)  # (step_id, target) -> status
    undo: list[_Undo] = field(default_factory=list)
    deadline: datetime | None = None
    margin: timedelta = timedelta(0)
    left: list[str] = field(default_factory=list)  # steps not started because of the deadline
    cleaning: bool = False


class Runner:
    """`Runner(ctx).run([StepA(), StepB()], task="name")` -> RunResult (never raises for step failures)."""

    def __init__(
        self,
        ctx: Context,
        *,
        parallelism: int | None = None,
        reporter: Reporter | None = None,
        keep_going: bool = False,
        attempts: int = 2,  # a dropped link is retried once, on a new connection
        serial: int | str | None = None,
        max_fail_percent: float | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.ctx = ctx
        self.parallelism = parallelism or ctx.env.parallelism
        self.reporter = reporter
        self.keep_going = keep_going
        self.attempts = attempts
        self.serial = serial  # default for host steps without their own (task flag --serial)
        self.max_fail_percent = max_fail_percent
        self.clock = clock or (lambda: datetime.now(UTC))
        self.state = _RunState()
        self.lock: Any = None
        self._interrupted: str | None = None
        self._phase_end: tuple[datetime, Phase] | None = None
        self._classes: dict[str, type] = {}
        self._unwound = False
        self._stop_waits: str | None = None

    def run(
        self,
        steps: Sequence[Step[Any]] | Sequence[Phase],
        *,
        task: str = "adhoc",
        on_failure: Sequence[Step[Any]] = (),
        always: Sequence[Step[Any]] = (),
        resume: str | None = None,
        deadline: datetime | None = None,
        margin: timedelta = timedelta(0),
        lock: Callable[[Context, str], Any] | None = None,
        undo: bool = True,
    ) -> RunResult:
        """Run the phases (or steps) in order; then `on_failure` if any failed; then `always`, even after Ctrl-C.

        Raises only before anything ran: UsageError (a preflight), ConfirmationRequired, LockHeld.
        """
        ctx = self.ctx
        env = ctx.env
        phases = self._phases(steps)
        for section, members in (("on_failure", on_failure), ("always", always)):
            for step in members:
                step.phase = step.phase or section  # identity: always/<name>/<hash>
        everything = [s for p in phases for s in p.steps] + [*on_failure, *always]
        for step in everything:
            step.preflight(ctx)  # no I/O; a UsageError here means nothing ran (exit 2)
        mutating = [s.name for s in everything if not s.read_only]
        if env.is_production and mutating and not ctx.check and not ctx.assume_yes and not ctx.interactive:
            refusal = ConfirmationRequired(
                f"environment {env.name!r} is production-tier and {task} may change it "
                f"({', '.join(dict.fromkeys(mutating))}); refusing without confirmation",
                hint=f"preview with --check, then re-run with --yes: invoke {task} --env {env.name} --yes",
            )
            with contextlib.closing(Journal(journal_dir(env), new_run_id(env.name), env.redactor)) as audit:
                audit.event("run.refused", env=env.name, tier=env.tier, task=task, user=ctx.user,
                            reason=refusal.message)
            raise refusal
        run_id = self._load_resume(resume, task) if resume else new_run_id(env.name)
        self.state.deadline, self.state.margin = deadline, margin
        journal = Journal(journal_dir(env), run_id, env.redactor)
        ctx.journal = journal
        result = RunResult(run_id=run_id, env=env.name, task=task, check=ctx.check, journal=str(journal.path))
        journal.event("run.resume" if resume else "run.start", env=env.name, tier=env.tier, task=task,
                      user=ctx.user, check=ctx.check, steps=[s.name for s in everything],
                      phases=[p.name for p in phases], step_ids=[s.identity() for s in everything],
                      deadline=deadline.isoformat() if deadline else None)
        if resume:
            result.notes.append(f"resumed run {run_id}: finished steps are re-checked, not repeated")
        started = time.monotonic()
        previous = self._install_signals()  # before the lock: a Ctrl-C from here on still releases it
        listener = ctx.progress
        ctx.progress = self._wrap_progress(listener)
        if lock is not None and not ctx.check:
            try:
                self.lock = lock(ctx, run_id)
                said = self.lock.acquire()
            except BaseException as exc:
                self._restore_signals(previous)
                journal.event("run.end", status="refused", error=str(exc), counts=result.counts, duration=0)
                journal.close()
                self.lock = None
                raise
            result.results.append(self._emit(TargetResult("lock.acquire", env.name, "changed", reason=said,
                                                          step_id="preflight/lock.acquire")))
        try:
            try:
                self._main(phases, result)
            except (KeyboardInterrupt, Interrupted) as exc:
                name = exc.signame if isinstance(exc, Interrupted) else "SIGINT"
                result.notes.append(f"interrupted by {name}: no further step started")
                journal.event("run.interrupted", signal=name)
                self._interrupted = name
                result.results.append(self._emit(TargetResult(
                    "run.interrupted", env.name, "failed", error=f"interrupted by {name}: no further step started; "
                    "what it did is undone newest first where it can be", error_type="Interrupted",
                    step_id="main/run.interrupted")))
            finally:
                self.state.cleaning = True
                ctx.deadline = None  # undo and always must not be cut short by the window's end
            if undo and not ctx.check and (result.failed or self._interrupted or self.state.left):
                self._unwind(result)
            if (result.failed or self._interrupted) and on_failure:
                self._section(on_failure, result, stop_on_failure=False)
        finally:
            try:
                self._section(always, result, stop_on_failure=False)
            finally:
                self._restore_signals(previous)
                ctx.progress = listener
                if self.lock is not None:
                    try:
                        said = self.lock.release()
                        result.results.append(self._emit(TargetResult("lock.release", env.name, "changed",
                                                                      reason=said, step_id="always/lock.release")))
                    except Exception as exc:  # noqa: BLE001 - reported as a failed result; the lease will expire
                        result.results.append(self._emit(self._failure(
                            _Named("lock.release"), env.name, ctx, exc, time.monotonic())))
                for r in result.results:  # what restores the environment failed: say it first, everywhere
                    if r.failed and (r.step_id or "").startswith("always/"):
                        result.notes.insert(0, f"ALWAYS-SECTION FAILURE: {r.step} on {r.target}: {r.error}")
                if self.state.left:
                    result.notes.append("deadline: not started: " + ", ".join(self.state.left))
                if self._unwound:
                    result.notes += self._irreversible_notes(result)
                result.duration = time.monotonic() - started
                journal.event("run.end", status="interrupted" if self._interrupted else result.status,
                              counts=result.counts, duration=round(result.duration, 3), notes=result.notes)
                journal.close()
        return result

    @staticmethod
    def _phases(steps: Sequence[Step[Any]] | Sequence[Phase]) -> list[Phase]:
        """Phases as given, or consecutive steps grouped by their `phase` attribute (gated, in order)."""
        if steps and all(isinstance(s, Phase) for s in steps):
            return list(steps)  # type: ignore[arg-type]
        phases: list[Phase] = []
        for step in steps:
            assert isinstance(step, Step)
            name = step.phase or "main"
            if not phases or phases[-1].name != name:
                phases.append(Phase(name, []))
            phases[-1].steps.append(step)  # type: ignore[attr-defined]
        return phases

    def _main(self, phases: list[Phase], result: RunResult) -> None:
        ctx = self.ctx
        for phase in phases:
            if phase.gate and (result.failed or result.declined):
                for step in phase.steps:
                    self._skip_all(step, f"not run: an earlier phase failed ({phase.name} is gated)", result)
                continue
            self._phase_end = None
            if phase.budget is not None:
                self._phase_end = (self.clock() + timedelta(seconds=phase.budget), phase)
            ctx.deadline = self._monotonic_deadline() if phase.deadline else None
            if phase.name != "main":
                self.ctx.journal.event("phase.start", phase=phase.name, budget=phase.budget)  # type: ignore[union-attr]
            before = len(result.results)
            self._section(phase.steps, result, stop_on_failure=not self.keep_going, deadline=phase.deadline)
            self._phase_end = None
            critical = [r for r in result.results[before:] if r.severity == Severity.CRITICAL]
            if phase.strict and critical and not ctx.check and not result.failed:
                named = "; ".join(f"{r.step} on {r.target}: {r.reason}" for r in critical)
                result.results.append(self._emit(TargetResult(
                    f"{phase.name}.gate", ctx.env.name, "failed", step_id=f"{phase.name}/gate",
                    error=f"{phase.name} found a CRITICAL problem, so the run stops here: {named}",
                    error_type="GateClosed")))

    def _section(self, steps: Sequence[Step[Any]], result: RunResult, *, stop_on_failure: bool,
                 deadline: bool = False) -> None:
        failed_before = False
        for step in steps:
            if failed_before and stop_on_failure:
                self._skip_all(step, "not run: an earlier step failed", result)
                continue
            if deadline and self._past_deadline():
                self.state.left.append(step.identity().rsplit("/", 1)[0])
                self._skip_all(step, f"not started: the window ends at {self._deadline_text()}", result)
                continue
            if self._phase_end is not None and self.clock() >= self._phase_end[0]:
                ends, phase = self._phase_end
                self.state.left.append(step.identity().rsplit("/", 1)[0])
                self._skip_all(step, f"not started: phase {phase.name} had {phase.budget:g} s (until "
                                     f"{ends.astimezone(self.ctx.env.zone).strftime('%H:%M:%S %Z')})", result)
                continue
            if self.lock is not None and getattr(self.lock, "lost", None) and not self.state.cleaning:
                if not any(r.step == "lock.lost" for r in result.results):
                    result.results.append(self._emit(TargetResult(
                        "lock.lost", self.ctx.env.name, "failed", step_id=f"{step.phase or 'main'}/lock.lost",
                        error=f"the environment's lock is no longer ours: {self.lock.lost}", error_type="LockLost")))
                self._skip_all(step, "not started: the lock was lost", result)
                failed_before = True
                continue
            step_results = self._run_step(step)
            result.results.extend(step_results)
            failed_before = failed_before or any(r.failed or r.status == "declined" for r in step_results)

    # -- deadline ----------------------------------------------------------------

    def _past_deadline(self) -> bool:
        return self.state.deadline is not None and self.clock() >= self.state.deadline - self.state.margin

    def _monotonic_deadline(self) -> float | None:
        ends = [d for d in (self.state.deadline, self._phase_end[0] if self._phase_end else None) if d is not None]
        if not ends:
            return None
        return time.monotonic() + (min(ends) - self.clock()).total_seconds()

    def _deadline_text(self) -> str:
        assert self.state.deadline is not None
        zone = self.ctx.env.zone
        text = self.state.deadline.astimezone(zone).strftime("%H:%M %Z")
        minutes = self.state.margin.total_seconds() / 60
        return text + (f" (no step starts in its last {minutes:g} min)" if minutes else "")

    # -- signals -------------------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.state.cleaning:
                if self.ctx.journal is not None:
                    self.ctx.journal.event("signal.deferred", signal=name,
                                           reason="undo/always in progress: finishing them first")
                return
            self._stop_waits = name  # waits in other threads end at their next poll (see _wrap_progress)
            raise Interrupted(name)

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    def _wrap_progress(self, listener: Callable[[Any], None] | None) -> Callable[[Any], None]:
        """Every wait reports progress here each poll: after Ctrl-C/SIGTERM, a wait in a worker thread ends
        at its next poll instead of running to its own timeout (undo and always waits are left alone)."""
        def progress(event: Any) -> None:
            if self._stop_waits and not self.state.cleaning and threading.current_thread() is not \
                    threading.main_thread():
                raise Interrupted(self._stop_waits)
            if listener is not None:
                listener(event)

        return progress

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    # -- resume and undo --------------------------------------------------------------

    def _load_resume(self, run_id: str, task: str) -> str:
        """Read the checkpoints and undo receipts of an earlier attempt of this run."""
        from .errors import UsageError

        env = self.ctx.env
        records = load_run(journal_dir(env), run_id)
        start = next((r for r in records if r.get("event") == "run.start"), None)
        if start is None:
            raise UsageError(f"run {run_id!r} has no start record", hint="invoke runs.list shows the runs")
        run_id = str(start.get("run_id", run_id))
        if start.get("env") != env.name or start.get("task") != task:
            raise UsageError(f"run {run_id} was {start.get('task')!r} on {start.get('env')!r}, not {task!r} on "
                             f"{env.name!r}", hint="resume a run with the same task and --env")
        if start.get("check"):
            raise UsageError(f"run {run_id} was a --check run: there is nothing to resume")
        state = self.state
        state.resumed_from = run_id
        undone: set[tuple[str, str]] = set()
        for r in records:
            if r.get("event") == "target.result" and r.get("step_id"):
                key = (str(r["step_id"]), str(r.get("target")))
                if r.get("status") in FINISHED:
                    state.checkpoints[key] = str(r["status"])
                if r.get("status") == "changed" and r.get("undo"):
                    receipt = r["undo"]
                    state.undo.append(_Undo(key[0], key[1], Receipt(receipt["step"], receipt.get("args") or {},
                                                                    receipt.get("summary", ""))))
            elif r.get("event") == "undo.done":
                undone.add((str(r.get("of")), str(r.get("target"))))
        state.undo = [u for u in state.undo if (u.step_id, u.target) not in undone]
        return run_id

    def _unwind(self, result: RunResult) -> None:
        """Pop the undo receipts newest first; each undo runs (and is journaled) like any step."""
        from .registry import step_class

        pending = [u for u in self.state.undo if not u.done]
        self._unwound = True
        if not pending:
            return
        seen: set[str] = set()
        journal = self.ctx.journal
        assert journal is not None
        result.notes.append(f"undo: unwinding {len(pending)} receipt(s), newest first")
        for item in reversed(pending):
            receipt = item.receipt
            key = f"{receipt.step} {sorted(thaw(receipt.args).items())}"
            item.done = True
            if key in seen:  # the same undo for several targets of one step (one run covers them all)
                journal.event("undo.done", of=item.step_id, target=item.target, shared=True)
                continue
            seen.add(key)
            journal.event("undo.start", of=item.step_id, target=item.target, receipt=receipt.as_dict())
            try:
                step = step_class(receipt.step)(**thaw(receipt.args))
                step.phase = "undo"
                step.preflight(self.ctx)
            except Exception as exc:  # noqa: BLE001 - a receipt we cannot turn into a step is reported, not raised
                result.results.append(self._emit(self._failure(_Named(receipt.step), item.target, self.ctx, exc,
                                                               time.monotonic())))
                continue
            outcome = self._run_step(step, confirm=False)
            result.results.extend(outcome)
            journal.event("undo.done", of=item.step_id, target=item.target,
                          ok=not any(r.failed for r in outcome))
            if not any(r.failed for r in outcome):
                result.notes.append(f"undone: {receipt.summary or receipt.step}")

    def _irreversible_notes(self, result: RunResult) -> list[str]:
        notes = []
        for r in result.results:
            if r.changed and r.receipt is None and r.step_id and not r.step_id.startswith(("undo/", "always/")):
                why = getattr(self._classes.get(r.step), "irreversible", None)
                if why:
                    notes.append(f"not undoable: {r.step} on {r.target} ({why})")
        return list(dict.fromkeys(notes))

    # -- one step ------------------------------------------------------------

    def _run_step(self, step: Step[Any], *, confirm: bool = True) -> list[TargetResult]:
        ctx = self.ctx
        self._classes[step.name] = type(step)
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
        serial, max_fail = self._batching(step, len(targets))
        batches = [targets[i:i + serial] for i in range(0, len(targets), serial)]
        outcome: list[TargetResult] = []
        stopped: str | None = None
        for number, batch in enumerate(batches, 1):
            if stopped:
                outcome += [self._emit(TargetResult(step.name, str(t), "skipped", reason=stopped,
                                                    step_id=step.identity())) for t in batch]
                continue
            if len(batches) > 1:
                ctx.journal.event("batch.start", step=step.name, step_id=step.identity(), batch=number,
                                  of=len(batches), targets=[str(t) for t in batch])
            outcome += self._run_batch(step, batch, confirm)
            failed = sum(1 for r in outcome if r.failed)
            done = len(outcome)
            if max_fail is not None and failed and failed * 100 / done > max_fail:
                stopped = (f"not run: {failed} of {done} host(s) failed in earlier batches, over "
                           f"max_fail_percent {max_fail:g}%")
        order = {str(t): i for i, t in enumerate(targets)}
        return sorted(outcome, key=lambda r: order.get(r.target, len(order)))

    def _batching(self, step: Step[Any], count: int) -> tuple[int, float | None]:
        """(batch size, max_fail_percent): the playbook entry's, else the run's; only host steps batch."""
        serial = getattr(step, "_serial", None) or self.serial
        max_fail = getattr(step, "_max_fail_percent", None)
        if max_fail is None:
            max_fail = self.max_fail_percent
        if step.scope != "host" or not serial:
            return count, max_fail if step.scope == "host" else None
        if isinstance(serial, str) and serial.endswith("%"):
            size = math.ceil(count * float(serial[:-1]) / 100)
        else:
            size = int(serial)
        return max(1, min(size, count)), max_fail

    def _run_batch(self, step: Step[Any], targets: list[Any], confirm: bool) -> list[TargetResult]:
        ctx = self.ctx
        if ctx.check or not (confirm and ctx.env.is_production and not ctx.assume_yes):
            # nobody confirms: each target goes from plan to apply on its own, so a dead host's
            # connect timeout never holds back the others' changes
            return self._map(lambda t: self._check_then_apply(step, t), targets, step.max_parallel)
        planned = self._map(lambda t: self._check(step, t), targets, step.max_parallel)
        outcome = [p for p in planned if isinstance(p, TargetResult)]
        to_apply = [p for p in planned if not isinstance(p, TargetResult)]

        if (to_apply and confirm and ctx.env.is_production and not ctx.assume_yes
                and not self._confirm(step, to_apply)):
            for target, tctx, plan, took in to_apply:
                declined = self._result(step, target, "declined", plan, tctx, took)
                outcome.append(self._emit(dataclasses.replace(
                    declined, reason="declined at the confirmation prompt: nothing changed")))
            to_apply = []

        outcome.extend(self._map(lambda item: self._emit(self._apply(step, *item)), to_apply, step.max_parallel))
        return outcome

    def _check_then_apply(self, step: Step[Any], target: Any) -> TargetResult:
        checked = self._check(step, target)
        return checked if isinstance(checked, TargetResult) else self._emit(self._apply(step, *checked))

    @staticmethod
    def _why_no_targets(step: Step[Any]) -> str:
        if hasattr(step, "no_targets_reason"):
            return str(step.no_targets_reason())
        if step.scope == "host":
            return f"no hosts in group(s) {', '.join(step.groups or ['(all)'])}"
        return "nothing of this kind in the environment"

    def _check(self, step: Step[Any], target: Any) -> TargetResult | tuple[Any, Context, Plan, float]:
        """Phase one on one target: a final result (no-op, check mode, failure) or a plan to apply."""
        tctx = self.ctx.scoped(step.name, str(target), step.identity())
        started = time.monotonic()
        resumed = self.state.resumed_from
        finished = resumed and not step.read_only and (step.identity(), str(target)) in self.state.checkpoints
        if finished and not step.idempotent:
            return self._emit(TargetResult(step.name, str(target), "skipped", step_id=step.identity(),
                                           reason=f"done in {resumed} (not repeated: {step.name} is not idempotent)"))
        try:
            plan = step.plan(self._retry(lambda: step.check(tctx, target)))
        except Exception as exc:  # noqa: BLE001 - any failure is this target's result, not the run's
            return self._emit(self._failure(step, target, tctx, exc, started))
        took = time.monotonic() - started
        if finished and plan.noop:
            why = f"done in {resumed} (re-checked: {plan.reason or 'no change'})"
            return self._emit(dataclasses.replace(self._result(step, target, "skipped", plan, tctx, took), reason=why))
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
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            return list(pool.map(fn, items))
        except BaseException:  # Ctrl-C/SIGTERM: targets not started yet are not started; running ones finish
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)

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
        if result.changed and result.receipt is not None and result.step_id and not self.state.cleaning:
            self.state.undo.append(_Undo(result.step_id, result.target, result.receipt))
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


class _Named:
    """Stands in for a step that could not be built (a receipt naming an unknown step, the lock)."""

    read_only = False

    def __init__(self, name: str) -> None:
        self.name = name

    def identity(self) -> str:
        return f"undo/{self.name}" if not self.name.startswith("lock.") else f"always/{self.name}"


def _ask(prompt: str) -> bool:
    import sys

    sys.stderr.write(prompt + "\nProceed? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in {"y", "yes"}
