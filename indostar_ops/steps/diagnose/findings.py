"""Findings: what a probe observed, how bad it is, the runbook's likely cause, and the command to run next.

A remediation is always a real indostar-ops task with valid flags: `remedy()` looks
the task and every flag up in the task collection the CLI itself uses, so a
renamed task or flag turns into "no task yet" (with the runbook's manual step)
instead of advice that fails when pasted.
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass, field
from typing import Any

from ...severity import Severity

__all__ = ["Finding", "Remedy", "known_task", "rank", "remedy"]


@dataclass(frozen=True)
class Remedy:
    """`command` (an indostar-ops task line) when the task exists, else `manual` (the runbook's step)."""

    command: str | None
    manual: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in {"command": self.command, "manual": self.manual, "note": self.note}.items() if v}


@dataclass(frozen=True)
class Finding:
    probe: str  # "database.connections"
    severity: Severity
    summary: str  # what was observed, one line
    evidence: dict[str, Any] = field(default_factory=dict)
    threshold: str | None = None  # "warning > 80 %, critical > 95 %"
    cause: str | None = None  # the runbook's likely cause this points to
    remedy: Remedy | None = None
    issues: tuple[str, ...] = ()  # the runbook issues (diagnose.* tasks) whose probe found it
    duration: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"probe": self.probe, "severity": self.severity.name, "summary": self.summary,
                               "issues": list(self.issues)}
        if self.threshold:
            out["threshold"] = self.threshold
        if self.cause:
            out["likely_cause"] = self.cause
        if self.remedy is not None:
            out["remediation"] = self.remedy.as_dict()
        out["evidence"] = self.evidence
        if self.duration is not None:
            out["duration"] = round(self.duration, 3)
        return out

    def line(self) -> str:
        text = f"{self.severity.name:<8} {self.probe}: {self.summary}"
        if self.cause and self.severity in (Severity.WARNING, Severity.CRITICAL):
            text += f" (likely: {self.cause})"
        if self.remedy is not None and self.remedy.command:
            text += f"\n           next: {self.remedy.command}"
        elif self.remedy is not None and self.remedy.manual:
            text += f"\n           next (manual): {self.remedy.manual}"
        return text


def rank(findings: list[Finding]) -> list[Finding]:
    """Most severe first (CRITICAL, WARNING, UNKNOWN, OK); stable within a level."""
    return sorted(findings, key=lambda f: -f.severity.rank)


@functools.lru_cache(maxsize=1)
def _tasks() -> dict[str, set[str]]:
    import copy

    from ...tasks import namespace

    def flags(task: Any) -> set[str]:
        mine = copy.copy(task)  # get_arguments() consumes the task's help dict: leave the CLI's intact
        mine.help = dict(task.help)
        return {n.replace("-", "_") for a in mine.get_arguments(ignore_unknown_help=True) for n in a.names}

    return {name: flags(namespace[name]) for name in namespace.task_names}


def known_task(name: str) -> set[str] | None:
    """The task's flag names (underscored), or None if there is no such task."""
    return _tasks().get(name)


def remedy(env: str, task: str, *flags: str | tuple[str, Any], manual: str | None = None,
           note: str | None = None) -> Remedy:
    """`invoke TASK --env ENV --flag [value]...` if TASK and every flag exist; else the manual runbook step.

    A flag is "--name" (boolean) or ("--name", value).
    """
    names = known_task(task)
    argv = ["invoke", task, "--env", env]
    ok = names is not None
    for flag in flags:
        name, value = (flag, None) if isinstance(flag, str) else flag
        if names is not None and name.lstrip("-").replace("-", "_") not in names:
            ok = False
        argv.append(name)
        if value is not None:
            argv.append(str(value))
    if not ok:
        return Remedy(None, manual=manual or f"(no indostar-ops task {task} in this version)", note=note)
    return Remedy(shlex.join(argv), manual=None, note=note)
