"""Redis through redis-py, with socket timeouts from the inventory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..inventory import RedisSettings

__all__ = ["READ_COMMANDS", "RedisConnector", "read_only_client", "redis_errors"]

# Commands that never change data: the read handle steps get refuses every other one.
READ_COMMANDS = frozenset(["PING", "INFO", "DBSIZE", "TIME", "CLIENT", "CONFIG", "LATENCY", "SLOWLOG", "MEMORY", "OBJECT", "COMMAND", "EXISTS", "TYPE", "TTL", "PTTL", "EXPIRETIME", "SCAN", "KEYS", "RANDOMKEY", "STRLEN", "GET", "MGET", "GETRANGE", "LLEN", "LRANGE", "LINDEX", "LPOS", "HGET", "HMGET", "HGETALL", "HLEN", "HKEYS", "HVALS", "HEXISTS", "HSCAN", "HSTRLEN", "SCARD", "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SSCAN", "SRANDMEMBER", "ZCARD", "ZCOUNT", "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZRANK", "ZSCORE", "ZSCAN", "XLEN", "XRANGE", "XREVRANGE", "XINFO", "XPENDING", "PFCOUNT", "BITCOUNT", "GETBIT", "DUMP"])
_WRITE_SUBCOMMANDS = {"CLIENT": {"KILL", "PAUSE", "UNPAUSE", "NO-EVICT", "SETNAME"}, "CONFIG": {"SET", "REWRITE",
                      "RESETSTAT"}, "MEMORY": {"PURGE"}, "SLOWLOG": {"RESET"}, "LATENCY": {"RESET"}}


def _refuse_writes(args: tuple[Any, ...]) -> None:
    words = " ".join(str(a) for a in args[:2]).upper().split()
    name = words[0] if words else ""
    sub = words[1] if len(words) > 1 else ""
    if name not in READ_COMMANDS or sub in _WRITE_SUBCOMMANDS.get(name, ()):
        from ..errors import StepError

        raise StepError(f"Redis {name} is a write: it must go through RedisSession.change "
                        "(journaled, refused in check mode)")


def read_only_client(client: Any) -> Any:
    """A client on the same connection pool that refuses every command not in READ_COMMANDS."""
    import redis
    from redis.client import Pipeline

    class ReadOnlyPipeline(Pipeline):
        def pipeline_execute_command(self, *args: Any, **options: Any) -> Any:
            _refuse_writes(args)
            return super().pipeline_execute_command(*args, **options)

    class ReadOnlyRedis(redis.Redis):
        def execute_command(self, *args: Any, **options: Any) -> Any:
            _refuse_writes(args)
            return super().execute_command(*args, **options)

        def pipeline(self, transaction: bool = False, shard_hint: Any = None) -> Any:
            return ReadOnlyPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    return ReadOnlyRedis(connection_pool=client.connection_pool)


class RedisConnector:
    """`db` opens another logical database of the same server (URL, password, timeouts unchanged)."""

    def __init__(self, settings: RedisSettings, db: int | None = None) -> None:
        import redis

        password = settings.password.get() if settings.password is not None else None
        self.client: Any = redis.Redis.from_url(
            settings.url,
            password=password,
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=settings.socket_timeout,
            decode_responses=True,
        )
        if db is not None:  # the URL's own /N wins over a from_url keyword, so set it on the pool
            self.client.connection_pool.connection_kwargs["db"] = db
        self.db: int = int(self.client.connection_pool.connection_kwargs.get("db") or 0)
        self.reader: Any = read_only_client(self.client)
        self.where = _where(settings.url, self.db)

    def close(self) -> None:
        self.client.close()


def _where(url: str, db: int) -> str:
    """The server and database for messages and the journal, without credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}?db={db}"
    return f"{parts.scheme}://{parts.hostname or '127.0.0.1'}:{parts.port or 6379}/{db}"


@contextmanager
def redis_errors(where: str) -> Iterator[None]:
    """Turn a redis-py connection/auth error into one line naming the server and the next thing to try."""
    import redis.exceptions as rex

    from ..errors import ConnectionFailed, StepError, Unreachable

    try:
        yield
    except rex.AuthenticationError as exc:
        raise Unreachable(f"Redis {where}", "needs a password, or refused the one given (AUTH)",
                          hint="set redis.password in the inventory to a secret reference (env:NAME) "
                               "holding the right password") from None
    except rex.ResponseError as exc:
        text = str(exc)
        if text.startswith(("NOAUTH", "WRONGPASS")):
            raise Unreachable(f"Redis {where}", "needs a password, or refused the one given (AUTH)",
                              hint="set redis.password in the inventory to a secret reference "
                                   "(env:NAME)") from None
        raise StepError(f"Redis {where}: {text}", hint="check the command's arguments (database number, "
                        "key type)") from None
    except rex.TimeoutError as exc:
        if "connecting" in str(exc).lower():  # no answer at all: a dead server costs one timeout, never retried
            raise Unreachable(f"Redis {where}", str(exc),
                              hint=f"check that Redis is running and reachable at {where}, or fix redis.url "
                                   "in the inventory") from None
        raise ConnectionFailed(f"Redis {where}: timed out ({exc})",
                               hint="check the server's load (invoke cache.info) and redis.socket_timeout") from None
    except rex.ConnectionError as exc:
        raise Unreachable(f"Redis {where}", str(exc).splitlines()[0] if str(exc) else "connection refused",
                          hint=f"check that Redis is running and reachable at {where} "
                               "(redis-cli -u URL ping), or fix redis.url in the inventory") from None
