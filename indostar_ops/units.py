"""The one byte-size formatter: `du -h` style (powers of 1024) or Docker's own notation (powers of 1000)."""

from __future__ import annotations

__all__ = ["human_bytes"]

_BINARY = ("B", "K", "M", "G", "T")
_DECIMAL = ("B", "kB", "MB", "GB", "TB")


def human_bytes(size: float, *, decimal: bool = False) -> str:
    """1536 -> '1.5K' (like `du -h`/`sort -h`); with `decimal=True`, 1500 -> '1.5kB' (like `docker system df`)."""
    units, base = (_DECIMAL, 1000) if decimal else (_BINARY, 1024)
    for unit in units:
        if abs(size) < base or unit == units[-1]:
            if decimal:
                return f"{size:.4g}{unit}"  # go-units HumanSize: 4 significant digits
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= base
    raise AssertionError("unreachable")
