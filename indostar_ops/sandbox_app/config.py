"""A release's configuration: `config.json` next to the `demo` package (path in $DEMO_CONFIG)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Config:
    release: str
    redis_url: str
    database: dict[str, Any]
    outbox: str
    webhook_secret_file: str
    queue: str = "celery"
    failed_queue: str = "celery:failed"
    cache_ttl_s: int = 60
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def webhook_secret(self) -> bytes:
        return Path(self.webhook_secret_file).read_bytes().strip()


def load(path: str | None = None) -> Config:
    """The release's configuration; by default the config.json beside this package."""
    source = Path(path or os.environ.get("DEMO_CONFIG") or Path(__file__).resolve().parent.parent / "config.json")
    data = json.loads(source.read_text())
    known = set(Config.__dataclass_fields__)
    return Config(**{k: v for k, v in data.items() if k in known},
                  extra={k: v for k, v in data.items() if k not in known})
