"""Runbook "Slow Response Times" (cache) and "Useful Commands / Redis": info, keys, delete, flush."""

from __future__ import annotations

from invoke import task

from ._help import common
from ._help import int_flag as _int


@task(help=common(changes=False, pings="PINGs in the latency sample (default 20)"))
def info(c, env=None, check=False, json=False, pings=20):
    """Redis memory, hit rate, evictions, clients and latency from here; exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN."""
    from ..cli import run_steps
    from ..steps.cache import CacheInfo

    run_steps("cache.info", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [CacheInfo(pings=_int(pings, "--pings") or 0)])


@task(help=common(changes=False, pattern="Redis glob pattern, e.g. 'orders:*' (required)",
                  limit="list at most this many keys (default 100)",
                  db="database number (default: the inventory URL's)"))
def keys(c, pattern="", env=None, check=False, json=False, limit=None, db=None):
    """Keys matching a pattern with type, TTL and size, by SCAN with a cap (never KEYS *)."""
    from ..cli import run_steps
    from ..steps.cache import CacheKeys

    run_steps("cache.keys", env=env, check=check, json=json,
              build=lambda _env: [CacheKeys(pattern, limit=_int(limit, "--limit"), db=_int(db, "--db"))])


@task(help=common(pattern="Redis glob pattern, e.g. 'orders:*' (required; '*' alone is refused)",
                  limit="delete at most this many keys per run (default 10000)",
                  db="database number (default: the inventory URL's)"))
def delete(c, pattern="", env=None, check=False, json=False, yes=False, limit=None, db=None):
    """UNLINK exactly the keys a SCAN preview lists, in batches; --check shows them and deletes nothing."""
    from ..cli import run_steps
    from ..steps.cache import CacheDelete

    run_steps("cache.delete", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [CacheDelete(pattern, limit=_int(limit, "--limit"), db=_int(db, "--db"))])


@task(help=common(db="the database number to flush (required; never all databases)",
                  include_queues="flush even if the database holds Celery queues (their tasks are lost)"))
def flush(c, db=None, env=None, check=False, json=False, yes=False, include_queues=False):
    """FLUSHDB of one named database; its key count first (--check); --yes on every tier. Never FLUSHALL."""
    from ..cli import run_steps
    from ..steps.cache import CacheFlush

    def build(_env):
        number = _int(db, "--db")
        if number is None:
            from ..errors import UsageError

            raise UsageError("cache.flush needs --db N: name the one database to flush",
                             hint="see the databases and their key counts with invoke cache.info")
        return [CacheFlush(number, include_queues=include_queues)]

    run_steps("cache.flush", env=env, check=check, json=json, yes=yes, build=build)
