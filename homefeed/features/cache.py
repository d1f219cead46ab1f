"""An in-process copy of one entity's whole table, for the features the serving path reads most.

A request hydrates hundreds of candidate items, and item features change once
per materialization, so serving keeps them in memory: the keys sorted in a
NumPy array and the vectors as one matrix in the same order.  A lookup of 500
keys is a ``searchsorted`` plus a fancy index — no Python loop, no network —
well under the 1 ms target (see ``benchmarks/features.py``).  ``refresh`` is
cheap when nothing changed (one metadata read) and reloads when the store's
version or generation for the entity moved.  Between refreshes the cache does
not see expiries: call ``refresh`` on a timer or after each materialization.

A pair entity (``user_topic``, ``user_creator``: keys ``"<user>|<other>"``) is also indexed by numbers, the user
times the number of distinct others plus the other's rank, so `lookup_pairs` finds a request's pairs without
building their strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.features.store import (
    EntityMeta,
    Keys,
    Lookup,
    OnlineStore,
    StoreError,
    check_values,
    coerce_keys,
    key_array,
)


@dataclass(frozen=True)
class _Pairs:
    """A pair entity's keys as numbers: ``user * len(others) + rank of the other``, sorted, with their rows."""

    others: np.ndarray  # distinct second parts, sorted: int64 when every one is an integer, else str
    codes: np.ndarray  # sorted int64
    rows: np.ndarray  # the snapshot row of each code
    max_user: int  # larger users hold no pair (and would overflow the codes)


def _pairs(keys: np.ndarray) -> _Pairs | None:
    """The numeric index of ``"<user>|<other>"`` keys; None when the keys are not all such pairs."""
    if keys.dtype.kind != "U" or not len(keys):
        return None
    parts = pc.split_pattern(pa.array(keys), "|", max_splits=1)
    if pc.min(pc.list_value_length(parts)).as_py() != 2:
        return None
    user_text, other_text = pc.list_element(parts, 0), pc.list_element(parts, 1)
    try:
        user = pc.cast(user_text, pa.int64()).to_numpy()
    except pa.ArrowInvalid:
        return None
    other: np.ndarray = other_text.to_numpy(zero_copy_only=False).astype(str)
    try:  # integer others (creators, items) only when each is an integer's own spelling ("05" is not 5)
        numbers = pc.cast(other_text, pa.int64())
        if pc.all(pc.equal(pc.cast(numbers, pa.string()), other_text)).as_py():
            other = numbers.to_numpy()
    except pa.ArrowInvalid:
        pass
    if not (pc.all(pc.equal(pc.cast(user, pa.string()), user_text)).as_py() and user.min() >= 0):
        return None
    others, rank = np.unique(other, return_inverse=True)
    if int(user.max()) >= (2**62) // max(len(others), 1):  # the codes would overflow: strings it is
        return None
    codes = user * len(others) + rank
    order = np.argsort(codes, kind="stable")
    return _Pairs(others, codes[order], order.astype(np.int64), int(user.max()))


@dataclass(frozen=True)
class _Snapshot:
    keys: np.ndarray  # sorted: int64 ids or str
    values: np.ndarray  # (n, d) float32, row i for keys[i]
    columns: tuple[str, ...]
    version: str
    token: Any  # EntityMeta.token of the store state it was loaded from (None when built from arrays alone)
    pairs: _Pairs | None  # a pair entity's numeric index


