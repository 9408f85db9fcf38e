"""Help texts shared by every task's common flags, and the one parser of numeric flags."""

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


def float_flag(value: object, flag: str) -> float | None:
    """Flags without a numeric default arrive as text; a bad number is a usage error (exit 2)."""
    if value in (None, ""):
        return None
    try:
        return float(str(value))
    except ValueError:
        from ..errors import UsageError

        raise UsageError(f"{flag} takes a number, not {value!r}") from None


def int_flag(value: object, flag: str) -> int | None:
    """A whole-number flag ("3", "3.0"); anything else is a usage error (exit 2)."""
    number = float_flag(value, flag)
    if number is None:
        return None
    if not number.is_integer():
        from ..errors import UsageError

        raise UsageError(f"{flag} takes a whole number, not {value!r}")
    return int(number)
