"""Error tree: every error names what it is about and the next thing to try.

Each class carries the process exit code the CLI maps it to, so library users
and the Invoke layer agree on what "usage error" or "step failed" means.
"""

from __future__ import annotations

__all__ = [
    "CheckModeViolation",
    "CommandError",
    "ConfirmationRequired",
    "ConnectionFailed",
    "Declined",
    "IndostarError",
    "InventoryError",
    "StepError",
    "StepValueError",
    "TransientError",
    "UnknownEnvironment",
    "Unreachable",
    "UsageError",
    "VerificationFailed",
    "WaitTimeout",
    "exit_code_for",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNKNOWN = 3  # monitoring checks: OK/WARNING/CRITICAL/UNKNOWN = 0/1/2/3


class IndostarError(Exception):
    """Root of every error this library raises on purpose."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  next: {hint}")


class UsageError(IndostarError, ValueError):
    """Bad arguments or a refused request: nothing was executed."""

    exit_code = EXIT_USAGE


class InventoryError(UsageError):
    """The inventory could not be loaded or validated: nothing was executed."""


class UnknownEnvironment(InventoryError, LookupError):
    """The requested environment has no inventory file."""


class ConfirmationRequired(UsageError):
    """A production-tier change needs --yes (or an interactive confirmation)."""


class Declined(UsageError):
    """The operator answered no at the confirmation prompt: nothing was changed (status `declined`)."""


class StepError(IndostarError):
    """A step failed on one target; the runner records it and carries on with the others."""


class StepValueError(StepError, ValueError):
    """A step was given a value it cannot use (e.g. an unsafe identifier)."""


class CommandError(StepError):
    """A remote or local command exited non-zero."""

    def __init__(self, target: str, command: str, exit_code: int, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-10:])
        super().__init__(
            f"{target}: command exited {exit_code}: {command}" + (f"\n{tail}" if tail else ""),
        )
        self.target = target
        self.command = command
        self.returncode = exit_code
        self.output = output


class TransientError(StepError):
    """Worth retrying: a timeout or a dropped connection."""


class ConnectionFailed(TransientError, ConnectionError):
    """An established connection dropped: worth one retry after reconnecting."""


class Unreachable(StepError, ConnectionError):
    """Could not connect, get a banner, agree on a host key or authenticate: never retried.

    The runner reports it as status `unreachable` (like Ansible); a dead host costs one timeout.
    """

    def __init__(self, target: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{target}: unreachable: {reason}", hint=hint)
        self.target = target
        self.reason = reason


class WaitTimeout(StepError):
    """A wait (snapshot available, rollout done...) did not finish before its deadline."""


class VerificationFailed(StepError):
    """apply() ran but re-reading shows the desired state was not reached."""


class CheckModeViolation(StepError):
    """A write reached a connector's write path during --check: a bug in the step, never executed."""


def exit_code_for(exc: BaseException) -> int:
    """The one mapping from an error to a process exit code (results map statuses in results.py)."""
    return int(getattr(exc, "exit_code", EXIT_FAILED)) if isinstance(exc, IndostarError) else EXIT_FAILED
