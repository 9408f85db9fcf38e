"""Runbook "Common Issues" 1-7 as diagnosis: probes -> ranked findings with the next command to run.

`Diagnose(issue)` runs the probes of one issue (or `all`) concurrently, each on a
context of its own (its own database/Redis sessions, so a stuck probe holds no
lock another needs) and each under the same per-probe timeout. A probe that
raises or has not answered by then is reported UNKNOWN and abandoned (its
daemon thread cannot keep the run or the process alive), so the run takes as
long as its slowest probe, never the sum and never longer than the timeout.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import IndostarError, UsageError
from ...severity import Severity
from ...step import EnvTarget, Plan, Step
from .findings import Finding, rank
from .probes import ISSUES, PROBES, Probe, probes_for

if TYPE_CHECKING:
    from ...context import Context

__all__ = ["ISSUES", "PROBES", "Diagnose", "Finding", "run_probes"]


def _probe_context(ctx: Context) -> Context:
    """A copy of the step's context with connectors of its own (closed when the probe ends)."""
    return dataclasses.replace(ctx, _connectors={}, _lock=threading.Lock(), actions=[])


def _warm_imports(ctx: Context) -> None:
    """Import the client libraries once, here: first imports racing in several threads can fail half-way
    (psycopg's lazily imported submodules raised `cannot import name Row`)."""
    import importlib

    wanted = []
    if ctx.env.database is not None:
        wanted += ["psycopg", "psycopg.rows", "psycopg.sql", "psycopg.errors"]
    if ctx.env.redis is not None:
        wanted += ["redis"]
    for module in wanted:
        importlib.import_module(module)


