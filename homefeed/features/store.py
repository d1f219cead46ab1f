"""The online feature store: one interface, two backends (SQLite embedded, Redis), chosen by config.

The serving path reads one user and hundreds of candidate items per request, so
the store holds each entity's latest features as one dense float32 vector per
key (raw little-endian bytes, no pickle), with the column names and a version
kept once per entity as metadata.  A read for a user plus N items is one round
trip (``read_many``).  We wrote our own rather than running Feast because of
serving latency (Feast publishes a p99 of 198–425 ms for 500 rows online; this
store's target is ≤ 5 ms from Redis and ≤ 1 ms from the in-process item cache,
see ``cache.py``) and because it needs no extra service or registry.

Semantics shared by every backend (and checked by one behavioural test suite):

* ``write`` replaces the values of the keys given and leaves other keys alone;
  ``replace=True`` first removes every key of the entity (a full
  materialization, or a change of columns, which is refused otherwise).
* keys are int64 ids or strings (composite keys such as ``"42|sports"``);
  an entity's keys are of one kind, set by its first write, and ``5`` and
  ``"5"`` are the same key.
* a missing or expired key reads as a row of NaN with ``found`` False.
* every write bumps the entity's ``generation``, so a cache can tell that the
  data changed even when the version string did not.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.errors import HomefeedError

KeyType = Literal["int", "str"]
Keys = Sequence[int] | Sequence[str] | np.ndarray
DTYPE = np.dtype("<f4")

_ENTITY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class StoreError(HomefeedError, RuntimeError):
    """The online store is unreachable or was asked for something it cannot do; the message says which."""


@dataclass(frozen=True)
class EntityMeta:
    """What a reader needs to know about an entity's vectors: their layout and where they came from."""

    columns: tuple[str, ...]
    version: str
    key_type: KeyType
    generation: int  # bumped by every write
    updated_at: float  # unix seconds of the last write

    @property
    def token(self) -> tuple[str, int, float]:
        """Changes whenever the entity's data may have changed (what caches compare), even across a drop."""
        return (self.version, self.generation, self.updated_at)


@dataclass(frozen=True)
class Lookup:
    """Feature vectors for the keys asked for, in their order: NaN rows where ``found`` is False."""

    values: np.ndarray  # (n, d) float32
    found: np.ndarray  # (n,) bool
    columns: tuple[str, ...]
    version: str

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.columns.index(name)]


def pair_keys(user_id: np.ndarray, other: pa.Array | np.ndarray) -> np.ndarray:
    """Store keys of a user x topic / creator / item pair, ``"<user_id>|<other>"``, as materialization writes them."""
    users = pc.cast(pa.array(np.asarray(user_id, np.int64)), pa.string())
    others = pc.cast(other if isinstance(other, pa.Array) else pa.array(other), pa.string())
    return pc.binary_join_element_wise(users, others, "|").to_numpy(zero_copy_only=False).astype(str)


@dataclass(frozen=True)
class PairKeys:
    """Keys of a pair entity as their two columns: an in-process cache finds them as numbers, and the store's
    strings (`pair_keys`) are only made when the store is asked (building them took ~0.15 ms per request)."""

    user_id: np.ndarray  # int64
    other: np.ndarray  # int64 ids (creators, items) or strings (topics)

    def __len__(self) -> int:
        return len(self.user_id)

    def strings(self) -> np.ndarray:
        return pair_keys(self.user_id, self.other)


def check_entity(entity: str) -> str:
    """Entity names become table names and key prefixes, so they are plain identifiers."""
    if not isinstance(entity, str) or not _ENTITY.match(entity):
        raise StoreError(f"entity name {entity!r} must be an identifier (letters, digits, underscore)")
    return entity


def key_array(keys: Keys) -> tuple[np.ndarray, KeyType | None]:
    """Keys as an int64 or str array, and their kind (None for no keys)."""
    arr = np.asarray(keys)
    if arr.ndim != 1:
        raise StoreError(f"keys must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64), None
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False), "int"
    if arr.dtype.kind == "U" or (arr.dtype.kind == "O" and all(isinstance(k, str) for k in arr.tolist())):
        return arr.astype(str, copy=False), "str"
    raise StoreError(f"keys must be all integers or all strings, got {arr.dtype} values")


