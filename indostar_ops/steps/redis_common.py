"""Redis facts the cache and Celery steps share: a server's name as a target, its db, one error mapping."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from ..step import EnvTarget

if TYPE_CHECKING:
    from ..context import Context, RedisSession

__all__ = ["redis_call", "redis_target", "url_db"]

T = TypeVar("T")


def redis_call(session: RedisSession, fn: Callable[[], T]) -> T:
    """Run a Redis call; connection and AUTH failures become one line with the next thing to try."""
    from ..connectors.redis import redis_errors

    with redis_errors(session.where):
        return fn()


def url_db(url: str) -> int:
    """The logical database a Redis URL selects (/N or ?db=N), without connecting."""
    parts = urlsplit(url)
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        if name == "db" and value.isdigit():
            return int(value)
    path = parts.path.strip("/") if parts.scheme != "unix" else ""
    return int(path) if path.isdigit() else 0


def redis_target(ctx: Context, db: int | None = None) -> EnvTarget:
    """`redis://host:port/N` as a target name (no credentials, no I/O)."""
    settings = ctx.env.redis
    assert settings is not None
    parts = urlsplit(settings.url)
    number = url_db(settings.url) if db is None else db
    if parts.scheme == "unix":
        return EnvTarget(f"unix://{parts.path}?db={number}", kind="redis-db", id=str(number))
    return EnvTarget(f"{parts.scheme}://{parts.hostname or '127.0.0.1'}:{parts.port or 6379}/{number}",
                     kind="redis-db", id=str(number))
