"""`indostar-ops` / `python -m indostar_ops`: the same tasks as `invoke`, with CI-grade exit codes.

Invoke exits 1 for an unknown task or flag, which a pipeline cannot tell from a failed step;
this program exits 2 for every usage error, as the library does.
"""

from __future__ import annotations

from invoke import Program
from invoke.exceptions import Exit, ParseError

from .errors import EXIT_USAGE
from .tasks import namespace


class IndostarProgram(Program):
    """An Invoke program bound to our namespace; parse errors exit 2."""

    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise Exit(f"error: {exc}", code=EXIT_USAGE) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(f"error: {exc}\n  next: indostar-ops --list shows the tasks, "
                       "indostar-ops --help TASK its flags", code=EXIT_USAGE) from None


program = IndostarProgram(namespace=namespace, name="indostar-ops", binary="indostar-ops", version="0.1.0")


def main() -> None:
    program.run()


if __name__ == "__main__":
    main()