def coerce_keys(keys: np.ndarray, key_type: KeyType) -> tuple[np.ndarray, np.ndarray]:
    """Keys in the entity's kind, and which of them can exist there: ``"5"`` is id 5, ``"x"`` and ``"05"`` are none."""
    ok = np.ones(len(keys), dtype=bool)
    if key_type == "str":
        return keys.astype(str), ok
    if keys.dtype.kind in "iu":
        return keys.astype(np.int64, copy=False), ok
    ids = np.zeros(len(keys), dtype=np.int64)
    for i, k in enumerate(keys.tolist()):  # rare: integer ids asked for by their decimal strings
        try:
            ids[i] = int(k)
            ok[i] = str(ids[i]) == k
        except (ValueError, OverflowError):
            ok[i] = False
    return ids, ok


def parse_keys(keys: list[str], key_type: KeyType) -> np.ndarray:
    """Stored key strings back to an array: int64 for integer ids, str otherwise."""
    arr = np.array(keys, dtype=str) if keys else np.array([], dtype=str)
    return arr.astype(np.int64) if key_type == "int" else arr


def check_values(keys: np.ndarray, values: np.ndarray, columns: Sequence[str]) -> np.ndarray:
    """The matrix to store, as C-contiguous little-endian float32, after checking its shape against keys/columns."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise StoreError(f"values must be a 2-d matrix (keys × columns), got shape {values.shape}")
    if values.shape != (len(keys), len(columns)):
        raise StoreError(f"values have shape {values.shape}, expected ({len(keys)} keys, {len(columns)} columns)")
    if len(set(columns)) != len(columns) or not all(isinstance(c, str) and c for c in columns):
        raise StoreError("column names must be distinct, non-empty strings")
    if len(np.unique(keys)) != len(keys):
        raise StoreError("keys written together must be distinct")
    return np.ascontiguousarray(values, dtype=DTYPE)


def check_write(
    keys: Keys, values: np.ndarray, columns: Sequence[str], ttl_seconds: float | None
) -> tuple[np.ndarray, KeyType | None, np.ndarray, tuple[str, ...]]:
    """What every backend checks before a write: the keys, the matrix against them and the columns, the TTL.

    Returns the keys as an array with their kind, the matrix as `check_values` gives it, and the columns.
    """
    keys, key_type = key_array(keys)
    columns = tuple(columns)
    values = check_values(keys, values, columns)
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise StoreError(f"ttl_seconds must be positive, got {ttl_seconds}")
    return keys, key_type, values, columns


def check_layout(entity: str, old: EntityMeta | None, columns: tuple[str, ...], key_type: KeyType | None) -> None:
    """Refuse a write that would mix two layouts (or two key kinds) in one entity without ``replace``."""
    if old is None:
        return
    if old.columns != columns:
        raise StoreError(
            f"entity {entity!r} is stored with {len(old.columns)} other columns; write with replace=True to change them"
        )
    if key_type is not None and old.key_type != key_type:
        raise StoreError(f"entity {entity!r} has {old.key_type} keys, not {key_type}; write with replace=True")


def encode_rows(values: np.ndarray) -> list[bytes]:
    """One bytes object per row (d little-endian float32s), without a Python loop over the floats."""
    n, d = values.shape
    if d == 0:
        return [b""] * n
    return values.view(np.dtype(f"V{d * DTYPE.itemsize}")).ravel().tolist()


def decode_rows(blobs: Sequence[bytes | None], d: int, entity: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of bytes (None = missing) back to an (n, d) float32 matrix with NaN rows, and the found mask."""
    n = len(blobs)
    found = np.fromiter((b is not None for b in blobs), dtype=bool, count=n)
    k = int(found.sum())
    raw = bytearray().join(b for b in blobs if b is not None)  # writable, so the array needs no copy
    if len(raw) != k * d * DTYPE.itemsize:
        raise StoreError(f"entity {entity!r}: stored vectors do not have {d} float32 values; rematerialize it")
    rows = np.frombuffer(raw, dtype=DTYPE).reshape(k, d) if d else np.zeros((k, 0), np.float32)
    if k == n:
        return rows, found
    values = np.empty((n, d), dtype=np.float32)
    values[found] = rows
    values[~found] = np.nan
    return values, found


