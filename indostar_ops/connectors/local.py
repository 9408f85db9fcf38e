"""Runs commands on this machine: the sandbox's "hosts" are directories here."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence

from ..errors import TransientError
from .shell import CommandResult, render

__all__ = ["LocalConnector"]


class LocalConnector:
    def __init__(self, name: str, command_timeout: float) -> None:
        self.name = name
        self.command_timeout = command_timeout

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = None,
    ) -> CommandResult:
        started = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv),
                input=stdin or "",
                capture_output=True,
                text=True,
                timeout=timeout or self.command_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TransientError(
                f"{self.name}: command timed out after {exc.timeout:.0f}s: {render(argv)}",
            ) from None
        except FileNotFoundError:
            return CommandResult(render(argv), 127, "", f"{argv[0]}: command not found", 0.0)
        return CommandResult(render(argv), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)

    def put(self, data: bytes, path: str, mode: int | None = None) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if mode is not None:
            os.chmod(path, mode)

    def close(self) -> None:
        """Nothing to release."""
