"""What the pipeline reads besides the model: feature vectors (in-process caches or the online store) and each
user's lists of seen, hidden and engaged-with ids, all shared through the online store so replicas stay stateless.

Every store call goes through a :class:`StoreGuard`: a call that fails (Redis down, a timeout) marks the store
down for ``store_retry_seconds``, during which requests skip it at once instead of each waiting for a timeout;
the first call after that tries again, so the service recovers by itself when the store is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import pyarrow as pa

from homefeed.features.cache import ItemCache
from homefeed.features.store import Keys, Lookup, OnlineStore, PairKeys, StoreError

T = TypeVar("T")


class StoreDownError(StoreError):
    """The online store failed just now (or recently): the request degrades instead of waiting for it."""


class StoreGuard:
    """A circuit breaker around the online store: fail fast while it is down, try again after ``retry_s``.

    ``connect`` opens the store; it is called again after a failure to connect, so a service started while its
    store was down starts serving from it once it is up.
    """

    def __init__(
        self,
        store: OnlineStore | None = None,
        retry_s: float = 1.0,
        connect: Callable[[], OnlineStore] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.retry_s = retry_s
        self._connect = connect
        self._clock = clock
        self._down_until = 0.0
        self.last_error: str | None = None
        self.failures = 0  # calls that failed, since start
        self._lock = threading.Lock()

    @property
    def up(self) -> bool:
        return self.store is not None and self._clock() >= self._down_until and self.last_error is None

    def call(self, fn: Callable[[OnlineStore], T]) -> T:
        if self._clock() < self._down_until:
            raise StoreDownError(f"online store down: {self.last_error}")
        try:
            if self.store is None:
                if self._connect is None:
                    raise StoreError("no online store is configured")
                self.store = self._connect()
            out = fn(self.store)
        except StoreError as exc:
            with self._lock:
                self.failures += 1
                self.last_error = str(exc)
                self._down_until = self._clock() + self.retry_s
            raise StoreDownError(str(exc)) from None
        self.last_error = None
        return out


class OnlineFeatures:
    """Feature lookups by entity: from an in-process :class:`ItemCache` for ``cached`` entities, else the store."""

    def __init__(self, guard: StoreGuard, cached: Sequence[str] = ("item", "creator")):
        self.guard = guard
        self.cached = tuple(cached)
        self.caches: dict[str, ItemCache] = {}

    def refresh(self) -> list[str]:
        """Load or reload each cached entity whose data changed in the store; returns the entities reloaded.

        A cache that cannot be refreshed (the store is down, the entity not materialized yet) keeps what it had.
        """
        reloaded = []
        for entity in self.cached:

            def load(store: OnlineStore, entity: str = entity) -> bool:
                if store.meta(entity) is None:  # not materialized (yet): nothing to hold
                    return False
                cache = self.caches.get(entity)
                if cache is None or cache.store is not store:
                    cache = ItemCache(store, entity)
                changed = cache.refresh()
                self.caches[entity] = cache
                return changed

            try:
                if self.guard.call(load):
                    reloaded.append(entity)
            except StoreError:
                continue
        return reloaded

    def read(self, requests: Sequence[tuple[str, Keys | PairKeys]]) -> list[Lookup]:
        """One lookup per (entity, keys): cached entities locally, the others in one store round trip.

        Raises :class:`StoreDownError` if the store is needed and fails; a cached entity not loaded yet is read from
        the store like the others.  Pair keys are found by number in a cache, as their strings elsewhere.
        """
        out: list[Lookup | None] = [None] * len(requests)
        remote = []
        for i, (entity, keys) in enumerate(requests):
            if self.holds(entity):
                cache = self.caches[entity]
                if isinstance(keys, PairKeys):
                    out[i] = cache.lookup_pairs(keys.user_id, keys.other) or cache.lookup(keys.strings())
                else:
                    out[i] = cache.lookup(keys)
            else:
                remote.append(i)
        if remote:
            asked = [(e, k.strings() if isinstance(k, PairKeys) else k) for e, k in (requests[i] for i in remote)]
            got = self.guard.call(lambda s: s.read_many(asked))
            for i, lookup in zip(remote, got, strict=True):
                out[i] = lookup
        return out  # type: ignore[return-value]

    def holds(self, entity: str) -> bool:
        """Whether ``entity`` is read from memory now (a cache loaded), not from the store."""
        cache = self.caches.get(entity)
        return cache is not None and len(cache) > 0

    def column(self, entity: str, name: str) -> bool:
        return self.holds(entity) and name in self.caches[entity].columns


#: The per-user id lists the pipeline keeps in the online store.
SEEN, HIDDEN, CREATORS = "seen", "hidden", "creators"


class UserSignals:
    """Per user: items shown (seen filter), items hidden or reported (never again), creators engaged with."""

    def __init__(self, guard: StoreGuard, keep: dict[str, int]):
        self.guard = guard
        self.keep = keep

    def read(self, users: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each list of each user, as (index into ``users``, id, time) columns; raises StoreDownError if it cannot."""
        users = np.asarray(users, np.int64)
        kinds = (SEEN, HIDDEN, CREATORS)
        if len(users) == 1:  # a service call: every row is the one request's
            lists = self.guard.call(lambda s: s.read_lists(kinds, users))
            return {kind: (i.astype(np.int64), ids, ts) for kind, (i, ids, ts) in zip(kinds, lists, strict=True)}
        unique, inverse = np.unique(users, return_inverse=True)
        order = np.argsort(inverse, kind="stable")  # requests grouped by user
        counts = np.bincount(inverse, minlength=len(unique))
        starts = np.cumsum(counts) - counts
        out = {}
        lists = self.guard.call(lambda s: s.read_lists(kinds, unique))  # one round trip for the three lists
        for kind, (index, ids, ts) in zip(kinds, lists, strict=True):
            # from unique users back to every request of the batch (a user may ask twice in one batch)
            rep = counts[index]
            entry = np.repeat(np.arange(len(index)), rep)
            offset = np.arange(len(entry)) - np.repeat(np.cumsum(rep) - rep, rep)
            owners = order[starts[index][entry] + offset] if len(entry) else np.empty(0, np.int64)
            out[kind] = (owners.astype(np.int64), ids[entry], ts[entry])
        return out

    def record_seen(self, impressions: pa.Table) -> None:
        """The items of canonical ``impressions`` into their users' seen lists (the simulator's and the log child's)."""
        self.record(
            SEEN,
            impressions["user_id"].to_numpy(),
            impressions["item_id"].to_numpy(),
            impressions["ts"].cast(pa.int64()).to_numpy(),
        )

    def record(self, kind: str, users: np.ndarray, ids: np.ndarray, ts: np.ndarray) -> None:
        if len(users):
            self.guard.call(lambda s: s.add_ids(kind, users, ids, ts, self.keep[kind]))
