"""Candidate sources and filters, vectorized over a batch of requests (one request over HTTP, a day's in the loop).

Each source returns ``(request_index, catalogue row)`` pairs, at most its quota per request, of items eligible at
the request's time (created before it, younger than the surface's maximum age).  Sources read the catalogue's
indexes and the user's data; none loops over candidates in Python.

* ``affinity``: the most popular items of the user's strongest topics (user x topic affinity from the store),
  the quota split evenly over ``top_topics``;
* ``creators``: the newest items of the creators the user engaged with most recently;
* ``popular``: the most popular items overall (the ``popularity`` item feature);
* ``fresh``: the newest items;
* ``explore``: the exploration pool: items younger than ``explore_pool_hours``, a different pseudo-random
  subset every hour (a hash of the item and the hour), so every new item gets its turn; which of them are
  shown, and with what probability, is the policy's choice.
"""

from __future__ import annotations

import numpy as np

from homefeed.hashing import stable_hash
from homefeed.serve.catalog import ItemCatalogue
from homefeed.serve.stages import SOURCE_CODES, Candidates

HOUR_US = 3_600_000_000


def _eligible(cat: ItemCatalogue, rows: np.ndarray, ts: np.ndarray, max_age_us: int) -> np.ndarray:
    created = cat.created_us[np.maximum(rows, 0)]
    return (rows >= 0) & (created <= ts) & (created > ts - max_age_us)


def _first(ok: np.ndarray, quota: np.ndarray | int) -> np.ndarray:
    """Mask of the first ``quota`` True cells of each row of ``ok``."""
    rank = np.cumsum(ok, axis=1)
    limit = np.asarray(quota).reshape(-1, 1) if np.ndim(quota) else quota
    return ok & (rank <= limit)


def _from_matrix(
    cat: ItemCatalogue, owner: np.ndarray, rows: np.ndarray, ts: np.ndarray, max_age_us: int, quota: np.ndarray | int
) -> tuple[np.ndarray, np.ndarray]:
    """From per-block candidate rows (blocks x width, -1 padded) the first ``quota`` eligible of each block."""
    if rows.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ok = _eligible(cat, rows, ts[owner][:, None], max_age_us)
    take = _first(ok, quota)
    block, col = np.nonzero(take)
    return owner[block].astype(np.int64), rows[block, col].astype(np.int64)


def popular(cat: ItemCatalogue, ts: np.ndarray, quota: int, max_age_us: int) -> tuple[np.ndarray, np.ndarray]:
    by_pop = cat.index.by_popularity
    want = quota * 2 + 64
    for head in (by_pop[: want * 4], by_pop):  # the head of the list usually holds enough; else the whole of it
        created = cat.created_us[head]
        loose = head[(created <= ts.max()) & (created > ts.min() - max_age_us)][:want]
        if len(loose) == want:
            break
    owner = np.arange(len(ts), dtype=np.int64)
    return _from_matrix(cat, owner, np.broadcast_to(loose, (len(ts), len(loose))), ts, max_age_us, quota)


