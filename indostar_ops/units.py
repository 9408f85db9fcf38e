"""Units shared by every step: the one byte-size formatter (`du -h` style, or Docker's own notation)
and the one age/duration syntax of the CLI and playbooks (`7d`, `12h`, `90m`)."""

from __future__ import annotations

import re

from .errors import UsageError

__all__ = ["describe_age", "human_bytes", "parse_age"]

_AGE_UNITS = {"d": 86400, "h": 3600, "m": 60}
_AGE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")

_BINARY = ("B", "K", "M", "G", "T")
_DECIMAL = ("B", "kB", "MB", "GB", "TB")


PG_UNITS = ("B", "kB", "MB", "GB", "TB")  # pg_size_pretty's names (powers of 1024), with a space
IEC_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(size: float | None, *, decimal: bool = False, units: tuple[str, ...] | None = None,
                sep: str = "") -> str:
    """The one byte formatter: 1536 -> '1.5K' (like `du -h`/`sort -h`).

    `decimal=True`: 1500 -> '1.5kB' (like `docker system df`); `units=PG_UNITS, sep=" "`: '1.5 kB' (like
    PostgreSQL's pg_size_pretty); `units=IEC_UNITS`: '1.5KiB'. None (unknown) -> '?'.
    """
    if size is None:
        return "?"
    size = float(size)
    names, base = (_DECIMAL, 1000) if decimal else (units or _BINARY, 1024)
    for unit in names:
        if abs(size) < base or unit == names[-1]:
            if decimal:
                return f"{size:.4g}{unit}"  # go-units HumanSize: 4 significant digits
            return f"{size:.0f}{sep}{unit}" if unit == "B" else f"{size:.1f}{sep}{unit}"
        size /= base
    raise AssertionError("unreachable")


def parse_age(text: str) -> int:
    """'7d' / '12h' / '90m' -> seconds (at least one minute)."""
    match = _AGE.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"invalid age {text!r}", hint="use a positive number with d, h or m, e.g. --older-than 7d")
    return int(match.group(1)) * _AGE_UNITS[match.group(2)]


def describe_age(seconds: int) -> str:
    """Seconds -> the shortest exact form: 604800 -> '7d', 5400 -> '90m', 61 -> '61s'."""
    for unit, size in _AGE_UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
