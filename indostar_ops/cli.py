"""The glue between Invoke tasks and the library: load, run, report, exit code.

Tasks stay thin: they parse their own arguments, build steps, and hand them to
`run_steps`. Everything heavy is imported here, at call time, never at
`invoke --list` time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import IndostarError, UsageError, exit_code_for

if TYPE_CHECKING:
    from .context import Context
    from .inventory import Environment
    from .results import RunResult
    from .step import Step

__all__ = ["Sections", "fail", "open_environment", "run_steps"]


@dataclass
class Sections:
    """Main steps (or runner Phases) plus the playbook sections run on failure and always."""

    main: Sequence[Any]
    on_failure: Sequence[Step[Any]] = ()
    always: Sequence[Step[Any]] = ()


def open_environment(env_name: str | None) -> Environment:
    from .inventory import list_environments, load_environment

    name = env_name or os.environ.get("INDOSTAR_ENV")
    if not name:
        raise UsageError("no environment given",
                         hint=f"pass --env NAME or set INDOSTAR_ENV (known: {', '.join(list_environments())})")
    return load_environment(name)


def run_steps(
    task: str,
    *,
    env: str | None,
    check: bool = False,
    json: bool = False,
    yes: bool = False,
    build: Callable[[Environment], Sequence[Step[Any]] | Sections],
    monitoring: bool = False,
    keep_going: bool = False,
    runner: dict[str, Any] | Callable[[Environment], dict[str, Any]] | None = None,
    report: Callable[[RunResult, Environment], None] | None = None,
    annotate: Callable[[Environment], list[str]] | None = None,
) -> RunResult:
    """Run the steps `build` returns for the environment; exit with the run's code.

    Exit codes: 0 success, 1 a step failed, 2 usage/inventory/confirmation error;
    monitoring tasks exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN.

    `runner` (a dict, or a function of the environment returning one) passes the long-run options
    through: Runner(serial=, max_fail_percent=) and Runner.run(resume=, deadline=, margin=, lock=, undo=).
    `report(result, environment)` prints before the summary (not with --json); `annotate(environment)`
    returns lines added to the result's notes (both outputs).
    """
    from invoke.exceptions import Exit

    ctx: Context | None = None
    try:
        from .context import Context
        from .report import ConsoleReporter, print_json, print_summary
        from .runner import Runner

        environment = open_environment(env)
        built = build(environment)
        sections = built if isinstance(built, Sections) else Sections(built)
        # --json is for pipelines: never a prompt (a production tier then needs --yes, else exit 2)
        ctx = Context(environment, check=check, assume_yes=yes, interactive=False if json else sys.stdin.isatty())
        reporter = None if json else ConsoleReporter(check=check)
        options = dict((runner(environment) if callable(runner) else runner) or {})
        batching = {k: options.pop(k) for k in ("serial", "max_fail_percent") if k in options}
        if not json:
            from .window import progress_listener

            ctx.progress = progress_listener()
        result = Runner(ctx, reporter=reporter, keep_going=keep_going, **batching).run(
            sections.main, task=task, on_failure=sections.on_failure, always=sections.always, **options)
    except IndostarError as exc:
        fail(exc, json=json, monitoring=monitoring)
    finally:
        if ctx is not None:
            ctx.close()
    if annotate is not None:
        result.notes += annotate(environment)
    if json:
        print_json(result.as_dict())
    else:
        if report is not None:
            report(result, environment)
        print_summary(result)
    code = result.exit_code(monitoring=monitoring)
    if code:
        raise Exit(code=code)
    return result


def fail(exc: IndostarError, *, json: bool, monitoring: bool = False) -> None:
    """Report an error that stopped the run before (or instead of) any step, and exit.

    A usage error exits 2 on every task, monitoring checks included: a typo in a cron line must be
    told apart from a real problem by its message, and every task agrees on what 2 means before a run.
    A check that ran but had nothing to check, or could not reach what it checks, is UNKNOWN (3).
    """
    from invoke.exceptions import Exit

    code = exit_code_for(exc)
    if json:
        from .report import print_json

        print_json({"error": exc.message, "hint": exc.hint, "exit_code": code})
    from .report import write

    write(sys.stderr, f"error: {exc}\n")  # EPIPE-safe, like every other line we print
    raise Exit(code=code)
