"""Monitoring severities with Nagios-style exit codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""

from __future__ import annotations

import enum

__all__ = ["Severity"]


class Severity(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def rank(self) -> int:
        """Ordering for 'worst of': CRITICAL > WARNING > UNKNOWN > OK."""
        return {Severity.OK: 0, Severity.UNKNOWN: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}[self]

    @classmethod
    def worst(cls, severities: list[Severity]) -> Severity:
        return max(severities, key=lambda s: s.rank, default=cls.OK)
