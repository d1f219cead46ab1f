"""The policy: from scored candidates to slates, with product choices as explicit, configured steps.

1. **Freshness boost**: ``score + boost · 0.5^(age / half-life)``, so new items get a look before they have
   engagement to show.
2. **Caps**: the exploitation order ``R`` is built greedily, each slot taking the best remaining candidate that
   keeps every run of ``window`` consecutive slots within ``per_creator`` items of one creator and
   ``per_topic`` of one topic.  Inserting other items between those of ``R`` can only spread them further
   apart, so the caps still hold once exploration slots are added.
3. **Exploration**: from ``explore_from`` on, each slot explores with probability ``explore_rate`` (while the
   pool lasts) and takes an item of the exploration pool; otherwise it takes the next item of ``R``.  The pool
   keeps only items whose topic and creator ``R``'s slate does not show, one bucket per topic (a creator's items
   all in one bucket); an exploration slot draws a bucket uniformly without replacement, then an item of it
   uniformly.  Each exploration item therefore shows one topic and one creator once: the caps hold for them too.

Every logged propensity is the exact probability that this item is in this slot for this request, computed by
a small dynamic programme over (slot, exploration slots so far), not estimated: for the ``m``-th item of ``R``
in slot ``k``, P(k−1−m explorations before slot k) · P(slot k exploits); for a pool item of bucket ``t``,
P(slot k explores) / (N buckets · n_t items in its bucket).  A test compares them with empirical frequencies.
The slate ends when ``R`` runs out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from homefeed.config.serving import Surface
from homefeed.serve.catalog import ItemCatalogue
from homefeed.serve.stages import SOURCE_CODES, Candidates

HOUR_US = 3_600_000_000
EXPLORE = SOURCE_CODES["explore"]


@dataclass
class Slates:
    """The policy's output, one row per slot, rows of a request contiguous and in slot order."""

    request_index: np.ndarray  # int64
    position: np.ndarray  # int32, 1-based
    candidate: np.ndarray  # int64 index into the candidates the policy was given
    propensity: np.ndarray  # float64, exact
    score: np.ndarray  # float64: the model's score plus the freshness boost
    explored: np.ndarray  # bool: an exploration slot

    def __len__(self) -> int:
        return len(self.candidate)


def boosted(score: np.ndarray, created_us: np.ndarray, ts: np.ndarray, surface: Surface) -> np.ndarray:
    if surface.freshness_boost == 0:
        return score.astype(np.float64)
    age_h = np.maximum(ts - created_us, 0) / HOUR_US
    return score + surface.freshness_boost * np.power(0.5, age_h / surface.freshness_half_life_hours)


def _padded(ri: np.ndarray, order: np.ndarray, n_requests: int, width: int) -> np.ndarray:
    """(requests x width) matrix of candidate indices (``order`` groups them by request, best first), -1 padded."""
    sorted_ri = ri[order]
    first = np.searchsorted(sorted_ri, np.arange(n_requests))
    rank = np.arange(len(order)) - first[sorted_ri]
    keep = rank < width
    out = np.full((n_requests, width), -1, np.int64)
    out[sorted_ri[keep], rank[keep]] = order[keep]
    return out