class ItemCache:
    """One entity (by default ``item``) held in memory; swapped whole on reload, so readers never see half of one."""

    def __init__(self, store: OnlineStore | None, entity: str = "item") -> None:
        self.store = store
        self.entity = entity
        self._snap: _Snapshot | None = None
        self.loads = 0  # how many times the table was (re)loaded

    @classmethod
    def from_store(cls, store: OnlineStore, entity: str = "item") -> ItemCache:
        cache = cls(store, entity)
        cache.refresh()
        return cache

    def refresh(self) -> bool:
        """Reload if the store's data for the entity changed since the last load; True if it reloaded."""
        if self.store is None:
            raise StoreError(f"cache of {self.entity!r} has no store to refresh from")
        meta = self.store.meta(self.entity)
        if meta is None:
            raise StoreError(f"no entity {self.entity!r} in the online store at {self.store.location}")
        if self._snap is not None and self._snap.token == meta.token:
            return False
        keys, lookup = self.store.read_all(self.entity)
        self._install(keys, lookup.values, lookup.columns, lookup.version, meta.token)
        return True

    def load(self, keys: Keys, values: np.ndarray, columns: tuple[str, ...], meta: EntityMeta | None = None) -> None:
        """Build from the arrays just materialized (the whole table), skipping a reload from the store.

        Pass the store's ``meta`` after the write so the next ``refresh`` knows the cache is current.
        """
        keys = key_array(keys)[0]
        values = check_values(keys, values, tuple(columns))
        self._install(keys, values, tuple(columns), meta.version if meta else "", meta and meta.token)

    def _install(
        self, keys: np.ndarray, values: np.ndarray, columns: tuple[str, ...], version: str, token: Any
    ) -> None:
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        values = np.ascontiguousarray(values[order], dtype=np.float32)
        self._snap = _Snapshot(keys, values, columns, version, token, _pairs(keys))
        self.loads += 1

    def _current(self) -> _Snapshot:
        if self._snap is None:
            raise StoreError(f"cache of {self.entity!r} is empty: call refresh() or load() first")
        return self._snap

    def lookup(self, keys: Keys) -> Lookup:
        """Vectors for ``keys`` in their order, NaN rows and ``found`` False where absent — like a store read."""
        snap = self._current()
        wanted, possible = coerce_keys(key_array(keys)[0], "int" if snap.keys.dtype.kind in "iu" else "str")
        n, d = len(wanted), snap.values.shape[1]
        if n == 0 or len(snap.keys) == 0:
            return Lookup(np.full((n, d), np.nan, np.float32), np.zeros(n, bool), snap.columns, snap.version)
        pos = np.searchsorted(snap.keys, wanted)
        np.minimum(pos, len(snap.keys) - 1, out=pos)
        found = (snap.keys[pos] == wanted) & possible
        values = snap.values[pos]
        values[~found] = np.nan
        return Lookup(values, found, snap.columns, snap.version)

    def lookup_pairs(self, user_id: np.ndarray, other: np.ndarray) -> Lookup | None:
        """`lookup` of the pairs ``"<user_id[i]>|<other[i]>"`` by numbers; None when the entity is not one of pairs
        or ``other`` is not of its kind (ask `lookup` with the strings then)."""
        snap = self._current()
        pairs = snap.pairs
        other = np.asarray(other)
        if pairs is None or (other.dtype.kind in "iu") != (pairs.others.dtype.kind in "iu"):
            return None
        if other.dtype.kind not in "iu":
            other = other.astype(str)
        n, d = len(other), snap.values.shape[1]
        if n == 0:
            return Lookup(np.full((0, d), np.nan, np.float32), np.zeros(0, bool), snap.columns, snap.version)
        user = np.asarray(user_id, np.int64)
        possible = (user >= 0) & (user <= pairs.max_user)
        rank = np.minimum(np.searchsorted(pairs.others, other), len(pairs.others) - 1)
        codes = np.where(possible, user, 0) * len(pairs.others) + rank
        pos = np.minimum(np.searchsorted(pairs.codes, codes), len(pairs.codes) - 1)
        found = (pairs.codes[pos] == codes) & (pairs.others[rank] == other) & possible
        values = snap.values[pairs.rows[pos]]
        values[~found] = np.nan
        return Lookup(values, found, snap.columns, snap.version)

    @property
    def columns(self) -> tuple[str, ...]:
        return self._current().columns

    @property
    def version(self) -> str:
        return self._current().version

    def __len__(self) -> int:
        return 0 if self._snap is None else len(self._snap.keys)
