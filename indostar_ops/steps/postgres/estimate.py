"""Bloat estimates for tables and indexes: measured with pgstattuple when we may, else from statistics.

Why two methods: `pgstattuple` reads the relation and is exact, but it is an extension
(often not installed, and its functions need pg_stat_scan_tables). The statistics
estimate needs nothing but a recent ANALYZE: it compares the pages a relation occupies
with the pages its live rows (pg_class.reltuples x pg_stats row width) should need.
Both give the same shape, {bytes, wasted_bytes, bloat_pct, method, trusted}, so callers never care.

Why a floor: on a small relation the last, partly filled page is a large share of the whole.
Freshly built (unbloated) btree indexes on PostgreSQL 15 read as this much "bloat", pgstattuple /
statistics: 2 pages 50 / 50 %, 4 pages 23 / 25 %, 7 pages 13 / 14 %, 11 pages 7 / 9 %, 19 pages
3 / 5 %, 35 pages 0.5 / 3 % (tests/test_hardening_db.py re-measures it). So no decision is taken on
an estimate for a relation under MIN_TRUSTED_PAGES, and a difference of up to NOISE_PAGES pages is
never called bloat, whatever the percentages and the inventory's minimum size say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from . import queries

if TYPE_CHECKING:
    from ...context import DatabaseSession

__all__ = ["MIN_TRUSTED_PAGES", "NOISE_PAGES", "Bloat", "Estimator", "index_rows", "table_rows"]

MIN_TRUSTED_PAGES = 16  # 128 kB at 8 kB pages: below this an estimate decides nothing
NOISE_PAGES = 2  # wasted space up to this many pages is rounding (the last partial page), not bloat


@dataclass(frozen=True)
class Bloat:
    bytes: int
    wasted_bytes: int | None
    method: str
    block: int = 8192

    @property
    def pct(self) -> float | None:
        if self.wasted_bytes is None:
            return None
        return 100.0 * self.wasted_bytes / self.bytes if self.bytes else 0.0

    @property
    def trusted(self) -> bool:
        """Large enough for the estimate to mean something (see MIN_TRUSTED_PAGES)."""
        return self.wasted_bytes is not None and self.bytes >= MIN_TRUSTED_PAGES * self.block

    @property
    def floor_bytes(self) -> int:
        return MIN_TRUSTED_PAGES * self.block

    def over(self, limit_pct: float) -> bool:
        """Bloated beyond `limit_pct`, on an estimate we trust and by more than its noise."""
        pct = self.pct
        return (self.trusted and pct is not None and pct > limit_pct
                and (self.wasted_bytes or 0) > NOISE_PAGES * self.block)

    def as_dict(self) -> dict[str, Any]:
        pct = self.pct
        return {"bytes": self.bytes, "wasted_bytes": self.wasted_bytes,
                "bloat_pct": None if pct is None else round(pct, 1), "method": self.method,
                "trusted": self.trusted}


def table_rows(db: DatabaseSession, condition: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    return db.fetch(sql.SQL(queries.TABLES).format(filter=condition), params)


def index_rows(db: DatabaseSession, condition: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    return db.fetch(sql.SQL(queries.INDEXES).format(filter=condition), params)


class Estimator:
    """Picks the method once per session: pgstattuple if installed and executable, else statistics."""

    def __init__(self, db: DatabaseSession) -> None:
        self.db = db
        rows = db.fetch(queries.PGSTATTUPLE)
        self.schema: str | None = rows[0]["schema"] if rows and rows[0]["usable"] else None
        self.installed_unusable = bool(rows) and self.schema is None
        block = db.fetch("SELECT current_setting('block_size')::int AS b")[0]["b"]
        self.block = int(block)

    @property
    def method(self) -> str:
        return "pgstattuple" if self.schema else "statistics"

    @property
    def note(self) -> str | None:
        """Why the less exact method is in use, and how to get the exact one."""
        if self.schema:
            return None
        if self.installed_unusable:
            return ("pgstattuple is installed but database.admin_user may not execute it: "
                    "GRANT pg_stat_scan_tables TO that role for measured bloat")
        return "an estimate; CREATE EXTENSION pgstattuple in this database to measure it"

    def table(self, row: dict[str, Any]) -> Bloat:
        size = int(row["heap_bytes"])
        if self.schema:
            got = self.db.fetch(queries.table_bloat_pgstattuple(self.schema), {"oid": row["oid"]})[0]
            reserved = int(got["bytes"]) * (100 - int(got["fillfactor"])) / 100
            return Bloat(size, max(int(got["wasted_raw"] - reserved), 0), "pgstattuple", self.block)
        if row["expected_pages"] is None:
            return Bloat(size, None, "statistics (no ANALYZE yet)", self.block)
        pages = size // self.block
        return Bloat(size, max(pages - int(row["expected_pages"]), 0) * self.block, "statistics", self.block)

    def index(self, row: dict[str, Any]) -> Bloat:
        size = int(row["bytes"])
        if row["method"] != "btree":
            return Bloat(size, None, f"n/a ({row['method']})", self.block)
        if self.schema:
            got = self.db.fetch(queries.index_bloat_pgstattuple(self.schema), {"oid": row["oid"]})[0]
            free_pages = int(got["deleted_pages"]) + int(got["empty_pages"])
            density = got["leaf_density"]
            leaf_waste = 0.0
            if density is not None:
                leaf_waste = int(got["leaf_pages"]) * max(0.0, 1 - float(density) / int(row["fillfactor"]))
            return Bloat(size, int((leaf_waste + free_pages) * self.block), "pgstattuple", self.block)
        if row["expected_pages"] is None:
            return Bloat(size, None, "statistics (unknown)", self.block)
        pages = size // self.block
        return Bloat(size, max(pages - int(row["expected_pages"]), 0) * self.block, "statistics", self.block)