def capped_order(
    matrix: np.ndarray, creator: np.ndarray, topic: np.ndarray, sizes: np.ndarray, surface: Surface
) -> np.ndarray:
    """Greedy capped order: per request, up to ``sizes`` candidate indices (-1 past the end), slot by slot.

    Each slot takes the best unused candidate whose creator and topic are under their caps among the previous
    ``window - 1`` slots.  Counts are kept per (request, creator) and (request, topic) code, so a slot costs one
    gather over the candidates, not a comparison with the window.
    """
    b, width = matrix.shape
    steps = int(sizes.max(initial=0))
    out = np.full((b, steps), -1, np.int64)
    if b == 0 or width == 0 or steps == 0:
        return out
    if b == 1:
        return _capped_order_one(matrix[0], creator, topic, steps, surface)
    caps = surface.caps
    used = matrix < 0
    safe = np.maximum(matrix, 0)
    owner = np.arange(b, dtype=np.int64)[:, None]
    # per-request codes: a creator (or topic) of one request never shares a counter with another request's
    _, ccode = np.unique(owner * (int(creator.max(initial=0)) + 1) + creator[safe], return_inverse=True)
    ccode = ccode.reshape(b, width)
    n_topics = int(topic.max(initial=0)) + 1
    cand_topic = topic[safe]
    tcode = np.where(cand_topic >= 0, owner * n_topics + cand_topic, -1)
    ccount = np.zeros(int(ccode.max(initial=0)) + 1, np.int64)
    tcount = np.zeros(b * n_topics, np.int64)
    recent = max(caps.window - 1, 0)
    ring_c = np.full((b, max(recent, 1)), -1, np.int64)
    ring_t = np.full((b, max(recent, 1)), -1, np.int64)
    alive = sizes > 0
    rows_all = np.arange(b)
    for k in range(steps):
        ok = ~used
        if recent and caps.per_creator:
            ok &= ccount[ccode] < caps.per_creator
        if recent and caps.per_topic:
            ok &= (tcode < 0) | (tcount[np.maximum(tcode, 0)] < caps.per_topic)
        alive &= ok.any(axis=1) & (k < sizes)
        rows = rows_all[alive]
        if not len(rows):
            break
        pick = np.argmax(ok[rows], axis=1)
        out[rows, k] = matrix[rows, pick]
        used[rows, pick] = True
        if recent:
            slot = k % recent
            leaving_c, leaving_t = ring_c[rows, slot], ring_t[rows, slot]
            ccount[leaving_c[leaving_c >= 0]] -= 1
            tcount[leaving_t[leaving_t >= 0]] -= 1
            new_c, new_t = ccode[rows, pick], tcode[rows, pick]
            ccount[new_c] += 1
            tcount[new_t[new_t >= 0]] += 1
            ring_c[rows, slot], ring_t[rows, slot] = new_c, new_t
    return out


def _capped_order_one(
    candidates: np.ndarray, creator: np.ndarray, topic: np.ndarray, steps: int, surface: Surface
) -> np.ndarray:
    """`capped_order` for one request (a service call): the same greedy walk over Python ints, no NumPy per slot.

    Why a second form: per slot the batch form runs a dozen NumPy calls, ~5 µs each whatever the batch size, so
    one request paid milliseconds for what is microseconds of work.  A test checks both give the same order.
    """
    caps = surface.caps
    recent = max(caps.window - 1, 0)
    cands = [c for c in candidates.tolist() if c >= 0]
    creators = creator[np.asarray(cands, np.int64)].tolist() if cands else []
    topics = topic[np.asarray(cands, np.int64)].tolist() if cands else []
    per_creator = caps.per_creator if recent else 0
    per_topic = caps.per_topic if recent else 0
    count_c: dict[int, int] = {}
    count_t: dict[int, int] = {}
    window: list[tuple[int, int]] = []
    remaining = list(range(len(cands)))
    out = np.full((1, steps), -1, np.int64)
    for k in range(steps):
        pick = -1
        for pos, i in enumerate(remaining):
            if per_creator and count_c.get(creators[i], 0) >= per_creator:
                continue
            if per_topic and topics[i] >= 0 and count_t.get(topics[i], 0) >= per_topic:
                continue
            pick = pos
            break
        if pick < 0:
            break
        i = remaining.pop(pick)
        out[0, k] = cands[i]
        if recent:
            if len(window) == recent:
                old_c, old_t = window.pop(0)
                count_c[old_c] -= 1
                if old_t >= 0:
                    count_t[old_t] -= 1
            window.append((creators[i], topics[i]))
            count_c[creators[i]] = count_c.get(creators[i], 0) + 1
            if topics[i] >= 0:
                count_t[topics[i]] = count_t.get(topics[i], 0) + 1
    return out


def arrange(
    cands: Candidates,
    score: np.ndarray,
    ts: np.ndarray,
    sizes: np.ndarray,
    cat: ItemCatalogue,
    surface: Surface,
    rng: np.random.Generator,
) -> Slates:
    """Slates for a batch: boosted, capped, with exploration slots and exact propensities."""
    request_index, row, source = cands.request_index, cands.row, cands.source
    n_req = len(sizes)
    sizes = np.asarray(sizes, np.int64)
    adjusted = boosted(score, cat.created_us[row], ts[request_index], surface)
    creator, topic = cat.creator_id[row], cat.topic[row].astype(np.int64)
    pool = source == EXPLORE
    exploit = np.flatnonzero(~pool)
    # --- R: the capped exploitation order
    order = exploit[np.lexsort((-adjusted[exploit], request_index[exploit]))]
    width = int(np.bincount(request_index[exploit], minlength=n_req).max(initial=0))
    matrix = _padded(request_index, order, n_req, width)
    r = capped_order(matrix, creator, topic, sizes, surface)
    len_r = (r >= 0).sum(axis=1)
    # --- the exploration buckets: pool items whose topic and creator R's slate does not show
    buckets = _buckets(np.flatnonzero(pool), request_index, creator, topic, r, n_req, surface, rng)
    return _draw(r, len_r, buckets, sizes, surface, rng, adjusted)