def run_probes(ctx: Context, probes: list[Probe], timeout: float) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Every probe at once; wait at most `timeout` in all. Returns (findings, per-probe timing)."""
    _warm_imports(ctx)
    boxes: list[tuple[Probe, dict[str, Any], threading.Thread]] = []
    for probe in probes:
        box: dict[str, Any] = {}

        def work(probe: Probe = probe, box: dict[str, Any] = box) -> None:
            pctx = _probe_context(ctx)
            box["started"] = time.monotonic()
            try:
                box["findings"] = probe.run(pctx)
            except IndostarError as exc:
                box["error"] = exc.message + (f" ({exc.hint})" if exc.hint else "")
            except Exception as exc:  # noqa: BLE001 - a broken probe is UNKNOWN, the others still count
                box["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                box["ended"] = time.monotonic()
                pctx.close()

        thread = threading.Thread(target=work, name=f"probe {probe.name}", daemon=True)
        boxes.append((probe, box, thread))
    started = time.monotonic()
    for _probe, _box, thread in boxes:
        thread.start()
    deadline = started + timeout
    findings: list[Finding] = []
    timings: list[dict[str, Any]] = []
    for probe, box, thread in boxes:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            took = time.monotonic() - started
            findings.append(Finding(probe.name, Severity.UNKNOWN, f"probe did not answer within {timeout:g}s "
                                    "(abandoned; its backend may hang)", issues=probe.issues, duration=took,
                                    evidence={"timeout_s": timeout}))
            timings.append({"probe": probe.name, "status": "timeout", "duration": round(took, 3)})
            continue
        took = box["ended"] - box.get("started", box["ended"])
        if "error" in box:
            findings.append(Finding(probe.name, Severity.UNKNOWN, f"probe failed: {box['error']}",
                                    issues=probe.issues, duration=took))
            timings.append({"probe": probe.name, "status": "error", "duration": round(took, 3)})
            continue
        for found in box["findings"]:
            findings.append(dataclasses.replace(found, issues=probe.issues, duration=took))
        timings.append({"probe": probe.name, "status": "ok", "duration": round(took, 3)})
    return rank(findings), timings


@dataclass
class DiagnoseState:
    issue: str
    findings: list[Finding]
    timings: list[dict[str, Any]]
    wall_s: float
    timeout_s: float
    env: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Diagnose(Step[DiagnoseState]):
    """Run the runbook's diagnosis probes for one issue (or all) and rank the findings."""

    name = "diagnose.all"
    issue: str = "all"
    scope = "env"
    read_only = True

    def __init__(self, timeout: float | None = None, only: list[str] | None = None) -> None:
        self.timeout = timeout
        self.only = only

    @staticmethod
    def for_issue(issue: str, **kwargs: Any) -> Diagnose:
        try:
            return DIAGNOSE[issue](**kwargs)
        except KeyError:
            raise UsageError(f"unknown issue {issue!r}", hint=f"known: all, {', '.join(ISSUES)}") from None

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        if self.timeout is not None and not 0 < self.timeout <= 600:
            raise UsageError(f"--timeout {self.timeout} must be between 0 and 600 seconds")
        names = {p.name for p in PROBES}
        unknown = [n for n in self.only or () if n not in names]
        if unknown:
            raise UsageError(f"unknown probe(s) {', '.join(unknown)}", hint=f"known: {', '.join(sorted(names))}")

    def check(self, ctx: Context, target: EnvTarget) -> DiagnoseState:
        if ctx.env.sandbox is not None:
            from ...sandbox_services import ensure

            ensure(ctx.env)
        timeout = self.timeout or ctx.env.diagnose.probe_timeout_s
        probes = [p for p in probes_for(self.issue) if not self.only or p.name in self.only]
        started = time.monotonic()
        findings, timings = run_probes(ctx, probes, timeout)
        return DiagnoseState(self.issue, findings, timings, time.monotonic() - started, timeout, ctx.env.name)

    def plan(self, state: DiagnoseState) -> Plan:
        findings = state.findings
        severity = Severity.worst([f.severity for f in findings]) if findings else Severity.UNKNOWN
        counts = {s.name: sum(1 for f in findings if f.severity == s) for s in
                  (Severity.CRITICAL, Severity.WARNING, Severity.UNKNOWN, Severity.OK)}
        head = (f"{len(findings)} finding(s) from {len(state.timings)} probe(s) in {state.wall_s:.2f}s: "
                + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
        lines = [head] + ["  " + f.line() for f in findings]
        slowest = max((t["duration"] for t in state.timings), default=0.0)
        data = {"issue": state.issue, "findings": [f.as_dict() for f in findings], "counts": counts,
                "probes": state.timings, "wall_s": round(state.wall_s, 3), "slowest_probe_s": slowest,
                "probe_timeout_s": state.timeout_s}
        return Plan.nothing("\n".join(lines), severity=severity, data=data)


def _issue_step(issue: str, title: str) -> type[Diagnose]:
    cls = type(f"Diagnose{issue.title().replace('-', '')}", (Diagnose,),
               {"name": f"diagnose.{issue}", "issue": issue, "__doc__": f"Diagnose runbook issue: {title}.",
                "__module__": __name__})
    return cls


TITLES = {"app-down": "Application Down / 502 Bad Gateway", "slow": "Slow Response Times",
          "payments": "Payment Processing Failures", "errors": "High Error Rate",
          "db-pool": "Database Connection Pool Exhausted", "celery": "Celery Workers Not Processing Tasks",
          "disk": "Out of Disk Space"}
DIAGNOSE: dict[str, type[Diagnose]] = {"all": Diagnose, **{i: _issue_step(i, TITLES[i]) for i in ISSUES}}
DiagnoseAppDown = DIAGNOSE["app-down"]
DiagnoseSlow = DIAGNOSE["slow"]
DiagnosePayments = DIAGNOSE["payments"]
DiagnoseErrors = DIAGNOSE["errors"]
DiagnoseDbPool = DIAGNOSE["db-pool"]
DiagnoseCelery = DIAGNOSE["celery"]
DiagnoseDisk = DIAGNOSE["disk"]
