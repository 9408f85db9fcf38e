"""The runbook's `\\copy (...) TO file.csv`, as `db.export --query NAME --out FILE.csv`.

Only a query the inventory names (`export_queries`, validated at load as one SELECT/WITH) can be
exported, and it runs in a READ ONLY transaction. `COPY (query) TO STDOUT` is streamed chunk by
chunk into a temporary file next to the target, which is renamed into place when complete: the
rows never sit in memory and a failed export never leaves a half-written CSV under the final name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StepError, UsageError
from ..step import Change, EnvTarget, Outcome, Plan, Step

if TYPE_CHECKING:
    from ..context import Context

__all__ = ["Export"]


@dataclass
class ExportState:
    out: Path
    exists: bool


class Export(Step[ExportState]):
    """Stream a named read-only inventory query to a local CSV file (COPY ... TO STDOUT)."""

    name = "db.export"
    scope = "env"
    needs = ("database",)
    idempotent = False  # the data changes between runs; each run writes what the query returns now

    def __init__(self, query: str, out: str, force: bool = False) -> None:
        self.query = query
        self.out = out
        self.force = force

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        known = ctx.env.export_queries
        if self.query not in known:
            raise UsageError(f"environment {ctx.env.name!r} has no export query {self.query!r}",
                             hint=f"known: {', '.join(sorted(known)) or '(none: add export_queries to the inventory)'}")
        if not self.out:
            raise UsageError("--out FILE.csv is required")

    def check(self, ctx: Context, target: EnvTarget) -> ExportState:
        out = Path(self.out).expanduser().resolve()
        if not out.parent.is_dir():
            raise UsageError(f"{out.parent} does not exist", hint="create the directory first")
        return ExportState(out, out.exists())

    def plan(self, state: ExportState) -> Plan:
        if state.exists and not self.force:
            raise StepError(f"{state.out} already exists; not overwriting it", hint="pass --force, or another --out")
        verb = "overwrite" if state.exists else "write"
        return Plan([Change(f"{verb} {state.out} with the rows of export query {self.query!r} (CSV with header)",
                            after=str(state.out), params={"out": str(state.out)})])

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        from .diagnose.readonly import copy_csv

        out = Path(str(plan.changes[0].params["out"]))
        partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
        ctx._guard(f"write {out}")
        with ctx.action("export", f"db.export {self.query} -> {out}", query=self.query, path=str(out)) as end:
            try:
                with partial.open("wb") as handle:
                    written = copy_csv(ctx, ctx.env.export_queries[self.query], handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                partial.replace(out)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            end["bytes"] = written
        with out.open("rb") as handle:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        return Outcome(reason=f"wrote {out}: {max(lines - 1, 0)} row(s), {written} bytes",
                       data={"path": str(out), "bytes": written, "rows": max(lines - 1, 0)})
