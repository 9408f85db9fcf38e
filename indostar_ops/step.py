"""The unit of work: one runbook paragraph as check -> plan -> apply -> verify.

`check` only reads, `plan` is pure (state in, changes or a no-op reason out),
`apply` performs exactly the planned changes through the connectors' write
paths, and `verify` re-reads. Check mode is check + plan and nothing else.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from .severity import Severity

if TYPE_CHECKING:
    from .context import Context
    from .inventory import HostTarget

__all__ = ["Change", "EnvTarget", "Plan", "Step", "unified_diff"]

S = TypeVar("S")


@dataclass(frozen=True)
class EnvTarget:
    """A non-host target: the database, the Redis instance, an AWS resource..."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Change:
    """One typed change a step intends to make."""

    summary: str
    before: Any = None
    after: Any = None
    diff: str | None = None
    destructive: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": self.summary}
        for key in ("before", "after", "diff"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.destructive:
            out["destructive"] = True
        return out


@dataclass
class Plan:
    """What apply would do, or why nothing is needed; read-only steps also carry a severity."""

    changes: list[Change] = field(default_factory=list)
    reason: str | None = None
    severity: Severity | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def noop(self) -> bool:
        return not self.changes

    @classmethod
    def nothing(cls, reason: str, **kwargs: Any) -> Plan:
        return cls(changes=[], reason=reason, **kwargs)


class Step(Generic[S]):
    """Base class. Subclasses set `name`, and `scope`/`groups`, and implement check/plan/apply."""

    name: ClassVar[str]
    scope: ClassVar[Literal["host", "env"]] = "host"
    groups: Sequence[str] | None = None
    phase: str | None = None
    read_only: ClassVar[bool] = False
    idempotent: ClassVar[bool] = True
    destructive: ClassVar[bool] = False
    max_parallel: ClassVar[int | None] = None  # at most this many targets at once (1: VACUUM/REINDEX one by one)

    def targets(self, ctx: Context) -> Sequence[HostTarget | EnvTarget]:
        """Hosts of `groups` for host steps; one target named after the step otherwise."""
        if self.scope == "host":
            return ctx.env.hosts(self.groups)
        return [EnvTarget(ctx.env.name)]

    def check(self, ctx: Context, target: Any) -> S:
        raise NotImplementedError

    def plan(self, state: S) -> Plan:
        raise NotImplementedError

    def apply(self, ctx: Context, target: Any, plan: Plan) -> None:
        if plan.changes:
            raise NotImplementedError(f"{self.name} planned changes but has no apply()")

    def verify(self, ctx: Context, target: Any, plan: Plan) -> None:
        """Default: re-check and re-plan; anything still to change means apply did not work."""
        if self.read_only or not self.idempotent:
            return
        from .errors import VerificationFailed

        again = self.plan(self.check(ctx, target))
        if again.changes:
            raise VerificationFailed(
                f"{target}: {self.name} still has changes after apply: "
                + "; ".join(c.summary for c in again.changes),
            )

    def undo(self) -> Step[Any] | None:
        """The step that reverses this one (maintenance off for on), where one exists."""
        return None

    def describe(self) -> str:
        return (self.__doc__ or self.name).strip().splitlines()[0]


def unified_diff(before: str, after: str, path: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{path} (current)",
            tofile=f"{path} (planned)",
        ),
    )
