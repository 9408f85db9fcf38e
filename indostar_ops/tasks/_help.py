"""Help texts shared by every task's common flags."""

from __future__ import annotations

COMMON = {
    "env": "environment name (inventory/<env>.yaml); default $INDOSTAR_ENV",
    "check": "check mode: read and plan only, write nothing anywhere",
    "json": "print one JSON document on stdout and nothing else",
    "yes": "confirm changes to a production-tier environment (required without a terminal)",
}


def common(*, changes: bool = True, **extra: str) -> dict[str, str]:
    """Help for --env/--check/--json (and --yes when the task can change anything) plus `extra`."""
    return {k: v for k, v in COMMON.items() if changes or k != "yes"} | extra