def fresh(cat: ItemCatalogue, ts: np.ndarray, quota: int, max_age_us: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = cat.eligible(ts, max_age_us)
    n = np.minimum(hi - lo, quota)
    ri = np.repeat(np.arange(len(ts), dtype=np.int64), n)
    back = np.arange(len(ri)) - np.repeat(np.cumsum(n) - n, n)
    return ri, (hi[ri] - 1 - back).astype(np.int64)


def affinity(
    cat: ItemCatalogue, ts: np.ndarray, topic_affinity: np.ndarray | None, top: int, quota: int, max_age_us: int
) -> tuple[np.ndarray, np.ndarray]:
    """``topic_affinity``: (requests x topics) affinity of each request's user, NaN where the store has none."""
    if topic_affinity is None or not len(cat.topics):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    scores = np.where(np.isnan(topic_affinity), -np.inf, topic_affinity)
    top = min(top, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    has = np.take_along_axis(scores, best, axis=1) > 0
    owner, col = np.nonzero(has)
    topics = best[owner, col]
    per_topic = max(1, quota // top)
    width = min(cat.index.topic_rows.shape[1], per_topic * 2 + 16)
    rows = cat.index.topic_rows[topics, :width]
    return _from_matrix(cat, owner.astype(np.int64), rows, ts, max_age_us, per_topic)


def creators(
    cat: ItemCatalogue,
    ts: np.ndarray,
    lists: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    quota: int,
    max_age_us: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``lists``: (request index, creator id, time) of each request's user's engaged creators."""
    if lists is None or not len(lists[0]) or not len(cat):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    owner, creator, _ = lists
    idx = cat.index
    per_request = np.bincount(owner, minlength=len(ts))
    each = np.maximum(1, quota // np.maximum(per_request[owner], 1))
    start = np.searchsorted(idx.creator_sorted, creator, side="left")
    stop = np.searchsorted(idx.creator_sorted, creator, side="right")
    width = int(min(int((stop - start).max(initial=0)), int(each.max(initial=1)) * 2 + 8))
    if width == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    cols = start[:, None] + np.arange(width)[None, :]
    rows = np.where(cols < stop[:, None], idx.creator_rows[np.minimum(cols, len(idx.creator_rows) - 1)], -1)
    ri, picked = _from_matrix(cat, owner, rows, ts, max_age_us, each)
    keep = _cap_per_request(ri, quota)
    return ri[keep], picked[keep]


def _cap_per_request(ri: np.ndarray, quota: int) -> np.ndarray:
    order = np.argsort(ri, kind="stable")
    sorted_ri = ri[order]
    first = np.searchsorted(sorted_ri, sorted_ri, side="left")
    keep = np.zeros(len(ri), bool)
    keep[order] = (np.arange(len(ri)) - first) < quota
    return keep


def explore_pool(
    cat: ItemCatalogue, ts: np.ndarray, quota: int, pool_hours: float, cache: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per request, the hour's pool: ``quota`` items created in the ``pool_hours`` before the hour began."""
    hour = ts // HOUR_US
    ris, rows = [], []
    for h in np.unique(hour):
        key = (int(h), cat.generation, quota, pool_hours)
        pool = cache.get(key) if cache is not None else None
        if pool is None:
            start = int(h) * HOUR_US
            lo = np.searchsorted(cat.created_us, start - int(pool_hours * HOUR_US), side="right")
            hi = np.searchsorted(cat.created_us, start, side="right")
            window = np.arange(lo, hi, dtype=np.int64)
            salt = stable_hash(np.array([h], np.int64))[0]
            order = np.argsort(stable_hash(cat.item_id[window]) ^ salt, kind="stable")
            pool = np.sort(window[order[:quota]])
            if cache is not None:
                if len(cache) > 64:
                    cache.clear()
                cache[key] = pool
        owners = np.flatnonzero(hour == h)
        ris.append(np.repeat(owners, len(pool)))
        rows.append(np.tile(pool, len(owners)))
    if not ris:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(ris).astype(np.int64), np.concatenate(rows).astype(np.int64)


def combine(found: list[tuple[str, np.ndarray, np.ndarray]], n_rows: int) -> Candidates:
    """Every source's pairs, deduplicated: an item several sources found belongs to the first (the priority)."""
    if not found:
        return Candidates.empty()
    ri = np.concatenate([f[1] for f in found])
    rows = np.concatenate([f[2] for f in found])
    source = np.concatenate([np.full(len(f[1]), SOURCE_CODES[f[0]], np.int8) for f in found])
    _, first = np.unique(ri * max(n_rows, 1) + rows, return_index=True)
    first.sort()
    keep = first[np.argsort(ri[first], kind="stable")]  # grouped by request, sources in priority order
    return Candidates(ri[keep], rows[keep], source[keep])


# --- filters --------------------------------------------------------------------------------------------------------


def listed(
    cand: Candidates,
    cat: ItemCatalogue,
    lists: tuple[np.ndarray, np.ndarray, np.ndarray],
    since: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of candidates whose item is in their request's list (entries at or after ``since[request]`` only)."""
    owner, ids, ts = lists
    if since is not None and len(owner):
        recent = ts >= since[owner]
        owner, ids = owner[recent], ids[recent]
    if not len(owner) or not len(cand):
        return np.zeros(len(cand), bool)
    rows = cat.rows(ids)
    known = rows >= 0
    n = max(len(cat), 1)
    return np.isin(cand.request_index * n + cand.row, owner[known] * n + rows[known])
