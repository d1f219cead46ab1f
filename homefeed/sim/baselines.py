"""Baseline feed policies: the "do you really need ML?" check.

Random is also the exploration policy: its propensities are exact, so its logs
are the ones to learn position bias and to evaluate other policies from.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from homefeed.feed import (
    Catalogue,
    Feedback,
    FeedPolicy,
    PolicyError,
    RequestBatch,
    SlateBatch,
    sees_hidden_state,
    slots,
)


class RandomPolicy:
    """Uniformly random items among those eligible; propensity = 1 / number eligible, per slot."""

    name = "random"

    def __init__(self, seed: int = 0, max_age_days: float = 30.0):
        self.seed = seed
        self.catalogue = Catalogue(max_age_days)
        self._batches = 0

    def observe(self, feedback: Feedback) -> None:
        self.catalogue.add(feedback.items)

    def rank(self, requests: RequestBatch) -> SlateBatch:
        rng = np.random.default_rng([self.seed, self._batches])
        self._batches += 1
        lo, hi = self.catalogue.eligible(requests.ts)
        available = hi - lo
        sizes = np.minimum(requests.slate_size, available)
        request_index, position = slots(sizes)
        lo_r, n_r = lo[request_index], available[request_index]
        offset = (rng.random(len(request_index)) * n_r).astype(np.int64)
        # Sample without replacement: redraw the rare in-slate duplicates until none remain.  Each slate is a
        # row of a matrix (padded with distinct negatives), sorted row-wise: far cheaper than one global sort.
        width = int(sizes.max(initial=0))
        grid = np.broadcast_to(-1 - np.arange(width, dtype=np.int64), (len(sizes), width)).copy()
        grid[request_index, position - 1] = offset
        bad = np.arange(len(sizes))
        while len(bad):
            ranked = np.sort(grid[bad], axis=1)
            bad = bad[(ranked[:, 1:] == ranked[:, :-1]).any(axis=1)]
            if not len(bad):
                break
            order = np.argsort(grid[bad], axis=1, kind="stable")  # mark the later copies of a repeated item
            ranked = np.take_along_axis(grid[bad], order, axis=1)
            repeat = np.zeros((len(bad), width), bool)
            np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], axis=1)
            row, col = np.nonzero(repeat)
            flat = np.searchsorted(request_index, bad[row]) + col  # rows of a request are contiguous
            offset[flat] = (rng.random(len(flat)) * n_r[flat]).astype(np.int64)
            grid[bad[row], col] = offset[flat]
        return SlateBatch(
            request_index=request_index,
            position=position,
            item_id=self.catalogue.item_id[lo_r + offset],
            propensity=1.0 / n_r.astype(np.float64),
            model_version="baseline-random",
        )


class ChronologicalPolicy:
    """Freshest eligible items first: what a feed without ranking shows."""

    name = "chronological"

    def __init__(self, max_age_days: float = 30.0):
        self.catalogue = Catalogue(max_age_days)

    def observe(self, feedback: Feedback) -> None:
        self.catalogue.add(feedback.items)

    def rank(self, requests: RequestBatch) -> SlateBatch:
        lo, hi = self.catalogue.eligible(requests.ts)
        request_index, position = slots(np.minimum(requests.slate_size, hi - lo))
        rows = hi[request_index] - position
        age_hours = (requests.ts[request_index] - self.catalogue.created_us[rows]) / 3.6e9
        return SlateBatch(
            request_index=request_index,
            position=position,
            item_id=self.catalogue.item_id[rows],
            propensity=np.ones(len(rows)),
            score=-age_hours,
            model_version="baseline-chronological",
        )


class PopularPolicy:
    """Most engaged-with eligible items first, by exponentially decayed recent engagement.

    Popularity counts saves fully, clicks by half and closeups by a tenth, and
    decays by ``decay`` per batch of feedback (a day in the simulator), so it
    follows what is popular now.  Deterministic: propensity 1.
    """

    name = "popular"
    WEIGHTS: ClassVar[dict[str, float]] = {"save": 1.0, "click": 0.5, "closeup": 0.1}

    def __init__(self, max_age_days: float = 30.0, decay: float = 0.7, pool: int = 256):
        self.catalogue = Catalogue(max_age_days)
        self.decay = decay
        self.pool = pool
        self.popularity = np.zeros(0)  # by item_id

    def observe(self, feedback: Feedback) -> None:
        self.catalogue.add(feedback.items)
        if len(self.catalogue):
            size = int(self.catalogue.item_id.max()) + 1
            if size > len(self.popularity):
                self.popularity = np.concatenate([self.popularity, np.zeros(size - len(self.popularity))])
        if feedback.engagements is None:
            return
        self.popularity *= self.decay
        engagements = feedback.engagements
        actions = engagements["action"].to_numpy(zero_copy_only=False)
        weight = np.zeros(len(actions))
        for action, w in self.WEIGHTS.items():
            weight[actions == action] = w
        items = engagements["item_id"].to_numpy()
        known = items < len(self.popularity)
        np.add.at(self.popularity, items[known], weight[known])

    def rank(self, requests: RequestBatch) -> SlateBatch:
        if len(requests) == 0:
            return SlateBatch(*(np.empty(0, t) for t in (np.int64, np.int32, np.int64, np.float64)))
        lo, hi = self.catalogue.eligible(requests.ts)
        # Scores are fixed within a batch, so one shared pool of the most popular items
        # serves every request; each request keeps the pool items eligible at its time.
        # Items published during the batch have no engagement yet and are left out.
        start, stop = int(lo.min()), int(hi.min())
        rows = np.arange(start, stop)
        score = self.popularity[self.catalogue.item_id[rows]]
        pool = rows[
            np.lexsort((-self.catalogue.created_us[rows], -score))[: self.pool + int(requests.slate_size.max())]
        ]
        # Every pool row is below hi.min(), so a request loses only the pool's oldest items, those created before
        # its lo: requests differ in how many, q, and there are few distinct q.  One slate per q, not a
        # (requests x pool) matrix.
        by_age = np.sort(pool)
        q = np.searchsorted(by_age, lo)
        distinct, group = np.unique(q, return_inverse=True)
        slate = np.zeros((len(distinct), len(pool)), np.int64)
        available = np.zeros(len(distinct), np.int64)
        for g, oldest in enumerate(distinct):
            kept = pool if oldest == 0 else pool[pool >= by_age[oldest]] if oldest < len(pool) else pool[:0]
            slate[g, : len(kept)], available[g] = kept, len(kept)
        request_index, position = slots(np.minimum(requests.slate_size, available[group]))
        chosen = slate[group[request_index], position - 1]
        return SlateBatch(
            request_index=request_index,
            position=position,
            item_id=self.catalogue.item_id[chosen],
            propensity=np.ones(len(chosen)),
            score=self.popularity[self.catalogue.item_id[chosen]],
            model_version="baseline-popular",
        )


class ExploringPolicy:
    """ε-greedy by request: with probability ε a request gets a uniformly random slate, else ``exploit``'s.

    The logged propensity is the mixture's exact marginal, P(item a in slot k) =
    (1 − ε)·P(exploit put a in k) + ε/N with N items eligible: what inverse-propensity weighting needs to
    undo the exploiting policy's choices.  Where the exploiting policy's own propensity is unknown (NaN), so is
    the mixture's.
    """

    def __init__(self, exploit: FeedPolicy, epsilon: float = 0.1, seed: int = 0, max_age_days: float = 30.0):
        if not 0.0 < epsilon <= 1.0:
            raise PolicyError(f"epsilon must be in (0, 1], got {epsilon}")
        self.exploit, self.epsilon, self.seed = exploit, epsilon, seed
        self.explore = RandomPolicy(seed=seed + 1, max_age_days=max_age_days)
        self.name = f"{exploit.name}+explore"
        self.sees_hidden_state = sees_hidden_state(exploit)
        self._batches = 0

    def observe(self, feedback: Feedback) -> None:
        self.exploit.observe(feedback)
        self.explore.observe(feedback)

    def rank(self, requests: RequestBatch) -> SlateBatch:
        greedy, uniform = self.exploit.rank(requests), self.explore.rank(requests)
        rng = np.random.default_rng([self.seed, 7, self._batches])
        self._batches += 1
        explored = rng.random(len(requests)) < self.epsilon
        one_over_n = np.zeros(len(requests))
        one_over_n[uniform.request_index] = uniform.propensity
        # Did the greedy slate put the randomly drawn item in the same slot?  Then both branches chose it.
        g_key = greedy.request_index * 1024 + greedy.position
        order = np.argsort(g_key, kind="stable")
        u_key = uniform.request_index * 1024 + uniform.position
        same = np.zeros(len(u_key), bool)
        p_same = np.zeros(len(u_key))
        if len(order):
            at = np.minimum(np.searchsorted(g_key[order], u_key), len(order) - 1)
            same = (g_key[order][at] == u_key) & (greedy.item_id[order][at] == uniform.item_id)
            p_same = np.where(same, greedy.propensity[order][at], 0.0)
        keep_g, keep_u = ~explored[greedy.request_index], explored[uniform.request_index]
        eps = self.epsilon
        request_index = np.concatenate([greedy.request_index[keep_g], uniform.request_index[keep_u]])
        position = np.concatenate([greedy.position[keep_g], uniform.position[keep_u]])
        item_id = np.concatenate([greedy.item_id[keep_g], uniform.item_id[keep_u]])
        propensity = np.concatenate(
            [
                (1 - eps) * greedy.propensity[keep_g] + eps * one_over_n[greedy.request_index[keep_g]],
                eps * uniform.propensity[keep_u] + (1 - eps) * p_same[keep_u],
            ]
        )
        ordered = np.lexsort((position, request_index))
        return SlateBatch(
            request_index=request_index[ordered],
            position=position[ordered],
            item_id=item_id[ordered],
            propensity=propensity[ordered],
            model_version=f"baseline-{self.name}",
        )


class TopicCap:
    """At most ``max_per_topic`` items of one topic per slate: diversity as an explicit policy stage.

    Asks ``inner`` for a list ``depth`` times longer and keeps, in its order, the items whose topic has not
    reached the cap (topics from the logged items, as any policy knows them).  Propensities stay the inner
    policy's where it is deterministic (every propensity 1), else they are unknown (NaN).
    """

    def __init__(self, inner: FeedPolicy, max_per_topic: int = 3, depth: int = 4):
        if max_per_topic < 1 or depth < 1:
            raise PolicyError(f"topic cap: max_per_topic and depth must be >= 1, got {max_per_topic}, {depth}")
        self.inner, self.max_per_topic, self.depth = inner, max_per_topic, depth
        self.name = f"{inner.name}+cap{max_per_topic}"
        self.sees_hidden_state = sees_hidden_state(inner)
        self.topic = np.zeros(0, np.int32)  # by item_id
        self._codes: dict[str, int] = {}

    def observe(self, feedback: Feedback) -> None:
        self.inner.observe(feedback)
        items = feedback.items
        if items is None or items.num_rows == 0:
            return
        ids = items["item_id"].to_numpy()
        names = items["topic"].to_numpy(zero_copy_only=False)
        uniques, inverse = np.unique(names.astype(str), return_inverse=True)
        codes = np.array([self._codes.setdefault(u, len(self._codes)) for u in uniques], np.int32)
        if int(ids.max()) >= len(self.topic):
            self.topic = np.concatenate([self.topic, np.full(int(ids.max()) + 1 - len(self.topic), -1, np.int32)])
        self.topic[ids] = codes[inverse]

    def rank(self, requests: RequestBatch) -> SlateBatch:
        wide = RequestBatch(
            requests.request_id, requests.user_id, requests.ts, requests.slate_size * self.depth,
            requests.country, requests.surface, requests.context_features,
        )  # fmt: skip
        pool = self.inner.rank(wide)
        topic = self.topic[pool.item_id].astype(np.int64)
        # The rank of each row among the earlier rows of its request with the same topic.
        key = pool.request_index * (len(self._codes) + 2) + (topic + 1)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        first = np.searchsorted(sorted_key, sorted_key, side="left")
        seen = np.empty(len(key), np.int64)
        seen[order] = np.arange(len(key)) - first
        allowed = (seen < self.max_per_topic) | (topic < 0)
        kept = np.flatnonzero(allowed)
        ri = pool.request_index[kept]
        rank = np.arange(len(kept)) - np.searchsorted(ri, ri, side="left")
        keep = rank < requests.slate_size[ri]
        rows = kept[keep]
        deterministic = bool(np.all(pool.propensity == 1.0))
        return SlateBatch(
            request_index=pool.request_index[rows],
            position=(rank[keep] + 1).astype(np.int32),
            item_id=pool.item_id[rows],
            propensity=np.ones(len(rows)) if deterministic else np.full(len(rows), np.nan),
            score=None if pool.score is None else pool.score[rows],
            model_version=pool.model_versions().take(pa.array(rows)),
        )


BASELINES = ("random", "popular", "chronological")
#: Popular with a fifth of requests served at random: logs with varied, exact propensities (not in the demo's table).
EXPLORING = "popular+explore"


def explore_policy(seed: int = 0, max_age_days: float = 30.0) -> RandomPolicy:
    """What serves the explore surface in the demo, its served fork and the world card: uniform random (exact
    propensities for training and OPE), seeded apart from the home policy's.  One place, so a fork replays it."""
    return RandomPolicy(seed=seed + 1, max_age_days=max_age_days)


def make_baseline(name: str, seed: int = 0, max_age_days: float = 30.0):  # noqa: ANN201 - one of the classes above
    """A baseline policy by name; an unknown name is an error listing the choices."""
    if name == "random":
        return RandomPolicy(seed=seed, max_age_days=max_age_days)
    if name == "popular":
        return PopularPolicy(max_age_days=max_age_days)
    if name == "chronological":
        return ChronologicalPolicy(max_age_days=max_age_days)
    if name == EXPLORING:
        return ExploringPolicy(
            PopularPolicy(max_age_days=max_age_days), epsilon=0.2, seed=seed, max_age_days=max_age_days
        )
    raise PolicyError(f"unknown policy {name!r}; choose one of: {', '.join((*BASELINES, EXPLORING))}")
