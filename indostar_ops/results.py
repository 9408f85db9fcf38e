"""Typed results: one TargetResult per (step, target), gathered into a RunResult."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import EXIT_FAILED, EXIT_OK, IndostarError
from .severity import Severity
from .step import Change

__all__ = ["RunFailed", "RunResult", "Status", "TargetResult"]

Status = Literal["ok", "changed", "skipped", "failed"]
STATUSES: tuple[Status, ...] = ("ok", "changed", "skipped", "failed")


@dataclass
class TargetResult:
    step: str
    target: str
    status: Status
    changes: list[Change] = field(default_factory=list)
    reason: str | None = None
    error: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 0.0
    severity: Severity | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.status == "changed"

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
        if self.actions:
            out["actions"] = self.actions
        if self.severity is not None:
            out["severity"] = self.severity.name
        if self.data:
            out["data"] = self.data
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

    @property
    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def succeeded(self) -> bool:
        return not self.failed

    @property
    def changed(self) -> bool:
        return any(r.changed for r in self.results)

    @property
    def counts(self) -> dict[str, int]:
        counter = Counter(r.status for r in self.results)
        return {status: counter.get(status, 0) for status in STATUSES}

    @property
    def severity(self) -> Severity:
        """Worst monitoring severity; a failed probe counts as UNKNOWN."""
        levels = [r.severity for r in self.results if r.severity is not None]
        levels += [Severity.UNKNOWN for r in self.failed]
        return Severity.worst(levels)

    def exit_code(self, *, monitoring: bool = False) -> int:
        if monitoring:
            return int(self.severity)
        return EXIT_OK if self.succeeded else EXIT_FAILED

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
            "status": "failed" if self.failed else ("changed" if self.changed else "ok"),
            "counts": self.counts,
            "duration": round(self.duration, 3),
            "steps": [{"step": name, "targets": targets} for name, targets in steps.items()],
        }
        if any(r.severity is not None for r in self.results):
            out["severity"] = self.severity.name
        if self.journal:
            out["journal"] = self.journal
        return out
