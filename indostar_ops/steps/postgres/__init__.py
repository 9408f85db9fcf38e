"""PostgreSQL procedures of the runbook: reports (activity, locks, slow queries, bloat, pool sizing)
and maintenance (VACUUM, ANALYZE, concurrent REINDEX, ending idle or runaway sessions).

Every session is named `indostar-ops` and runs under statement_timeout and lock_timeout
(see `connectors.postgres`); identifiers reach SQL only through `psycopg.sql`.
Names are imported lazily so importing one step does not load the others.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Activity", "Analyze", "BloatReport", "KillIdle", "KillLong", "Locks", "PoolAdvice", "Reindex",
           "SlowQueries", "Vacuum"]

_WHERE = {
    "Activity": "activity",
    "Locks": "activity",
    "SlowQueries": "stats",
    "BloatReport": "stats",
    "Vacuum": "vacuum",
    "Analyze": "vacuum",
    "Reindex": "reindex",
    "KillIdle": "sessions",
    "KillLong": "sessions",
    "PoolAdvice": "pool",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
