"""Which online store a project uses: the factory, apart from the interface so neither backend imports it back.

`store.py` holds the interface both backends implement; this module is the one place that knows both, so the
import graph stays a tree (store <- sqlite_store, redis_store <- online).
"""

from __future__ import annotations

from homefeed.config import Settings
from homefeed.features.redis_store import RedisStore
from homefeed.features.sqlite_store import SqliteStore
from homefeed.features.store import OnlineStore, StoreError


def make_store(settings: Settings) -> OnlineStore:
    """The backend ``backends.online_store`` names: SQLite at ``paths.online_store`` or Redis at ``redis_url``."""
    backend = settings.backends.online_store
    if backend == "sqlite":
        return SqliteStore(settings.resolved_paths.online_store)
    if backend == "redis":
        return RedisStore(settings.backends.redis_url)
    raise StoreError(f"backends.online_store: unknown backend {backend!r}; choose sqlite or redis")
