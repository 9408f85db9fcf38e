"""Typed results: one TargetResult per (step, target), gathered into a RunResult."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, IndostarError
from .severity import Severity
from .step import Change, Receipt

__all__ = ["RunFailed", "RunResult", "Status", "TargetResult"]

Status = Literal["ok", "changed", "skipped", "failed", "unreachable", "declined"]
STATUSES: tuple[Status, ...] = ("ok", "changed", "skipped", "failed", "unreachable", "declined")
FAILED: frozenset[str] = frozenset({"failed", "unreachable"})


@dataclass(frozen=True)
class TargetResult:
    """One (step, target) result. Built by the runner and passed through its redactor exactly once."""

    step: str
    target: str
    status: Status
    changes: tuple[Change, ...] = ()
    reason: str | None = None
    error: str | None = None
    error_type: str | None = None  # the exception class, e.g. "Unreachable", "CommandError"
    retryable: bool | None = None  # whether the error was a transient one (worth re-running)
    actions: tuple[dict[str, Any], ...] = ()
    duration: float = 0.0
    severity: Severity | None = None
    data: dict[str, Any] = field(default_factory=dict)
    receipt: Receipt | None = None
    step_id: str | None = None

    @property
    def changed(self) -> bool:
        return self.status == "changed"

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": self.step,
            "target": self.target,
            "status": self.status,
            "changed": self.changed,
            "duration": round(self.duration, 3),
        }
        if self.changes:
            out["changes"] = [c.as_dict() for c in self.changes]
        if self.reason:
            out["reason"] = self.reason
        if self.error:
            out["error"] = self.error
            out["error_type"] = self.error_type
            out["retryable"] = bool(self.retryable)
        if self.actions:
            out["actions"] = list(self.actions)
        if self.severity is not None:
            out["severity"] = self.severity.name
        if self.data:
            out["data"] = self.data
        if self.receipt is not None:
            out["undo"] = self.receipt.as_dict()
        if self.step_id:
            out["step_id"] = self.step_id
        return out


class RunFailed(IndostarError):
    """Raised by `RunResult.raise_on_failure()`: one aggregate error naming every failed target."""

    def __init__(self, result: RunResult) -> None:
        lines = [f"{r.step} on {r.target}: {r.error}" for r in result.failed]
        super().__init__(f"run {result.run_id} failed on {len(lines)} target(s):\n  " + "\n  ".join(lines))
        self.result = result


@dataclass
class RunResult:
    run_id: str
    env: str
    task: str
    check: bool
    results: list[TargetResult] = field(default_factory=list)
    duration: float = 0.0
    journal: str | None = None
    notes: list[str] = field(default_factory=list)  # run-level messages (deadline reached, undo ran...)

    @property
    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if r.failed]

    @property
    def declined(self) -> bool:
        return any(r.status == "declined" for r in self.results)

    @property
    def succeeded(self) -> bool:
        return not self.failed and not self.declined

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        if self.declined:
            return "declined"
        return "changed" if self.changed else "ok"

    @property
    def changed(self) -> bool:
        return any(r.changed for r in self.results)

    @property
    def counts(self) -> dict[str, int]:
        counter = Counter(r.status for r in self.results)
        return {status: counter.get(status, 0) for status in STATUSES}

    @property
    def severity(self) -> Severity:
        """Worst monitoring severity; a failed probe, or a check with nothing to check, counts as UNKNOWN."""
        levels = [r.severity for r in self.results if r.severity is not None]
        levels += [Severity.UNKNOWN for r in self.results if r.failed or r.status == "skipped"]
        return Severity.worst(levels)

    def exit_code(self, *, monitoring: bool = False) -> int:
        """The one mapping from a run to an exit code: 0 ok, 1 failed, 2 declined; monitoring 0/1/2/3."""
        if monitoring:
            return int(self.severity)
        if self.failed:
            return EXIT_FAILED
        return EXIT_USAGE if self.declined else EXIT_OK

    def raise_on_failure(self) -> RunResult:
        if self.failed:
            raise RunFailed(self)
        return self

    def as_dict(self) -> dict[str, Any]:
        steps: dict[str, list[dict[str, Any]]] = {}
        for r in self.results:
            steps.setdefault(r.step, []).append(r.as_dict())
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "env": self.env,
            "task": self.task,
            "check": self.check,
            "status": self.status,
            "counts": self.counts,
            "duration": round(self.duration, 3),
            "steps": [{"step": name, "targets": targets} for name, targets in steps.items()],
        }
        if any(r.severity is not None for r in self.results):
            out["severity"] = self.severity.name
        if self.journal:
            out["journal"] = self.journal
        if self.notes:
            out["notes"] = self.notes
        return out
