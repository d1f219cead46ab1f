"""What the world remembers about (user, item) pairs, in a NumPy hash table.

Why our own: every batch looks up and inserts hundreds of thousands of pairs, and a Python dict would be a
loop per impression; a sorted array (binary search plus ``np.insert``) costs O(log n) cache misses per lookup
and a full copy per insert; pandas' hash index would be rebuilt on every change.  Open addressing over int64
keys with linear probing answers a whole batch in one or two vectorized probes and inserts in place.  Each
key sits beside its int64 value in one row, so the probe that finds a key has already fetched its value.
"""

from __future__ import annotations

import numpy as np

EMPTY = np.int64(-1)
#: Keys a rebuild places per step (8 MiB of int64): below glibc's 32 MiB threshold for mapping fresh memory.
_BLOCK = 1 << 20
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def pair_key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One int64 key for each (a, b), both non-negative and below 2**31."""
    return (np.asarray(a).astype(np.int64) << np.int64(32)) | np.asarray(b).astype(np.int64)


class PairTable:
    """int64 keys → one int64 value each, growing as keys are added.

    :meth:`find` gives each key's slot (-1 if absent), :meth:`slots` adds the absent ones (value 0);
    values are read and written through :attr:`values` (a view of the value column).
    """

    def __init__(self, capacity: int = 1 << 12):
        self._allocate(max(int(capacity), 16))

    def _allocate(self, capacity: int) -> None:
        bits = int(np.ceil(np.log2(capacity)))
        self._shift = np.uint64(64 - bits)
        self._mask = (1 << bits) - 1
        self._rows = np.zeros((1 << bits, 2), np.int64)
        self._rows[:, 0] = EMPTY
        self.size = 0

    @property
    def keys(self) -> np.ndarray:
        return self._rows[:, 0]

    @property
    def values(self) -> np.ndarray:
        return self._rows[:, 1]

    def __len__(self) -> int:
        return self.size

    @property
    def capacity(self) -> int:
        return len(self._rows)

    def nbytes(self) -> int:
        return self._rows.nbytes

    def _home(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((keys.astype(np.uint64) * _GOLDEN) >> self._shift).astype(np.int64)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The slot of each key, -1 where absent."""
        keys = np.asarray(keys, np.int64)
        out = np.full(len(keys), -1, np.int64)
        pending = np.arange(len(keys))
        slot = self._home(keys)
        table = self.keys
        while len(pending):
            at = table[slot]
            hit = at == keys[pending]
            out[pending[hit]] = slot[hit]
            more = ~hit & (at != EMPTY)
            pending, slot = pending[more], (slot[more] + 1) & self._mask
        return out

    def slots(self, keys: np.ndarray, distinct: bool = False, found: np.ndarray | None = None) -> np.ndarray:
        """The slot of each key, inserting (with value 0) those not yet present.

        ``distinct``: the caller promises no key repeats, which saves deduplicating the new ones.  ``found``:
        what :meth:`find` gave for these keys, if nothing was added or removed since (saves probing again).
        """
        keys = np.asarray(keys, np.int64)
        found = self.find(keys) if found is None else np.array(found, np.int64)
        absent = found < 0
        if absent.any():
            if distinct:
                new, inverse = keys[absent], None
            else:
                new, inverse = np.unique(keys[absent], return_inverse=True)
            if 2 * (self.size + len(new)) > self.capacity:
                self._grow(self.size + len(new))
                found = self.find(keys)  # the slots found before moved
            placed = self._insert(new)
            found[absent] = placed if inverse is None else placed[inverse]
        return found

    def _insert(self, keys: np.ndarray) -> np.ndarray:
        """Place distinct keys known to be absent; returns their slots."""
        out = np.empty(len(keys), np.int64)
        pending = np.arange(len(keys))
        slot = self._home(keys)
        table = self.keys
        while len(pending):
            free = table[slot] == EMPTY
            # Several keys may want the same free slot: write them all, and the one that stuck has it.
            table[slot[free]] = keys[pending[free]]
            won = free & (table[slot] == keys[pending])
            out[pending[won]] = slot[won]
            slot = np.where(free, slot, (slot + 1) & self._mask)  # losers look at their slot again, now taken
            pending, slot = pending[~won], slot[~won]
        self.size += len(keys)
        return out

    def _grow(self, needed: int) -> None:
        """At least double: a table of a week of 100k users' impressions ends 268 MB, not 537 MB (growing 4x),
        for one more rehash; on the benchmark the CPU time is the same (fresh pages cost the kernel as much)."""
        live = self._rows[self.keys != EMPTY]
        self._allocate(max(2 * needed, 2 * self.capacity))
        self._restore(live)

    def _restore(self, live: np.ndarray) -> None:
        """Place the (distinct) rows of a rebuilt table at once.  Taken in the order of their homes, linear
        probing puts each key at the first free slot from its home: max(its home, the previous key's place + 1),
        a running maximum, no probing.  Done in blocks: a temporary over 32 MiB is fresh memory from the kernel
        at every use (glibc maps it), which costs more than the arithmetic.  Keys pushed past the end wrap around
        and are inserted the usual way; they are few."""
        keys = live[:, 0]
        order = np.argsort(self._home(keys), kind="stable")  # the old table's order is nearly sorted: a few runs
        last, wrapped = -1, []
        for start in range(0, len(order), _BLOCK):
            rows = order[start : start + _BLOCK]
            step = np.arange(len(rows))
            place = np.maximum(np.maximum.accumulate(self._home(keys[rows]) - step), last + 1) + step
            fits = place < self.capacity
            self.keys[place[fits]] = keys[rows[fits]]
            self.values[place[fits]] = live[rows[fits], 1]
            self.size += int(np.count_nonzero(fits))
            last = int(place[-1])
            wrapped.append(rows[~fits])
        wrapped = np.concatenate(wrapped) if wrapped else np.empty(0, np.int64)
        if len(wrapped):
            self.values[self._insert(keys[wrapped])] = live[wrapped, 1]

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the entries whose slot is set in ``mask`` (a boolean array over slots); rebuilds the table."""
        live = self._rows[(self.keys != EMPTY) & mask]
        self._allocate(max(4 * len(live), 1 << 12))
        self._restore(live)