@dataclass
class _Buckets:
    n: np.ndarray  # (requests,) buckets per request
    item: np.ndarray  # (requests, max buckets) the candidate a bucket offers, in random draw order, -1 padded
    size: np.ndarray  # (requests, max buckets) items in that bucket


def _buckets(
    pool: np.ndarray,
    request_index: np.ndarray,
    creator: np.ndarray,
    topic: np.ndarray,
    r: np.ndarray,
    n_req: int,
    surface: Surface,
    rng: np.random.Generator,
) -> _Buckets:
    empty = _Buckets(np.zeros(n_req, np.int64), np.full((n_req, 0), -1, np.int64), np.zeros((n_req, 0), np.int64))
    if surface.explore_rate == 0 or not len(pool):
        return empty
    shown = r[r >= 0]
    shown_ri = np.nonzero(r >= 0)[0]
    ri = request_index[pool]
    # creators and topics as compact codes, so (request, code) pairs are one int64 each
    creator_codes, cc = np.unique(np.concatenate([creator[shown], creator[pool]]), return_inverse=True)
    n_c, n_t = len(creator_codes) + 1, int(topic.max(initial=0)) + 2
    shown_creator, pool_creator = cc[: len(shown)], cc[len(shown) :]
    ok = ~np.isin(ri * n_c + pool_creator, shown_ri * n_c + shown_creator)
    ok &= ~np.isin(ri * n_t + topic[pool] + 1, shown_ri * n_t + topic[shown] + 1)
    pool, ri, pool_creator = pool[ok], ri[ok], pool_creator[ok]
    if not len(pool):
        return empty
    # a creator's items all go to the bucket of its first pool item (lowest candidate index)
    creator_key = ri * n_c + pool_creator
    first = np.full(len(pool), -1, np.int64)
    uniq, inv = np.unique(creator_key, return_inverse=True)
    first_index = np.full(len(uniq), np.iinfo(np.int64).max)
    np.minimum.at(first_index, inv, np.arange(len(pool)))
    first = pool[first_index[inv]]
    keep = topic[pool] == topic[first]
    pool, ri = pool[keep], ri[keep]
    bucket_key = ri * n_t + topic[pool] + 1
    keys, inv, counts = np.unique(bucket_key, return_inverse=True, return_counts=True)
    # one uniformly random item per bucket: the one with the smallest random key
    u = rng.random(len(pool))
    order = np.lexsort((u, inv))
    starts = np.searchsorted(inv[order], np.arange(len(keys)))
    offered = pool[order[starts]]
    bucket_ri = keys // n_t
    # buckets of a request in uniformly random order: the draw order without replacement
    v = rng.random(len(keys))
    border = np.lexsort((v, bucket_ri))
    n = np.bincount(bucket_ri, minlength=n_req)
    width = int(n.max(initial=0))
    rank = np.arange(len(keys)) - np.searchsorted(bucket_ri[border], bucket_ri[border])
    item = np.full((n_req, width), -1, np.int64)
    size = np.zeros((n_req, width), np.int64)
    item[bucket_ri[border], rank] = offered[border]
    size[bucket_ri[border], rank] = counts[border]
    return _Buckets(n, item, size)


