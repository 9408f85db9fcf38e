"""Small real steps for the window's engine tests (registered by tests/window_driver.py or monkeypatch).

- `test.mark NAME`: creates <host tmp_dir>/NAME; its receipt is `test.unmark NAME` (an undoable change);
- `test.gate NAME`: waits (the one poller, honouring the run's deadline) until <host tmp_dir>/NAME exists,
  then creates NAME.passed: a step a test can hold in `execute` to kill or interrupt the run;
- `test.fail`: fails on every host (a procedure that breaks mid-window);
- `test.count PATH`: appends a line to PATH; NOT idempotent (the resume rule: never repeated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indostar_ops.context import Context
from indostar_ops.errors import StepError
from indostar_ops.poll import wait_until
from indostar_ops.step import Change, EnvTarget, Outcome, Plan, Receipt, Step

TEST_STEPS = {
    "test.mark": "tests.window_steps:Mark",
    "test.unmark": "tests.window_steps:Unmark",
    "test.gate": "tests.window_steps:Gate",
    "test.fail": "tests.window_steps:Fail",
    "test.count": "tests.window_steps:Count",
    "test.critical": "tests.window_steps:Critical",
}


def _dir(target: Any) -> Path:
    return Path(target.settings.tmp_dirs[0])


@dataclass
class Mark(Step[bool]):
    name = "test.mark"
    mark: str = "mark"

    def check(self, ctx: Context, target: Any) -> tuple[Path, bool]:  # type: ignore[override]
        path = _dir(target) / self.mark
        return path, path.exists()

    def plan(self, state: Any) -> Plan:
        path, present = state
        if present:
            return Plan.nothing(f"{path} exists")
        return Plan([Change(f"create {path}", params={"path": str(path)})])

    def apply(self, ctx: Context, target: Any, plan: Plan) -> Outcome:
        ctx.host(target).change(["touch", plan.changes[0].params["path"]], f"create {self.mark}")
        return Outcome(receipt=Receipt("test.unmark", {"mark": self.mark}, f"remove {self.mark}"))


@dataclass
class Unmark(Mark):
    name = "test.unmark"

    def plan(self, state: Any) -> Plan:
        path, present = state
        if not present:
            return Plan.nothing(f"{path} absent")
        return Plan([Change(f"remove {path}", params={"path": str(path)})])

    def apply(self, ctx: Context, target: Any, plan: Plan) -> Outcome:
        ctx.host(target).change(["rm", "-f", plan.changes[0].params["path"]], f"remove {self.mark}")
        return Outcome()


@dataclass
class Gate(Mark):
    name = "test.gate"

    def check(self, ctx: Context, target: Any) -> Any:
        path = _dir(target) / f"{self.mark}.passed"
        return path, path.exists()

    def apply(self, ctx: Context, target: Any, plan: Plan) -> Outcome:
        opened = _dir(target) / self.mark
        wait_until(ctx, f"gate {opened}", opened.exists, timeout=120, every=0.05)
        ctx.host(target).change(["touch", plan.changes[0].params["path"]], f"pass gate {self.mark}")
        return Outcome()


@dataclass
class Fail(Step[None]):
    name = "test.fail"

    def check(self, ctx: Context, target: Any) -> None:
        raise StepError(f"{target}: this procedure breaks (test)", hint="nothing to do: it is a test")


@dataclass
class Count(Step[int]):
    name = "test.count"
    scope = "env"
    idempotent = False
    path: str = ""

    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [EnvTarget(ctx.env.name)]

    def check(self, ctx: Context, target: Any) -> int:
        path = Path(self.path)
        return len(path.read_text().splitlines()) if path.exists() else 0

    def plan(self, state: int) -> Plan:
        return Plan([Change(f"append line {state + 1} to {self.path}")])

    def apply(self, ctx: Context, target: Any, plan: Plan) -> Outcome:
        ctx.host(ctx.env.hosts()[0]).change(["sh", "-c", 'echo run >> "$1"', "sh", self.path], "count")
        return Outcome()


class Critical(Step[None]):
    """A read-only check that always answers CRITICAL (a host that cannot be reached, say)."""

    name = "test.critical"
    scope = "env"
    read_only = True

    def targets(self, ctx: Context) -> list[EnvTarget]:
        return [EnvTarget(ctx.env.name)]

    def check(self, ctx: Context, target: Any) -> None:
        return None

    def plan(self, state: None) -> Plan:
        from indostar_ops.severity import Severity

        return Plan.nothing("web-9 does not answer on port 22", severity=Severity.CRITICAL)