def check_ids(keys: Keys, ids: np.ndarray, ts: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What every backend checks before adding to id lists: integer keys, ids and times of one length."""
    keys_arr, kind = key_array(keys)
    ids, ts = np.asarray(ids), np.asarray(ts)
    if kind == "str" or ids.dtype.kind not in "iu" or ts.dtype.kind not in "iu":
        raise StoreError("id lists take integer keys, integer ids and integer times (microseconds)")
    if not len(keys_arr) == len(ids) == len(ts):
        raise StoreError(f"id lists: {len(keys_arr)} keys, {len(ids)} ids and {len(ts)} times differ in length")
    if keep < 1:
        raise StoreError(f"id lists: keep must be at least 1, got {keep}")
    return keys_arr.astype(np.int64), ids.astype(np.int64), ts.astype(np.int64)


def list_keys(keys: Keys) -> np.ndarray:
    keys_arr, kind = key_array(keys)
    if kind == "str":
        raise StoreError("id lists take integer keys")
    return keys_arr.astype(np.int64)


def empty_lookup(meta: EntityMeta, n: int = 0) -> Lookup:
    return Lookup(np.full((n, len(meta.columns)), np.nan, np.float32), np.zeros(n, bool), meta.columns, meta.version)


class OnlineStore(abc.ABC):
    """Latest feature vectors per entity and key; see the module docstring for the shared semantics."""

    #: Where the store lives (a file path or a Redis URL without its password), for messages.
    location: str

    @abc.abstractmethod
    def write(
        self,
        entity: str,
        keys: Keys,
        values: np.ndarray,
        columns: Sequence[str],
        version: str,
        ttl_seconds: float | None = None,
        replace: bool = False,
    ) -> None:
        """Store ``values[i]`` for ``keys[i]`` (expiring after ``ttl_seconds``, if given), in bulk."""

    @abc.abstractmethod
    def read_many(self, requests: Sequence[tuple[str, Keys]]) -> list[Lookup]:
        """One lookup per (entity, keys) request, all in one round trip."""

    @abc.abstractmethod
    def meta(self, entity: str) -> EntityMeta | None:
        """The entity's layout and version, or None if it was never written (cheap: for cache checks)."""

    @abc.abstractmethod
    def read_all(self, entity: str) -> tuple[np.ndarray, Lookup]:
        """Every live key of the entity and its vectors (for the in-process cache; not for the request path)."""

    @abc.abstractmethod
    def drop(self, entity: str) -> None:
        """Remove the entity: its vectors and its metadata."""

    @abc.abstractmethod
    def add_ids(self, entity: str, keys: Keys, ids: np.ndarray, ts: np.ndarray, keep: int) -> None:
        """Remember id ``ids[i]`` at time ``ts[i]`` (int64 microseconds) in the list of integer key ``keys[i]``.

        An id already in a list takes the later time; each list touched keeps only its ``keep`` newest ids.
        Lists (what a user saw, hid, engaged with) live beside the feature vectors so that every replica of the
        service shares them; they never expire by clock, only by ``keep``.
        """

    @abc.abstractmethod
    def read_ids(self, entity: str, keys: Keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every id in the lists of integer ``keys`` in one round trip: (index into ``keys``, id, time) arrays."""

    def read_lists(self, entities: Sequence[str], keys: Keys) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`read_ids` of several lists of the same keys (a user's seen, hidden, creators) in one round trip."""
        return [self.read_ids(entity, keys) for entity in entities]

    def purge(self) -> int:
        """Delete expired vectors; returns how many.  Backends that expire by themselves have nothing to do."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def read(self, entity: str, keys: Keys) -> Lookup:
        return self.read_many([(entity, keys)])[0]

    def columns(self, entity: str) -> tuple[str, ...]:
        return self._known(entity).columns

    def version(self, entity: str) -> str:
        return self._known(entity).version

    def _known(self, entity: str) -> EntityMeta:
        meta = self.meta(entity)
        if meta is None:
            raise StoreError(f"no entity {entity!r} in the online store at {self.location}; materialize it first")
        return meta

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