def _draw(
    r: np.ndarray,
    len_r: np.ndarray,
    buckets: _Buckets,
    sizes: np.ndarray,
    surface: Surface,
    rng: np.random.Generator,
    adjusted: np.ndarray,
) -> Slates:
    n_req, steps = r.shape
    eps, start = surface.explore_rate, surface.explore_from
    if n_req == 1:
        return _draw_one(r, len_r, buckets, sizes, surface, rng, adjusted)
    n_max = int(buckets.n.max(initial=0))
    j_axis = np.arange(n_max + 1)
    prob = np.zeros((n_req, n_max + 1))
    prob[:, 0] = 1.0
    m = np.zeros(n_req, np.int64)
    j = np.zeros(n_req, np.int64)
    alive = np.ones(n_req, bool)
    coins = rng.random((n_req, steps))
    out_ri, out_pos, out_cand, out_p, out_explore = [], [], [], [], []
    for k in range(1, steps + 1):
        # exact distribution of the explorations so far, among the requests' possible histories
        m_of_j = k - 1 - j_axis[None, :]
        prob = np.where((m_of_j >= 0) & (m_of_j < len_r[:, None]), prob, 0.0)
        can = (k >= start) & (j_axis[None, :] < buckets.n[:, None])
        e = np.where(can, eps, 0.0)
        p_exploit = prob * (1 - e)
        p_explore = (prob * e).sum(axis=1)
        # the realized slot
        alive &= (m < len_r) & (k <= sizes)
        explore = alive & (k >= start) & (j < buckets.n) & (coins[:, k - 1] < eps)
        exploit = alive & ~explore
        rows = np.flatnonzero(exploit)
        if len(rows):
            out_ri.append(rows)
            out_pos.append(np.full(len(rows), k, np.int32))
            out_cand.append(r[rows, m[rows]])
            out_p.append(p_exploit[rows, k - 1 - m[rows]])
            out_explore.append(np.zeros(len(rows), bool))
            m[rows] += 1
        rows = np.flatnonzero(explore)
        if len(rows):
            out_ri.append(rows)
            out_pos.append(np.full(len(rows), k, np.int32))
            out_cand.append(buckets.item[rows, j[rows]])
            out_p.append(p_explore[rows] / (buckets.n[rows] * buckets.size[rows, j[rows]]))
            out_explore.append(np.ones(len(rows), bool))
            j[rows] += 1
        shifted = np.zeros_like(prob)
        shifted[:, 1:] = (prob * e)[:, :-1]
        prob = p_exploit + shifted
        if not alive.any():
            break
    if not out_ri:
        z = np.empty(0, np.int64)
        return Slates(z, z.astype(np.int32), z, z.astype(np.float64), z.astype(np.float64), z.astype(bool))
    ri = np.concatenate(out_ri)
    order = np.lexsort((np.concatenate(out_pos), ri))
    cand = np.concatenate(out_cand)[order]
    return Slates(
        ri[order],
        np.concatenate(out_pos)[order],
        cand,
        np.concatenate(out_p)[order],
        adjusted[cand],
        np.concatenate(out_explore)[order],
    )


def _draw_one(
    r: np.ndarray,
    len_r: np.ndarray,
    buckets: _Buckets,
    sizes: np.ndarray,
    surface: Surface,
    rng: np.random.Generator,
    adjusted: np.ndarray,
) -> Slates:
    """`_draw` for one request, in Python floats (same draws from ``rng``, same numbers; see `_capped_order_one`)."""
    steps = r.shape[1]
    eps, start = surface.explore_rate, surface.explore_from
    n, length, size = int(buckets.n[0]), int(len_r[0]), int(sizes[0])
    coins = rng.random((1, steps))[0].tolist()
    ranked = r[0].tolist()
    offered, bucket_size = buckets.item[0].tolist(), buckets.size[0].tolist()
    prob = [1.0] + [0.0] * n
    m = j = 0
    pos, cand, p_out, explored = [], [], [], []
    for k in range(1, steps + 1):
        for jj in range(n + 1):
            mm = k - 1 - jj
            if mm < 0 or mm >= length:
                prob[jj] = 0.0
        e = [eps if (k >= start and jj < n) else 0.0 for jj in range(n + 1)]
        p_explore = sum(prob[jj] * e[jj] for jj in range(n + 1))
        if m >= length or k > size:
            break
        if k >= start and j < n and coins[k - 1] < eps:
            pos.append(k)
            cand.append(offered[j])
            p_out.append(p_explore / (n * bucket_size[j]))
            explored.append(True)
            j += 1
        else:
            pos.append(k)
            cand.append(ranked[m])
            p_out.append(prob[k - 1 - m] * (1 - e[k - 1 - m]))
            explored.append(False)
            m += 1
        moved = [prob[jj] * e[jj] for jj in range(n + 1)]
        prob = [prob[jj] * (1 - e[jj]) + (moved[jj - 1] if jj else 0.0) for jj in range(n + 1)]
    c = np.array(cand, np.int64)
    return Slates(
        np.zeros(len(c), np.int64),
        np.array(pos, np.int32),
        c,
        np.array(p_out, np.float64),
        adjusted[c] if len(c) else np.empty(0, np.float64),
        np.array(explored, bool),
    )
