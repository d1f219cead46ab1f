"""The items the service can serve, held in memory as columns, with the indexes the candidate sources read.

Candidate generation must be cheap per request, so everything a source needs is sorted once per refresh
(popularity overall and within each topic, each creator's items by age) and a request only slices and checks
eligibility (created before the request, younger than the surface's maximum age).  Items arrive from the lake's
``items`` table (the service) or from :class:`homefeed.feed.Feedback` (the simulator); the safety label is kept
apart from everything the ranker reads: it filters, never ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.features.cache import ItemCache


@dataclass(frozen=True)
class _Index:
    by_popularity: np.ndarray  # catalogue rows, most popular first
    topic_rows: np.ndarray  # (topics, width) rows of each topic, most popular first, -1 padded
    creator_sorted: np.ndarray  # creator id of each row in ``creator_rows``' order
    creator_rows: np.ndarray  # rows sorted by creator, then newest first


class ItemCatalogue:
    """Item columns in creation order (row = position), growing as items arrive; indexes rebuilt on change."""

    def __init__(self) -> None:
        self.item_id = np.empty(0, np.int64)
        self.created_us = np.empty(0, np.int64)
        self.creator_id = np.empty(0, np.int64)
        self.topic = np.empty(0, np.int32)  # code into ``topics``; -1: no topic
        self.unsafe = np.empty(0, bool)
        self.topics: list[str] = []
        self.popularity = np.empty(0, np.float64)
        self._by_id = np.empty(0, np.int64)  # rows ordered by item_id, for lookups
        self._sorted_ids = np.empty(0, np.int64)  # item_id[_by_id], kept: every request looks ids up
        self._index: _Index | None = None
        self.generation = 0  # bumped by every change: what per-request caches key on

    def __len__(self) -> int:
        return len(self.item_id)

    def add(self, items: pa.Table | None) -> int:
        """Add (or update) items from a canonical ``items`` table; returns how many were new."""
        if items is None or items.num_rows == 0:
            return 0
        ids = items["item_id"].to_numpy()
        new = ~np.isin(ids, self.item_id) if len(self.item_id) else np.ones(len(ids), bool)
        items = items.filter(pa.array(new)) if not new.all() else items
        if items.num_rows == 0:
            return 0
        topic_col = pc.fill_null(items["topic"], "").to_numpy(zero_copy_only=False)
        known = {t: i for i, t in enumerate(self.topics)}
        for t in np.unique(topic_col):
            if t and t not in known:
                known[t] = len(self.topics)
                self.topics.append(str(t))
        codes = np.array([known.get(t, -1) if t else -1 for t in topic_col.tolist()], np.int32)
        unsafe = pc.not_equal(pc.fill_null(items["safety_label"], "unknown"), "safe")
        self.item_id = np.concatenate([self.item_id, items["item_id"].to_numpy()])
        self.created_us = np.concatenate([self.created_us, items["created_at"].cast(pa.int64()).to_numpy()])
        self.creator_id = np.concatenate([self.creator_id, items["creator_id"].to_numpy()])
        self.topic = np.concatenate([self.topic, codes])
        self.unsafe = np.concatenate([self.unsafe, unsafe.to_numpy(zero_copy_only=False)])
        self.popularity = np.concatenate([self.popularity, np.zeros(items.num_rows)])
        order = np.argsort(self.created_us, kind="stable")
        for name in ("item_id", "created_us", "creator_id", "topic", "unsafe", "popularity"):
            setattr(self, name, getattr(self, name)[order])
        self._changed()
        return int(items.num_rows)

    def prune(self, before_us: int) -> int:
        """Forget items created before ``before_us`` (older than any surface serves); returns how many."""
        keep = self.created_us >= before_us
        gone = int((~keep).sum())
        if gone:
            for name in ("item_id", "created_us", "creator_id", "topic", "unsafe", "popularity"):
                setattr(self, name, getattr(self, name)[keep])
            self._changed()
        return gone

    def set_popularity(self, cache: ItemCache, column: str) -> None:
        """Popularity of every item: the item cache's ``column`` (0 for items it does not hold yet)."""
        found = cache.lookup(self.item_id)
        values = found.column(column).astype(np.float64)
        self.popularity = np.where(found.found & ~np.isnan(values), values, 0.0)
        self._changed()

    def _changed(self) -> None:
        by_id = np.argsort(self.item_id, kind="stable")
        self._by_id, self._sorted_ids = by_id, self.item_id[by_id]
        self._index = None
        self.generation += 1

    def rows(self, item_id: np.ndarray) -> np.ndarray:
        """Catalogue rows of ``item_id`` (-1 for unknown items)."""
        item_id = np.asarray(item_id, np.int64)
        if not len(self.item_id):
            return np.full(len(item_id), -1, np.int64)
        by_id, ids = self._by_id, self._sorted_ids
        pos = np.minimum(np.searchsorted(ids, item_id), len(ids) - 1)
        return np.where(ids[pos] == item_id, by_id[pos], -1)

    def eligible(self, ts: np.ndarray, max_age_us: int) -> tuple[np.ndarray, np.ndarray]:
        """Per request, the [lo, hi) rows created in the ``max_age_us`` up to ``ts``."""
        lo = np.searchsorted(self.created_us, ts - max_age_us, side="right")
        hi = np.searchsorted(self.created_us, ts, side="right")
        return lo, hi

    @property
    def index(self) -> _Index:
        if self._index is None:
            self._index = self._build()
        return self._index

    def _build(self) -> _Index:
        by_pop = np.lexsort((-self.created_us, -self.popularity))  # ties: newest first
        t = self.topic[by_pop]
        n_topics = max(len(self.topics), 1)
        counts = np.bincount(t[t >= 0], minlength=n_topics)
        topic_rows = np.full((n_topics, int(counts.max(initial=0))), -1, np.int64)
        for code in range(len(self.topics)):
            rows = by_pop[t == code]
            topic_rows[code, : len(rows)] = rows
        creator_rows = np.lexsort((-self.created_us, self.creator_id))
        return _Index(by_pop, topic_rows, self.creator_id[creator_rows], creator_rows)
