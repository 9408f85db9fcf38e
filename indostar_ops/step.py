"""The unit of work: one runbook paragraph as preflight -> check -> plan -> apply -> verify.

`preflight` resolves arguments without I/O, `check` only reads, `plan` is pure
and returns a frozen Plan (the Changes carry what apply needs in `params`),
`apply` performs exactly the planned changes through the connectors' write
paths and returns an `Outcome` (what happened, and a `Receipt` to undo it where
that is possible), and `verify` re-reads. Check mode is preflight + check + plan.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from .severity import Severity

if TYPE_CHECKING:
    from .context import Context
    from .inventory import HostTarget

__all__ = ["Change", "EnvTarget", "Outcome", "Plan", "Receipt", "Step", "freeze", "unified_diff"]

S = TypeVar("S")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def freeze(value: Any) -> Any:
    """Deep read-only copy: dicts become mappingproxies, lists tuples (plans cannot be edited later)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain JSON-able copy of a frozen value (for reports and journals)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class EnvTarget:
    """A non-host target: the database, the Redis instance, an AWS resource..."""

    name: str
    kind: str = "env"  # "database", "rds-instance", "volume", "alb-rule", "deployment", "queue"...
    id: str | None = None  # what the API calls it (ARN, volume id), when it differs from the name

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Change:
    """One typed change a step intends to make; `params` is what apply needs to make it."""

    summary: str
    before: Any = None
    after: Any = None
    diff: str | None = None
    destructive: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", freeze(self.params))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": self.summary}
        for key in ("before", "after", "diff"):
            value = getattr(self, key)
            if value is not None:
                out[key] = thaw(value)
        if self.destructive:
            out["destructive"] = True
        return out


@dataclass(frozen=True)
class Plan:
    """What apply would do, or why nothing is needed; read-only steps also carry a severity."""

    changes: tuple[Change, ...] = ()
    reason: str | None = None
    severity: Severity | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "changes", tuple(self.changes))
        object.__setattr__(self, "data", freeze(self.data))

    @property
    def noop(self) -> bool:
        return not self.changes

    @classmethod
    def nothing(cls, reason: str, **kwargs: Any) -> Plan:
        return cls(changes=(), reason=reason, **kwargs)


@dataclass(frozen=True)
class Receipt:
    """The prior state a change replaced, as the step (registry name + arguments) that restores it.

    Receipts are journaled, so an interrupted run can still be unwound later.
    """

    step: str  # registry name of the undo step, e.g. "app.scale"
    args: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""  # "scale backend back to 3 replicas"

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", freeze(self.args))

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "args": thaw(self.args), "summary": self.summary}


@dataclass(frozen=True)
class Outcome:
    """What apply did: a reason for the report, data (bytes reclaimed, new expiry), an undo receipt.

    `changes`, when given, are the changes as made (with their measured `after`), reported in place of the plan's.
    """

    reason: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    receipt: Receipt | None = None
    changes: tuple[Change, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", freeze(self.data))
        if self.changes is not None:
            object.__setattr__(self, "changes", tuple(self.changes))


class Step(Generic[S]):
    """Base class. Subclasses set `name`, and `scope`/`groups`, and implement check/plan/apply."""

    name: ClassVar[str]
    scope: ClassVar[Literal["host", "env"]] = "host"
    groups: Sequence[str] | None = None
    phase: str | None = None
    read_only: ClassVar[bool] = False
    idempotent: ClassVar[bool] = True
    destructive: ClassVar[bool] = False
    irreversible: ClassVar[str | None] = None  # why there is no undo ("EBS volumes cannot shrink")
    needs: ClassVar[tuple[str, ...]] = ()  # inventory sections ("database", "redis", "aws"...): present, env: set
    max_parallel: ClassVar[int | None] = None  # at most this many targets at once (1: VACUUM/REINDEX one by one)

    def arguments(self) -> dict[str, Any]:
        """The step's arguments, for its identity (phase/name/hash) and the journal."""
        return {k: v for k, v in sorted(vars(self).items()) if not k.startswith("_")}

    def identity(self) -> str:
        """`phase/name/hash(args)`: the same step twice is two steps; a resumed run finds its own."""
        blob = json.dumps(thaw(self.arguments()), sort_keys=True, default=str).encode()
        return f"{self.phase or 'main'}/{self.name}/{hashlib.sha256(blob).hexdigest()[:10]}"

    def preflight(self, ctx: Context) -> None:
        """No I/O: resolve groups, flags and the inventory sections this step needs; UsageError = exit 2."""
        from .errors import UsageError
        from .secrets import secrets_in

        for section in self.needs:
            value = getattr(ctx.env, section, None)
            if value is None:
                raise UsageError(f"{self.name}: environment {ctx.env.name!r} has no {section!r} section",
                                 hint=f"add '{section}:' to inventory/{ctx.env.name}.yaml")
            for secret in secrets_in(value):
                secret.preflight()
        if self.scope == "host":
            self.targets(ctx)  # host targets come from the inventory: an unknown group is a usage error here

    def targets(self, ctx: Context) -> Sequence[HostTarget | EnvTarget]:
        """Hosts of `groups` for host steps; one target named after the environment otherwise."""
        if self.scope == "host":
            return ctx.env.hosts(self.groups)
        return [EnvTarget(ctx.env.name)]

    def check(self, ctx: Context, target: Any) -> S:
        raise NotImplementedError

    def plan(self, state: S) -> Plan:
        raise NotImplementedError

    def apply(self, ctx: Context, target: Any, plan: Plan) -> Outcome | None:
        if plan.changes:
            raise NotImplementedError(f"{self.name} planned changes but has no apply()")
        return None

    def verify(self, ctx: Context, target: Any, plan: Plan, outcome: Outcome) -> None:
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
