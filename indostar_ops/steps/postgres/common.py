"""What the PostgreSQL steps share: per-object targets, the server survey, display helpers.

Why targets carry schema and name as separate fields: SQL only ever sees them
through `psycopg.sql.Identifier` (a table called `order"s` is just a value), and
the dotted `name` exists for people to read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ... import units
from ...errors import StepError
from ...step import EnvTarget

if TYPE_CHECKING:
    from ...context import Context, DatabaseSession
    from ...inventory import DatabaseSettings

__all__ = [
    "Backend",
    "Nothing",
    "Relation",
    "Server",
    "admin",
    "display_name",
    "human_bytes",
    "missing_names",
    "pct",
    "quote_ident",
    "relation_filter",
    "server",
    "settings",
    "shorten",
    "survey",
    "text_table",
]

T = TypeVar("T")
_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")


@dataclass(frozen=True)
class Relation(EnvTarget):
    """A table or an index to treat; `name` is the display form, `schema`/`relname` go to SQL."""

    schema: str = ""
    relname: str = ""
    table: str = ""  # for an index: the table it belongs to (same schema)


@dataclass(frozen=True)
class Backend(EnvTarget):
    """One server session, pinned by pid *and* start time so a recycled pid is never mistaken for it."""

    pid: int = 0
    backend_start: datetime | None = None


@dataclass(frozen=True)
class Nothing(EnvTarget):
    """The single target of a step that found nothing to treat: its check just reports why."""

    reason: str = ""


@dataclass(frozen=True)
class Server:
    """Facts about the server that change what SQL we may send (column names, options)."""

    version: int
    database: str
    max_connections: int
    reserved: int
    role: str = ""
    read_all_stats: bool = True  # may see other roles' sessions and statements (pg_read_all_stats)
    read_all_settings: bool = True  # may read superuser-only settings such as shared_preload_libraries

    @property
    def major(self) -> int:
        return self.version // 10000

    def missing_grant(self, what: str) -> str:
        """Why a report is incomplete for this role, and the fix (the README says the same)."""
        return (f"role {self.role} lacks pg_read_all_stats, so {what}; read as database.admin_user, a role "
                f"granted pg_monitor (GRANT pg_monitor TO <role>; on RDS run it as the master user)")


def settings(ctx: Context) -> DatabaseSettings:
    database = ctx.env.database
    assert database is not None  # ctx.postgres() has already refused an environment without one
    return database


def admin(ctx: Context) -> DatabaseSession:
    """The maintenance connection (database.admin_user, else database.user)."""
    return ctx.postgres(admin=True)


def server(db: DatabaseSession) -> Server:
    from .queries import SERVER

    row = db.fetch(SERVER)[0]
    return Server(int(row["version"]), str(row["database"]), int(row["max_connections"]), int(row["reserved"]),
                  str(row["role"]), bool(row["read_all_stats"]), bool(row["read_all_settings"]))


def survey(ctx: Context, what: str, fn: Callable[[], T]) -> T:
    """Run a read in `targets()`, where the runner only catches our own errors: wrap driver errors."""
    import psycopg

    try:
        return fn()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepError(f"{ctx.env.name}: {what} failed: {first}",
                        hint="check database.admin_user's rights (pg_monitor / table ownership)") from None


def relation_filter(names: Sequence[str] | None, *, column: str = "c.relname",
                    param: str = "names") -> tuple[Any, dict[str, Any]]:
    """SQL condition (namespace alias n) matching `--table`/`--index` names, and its parameters.

    A name matches the bare relation name, `schema.name`, or the quoted form `schema."Name"`.
    `column` is a fixed alias chosen by the caller (c.relname for the relation, t.relname for an
    index's table); the names themselves are parameters.
    """
    from psycopg import sql

    if not names:
        return sql.SQL("true"), {}
    col = sql.SQL(column)
    ph = sql.Placeholder(param)
    return (sql.SQL("({col} = ANY({ph}) OR n.nspname || '.' || {col} = ANY({ph})"
                    " OR format('%%I.%%I', n.nspname, {col}) = ANY({ph}))").format(col=col, ph=ph),
            {param: list(names)})


def missing_names(names: Sequence[str] | None, rows: Iterable[dict[str, Any]], kind: str) -> None:
    """Refuse `--table`/`--index` names that matched nothing (a typo must not read as 'nothing to do')."""
    if not names:
        return
    seen: set[str] = set()
    for row in rows:
        seen |= {row["relname"], f"{row['schema']}.{row['relname']}", display_name(row["schema"], row["relname"])}
    unknown = [n for n in names if n not in seen]
    if unknown:
        raise StepError(f"no {kind} named {', '.join(map(repr, unknown))} in this database",
                        hint=f"names are NAME, SCHEMA.NAME or SCHEMA.\"Quoted\"; db.bloat lists {kind}s")


def quote_ident(name: str) -> str:
    """Display form of an identifier, as psql would print it (never sent to the server)."""
    return name if _PLAIN.match(name) else '"' + name.replace('"', '""') + '"'


def display_name(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def human_bytes(value: float | None) -> str:
    """Sizes as PostgreSQL's pg_size_pretty writes them ('1.5 MB')."""
    return units.human_bytes(value, units=units.PG_UNITS, sep=" ")


def pct(value: float | None) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0f}%"


def text_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain aligned table for the human report line (the JSON has the same facts as data)."""
    cells = [[str(h) for h in header]] + [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def shorten(text: str | None, limit: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
