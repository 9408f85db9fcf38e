"""The interface shared by the SSH and local connectors, and safe command building."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["CommandResult", "HostConnector", "render", "sh", "with_path_prefix"]


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


class HostConnector(Protocol):
    """A host reached by SSH or locally: run an argv, upload bytes."""

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = None,
    ) -> CommandResult: ...

    def put(self, data: bytes, path: str, mode: int | None = None) -> None: ...

    def close(self) -> None: ...


def render(argv: Sequence[str]) -> str:
    """The one place an argv becomes a shell string: every element is quoted."""
    return shlex.join(str(a) for a in argv)


def sh(script: str, *args: str) -> list[str]:
    """A fixed shell script whose inputs arrive as positional parameters ($1, $2...), never as code."""
    return ["sh", "-c", script, "sh", *args]


def with_path_prefix(argv: Sequence[str], prefix: Sequence[str]) -> list[str]:
    if not prefix:
        return list(argv)
    return ["sh", "-c", 'PATH="$0:$PATH" exec "$@"', ":".join(prefix), *argv]
