"""Redis through redis-py, with socket timeouts from the inventory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..inventory import RedisSettings

__all__ = ["RedisConnector"]


class RedisConnector:
    def __init__(self, settings: RedisSettings) -> None:
        import redis

        password = settings.password.get() if settings.password is not None else None
        self.client: Any = redis.Redis.from_url(
            settings.url,
            password=password,
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=settings.socket_timeout,
            decode_responses=True,
        )
        self.where = settings.url.split("@")[-1]

    def close(self) -> None:
        self.client.close()
