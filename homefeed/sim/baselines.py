"""Baseline feed policies: the "do you really need ML?" check.

Random is also the exploration policy: its propensities are exact, so its logs
are the ones to learn position bias and to evaluate other policies from.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from homefeed.feed import Catalogue, Feedback, PolicyError, RequestBatch, SlateBatch, slots


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
        # Sample without replacement: redraw the rare in-slate duplicates until none remain.
        while True:
            key = request_index * (int(n_r.max(initial=1)) + 1) + offset
            order = np.argsort(key, kind="stable")
            dup = np.zeros(len(key), dtype=bool)
            dup[order[1:]] = key[order[1:]] == key[order[:-1]]
            if not dup.any():
                break
            offset[dup] = (rng.random(int(dup.sum())) * n_r[dup]).astype(np.int64)
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
        ok = (pool[None, :] >= lo[:, None]) & (pool[None, :] < hi[:, None])
        rank_in_pool = np.cumsum(ok, axis=1)
        take = ok & (rank_in_pool <= requests.slate_size[:, None])
        request_index, column = np.nonzero(take)
        chosen = pool[column]
        position = rank_in_pool[request_index, column].astype(np.int32)
        return SlateBatch(
            request_index=request_index.astype(np.int64),
            position=position,
            item_id=self.catalogue.item_id[chosen],
            propensity=np.ones(len(chosen)),
            score=self.popularity[self.catalogue.item_id[chosen]],
            model_version="baseline-popular",
        )


class ExploringPolicy:
    """ε-greedy by request: with probability ε a request gets a uniformly random slate, else ``exploit``'s.

    The logged propensity is the mixture's exact marginal, P(item a in slot k) =
    (1 − ε)·[exploit put a in k] + ε/N with N items eligible: what inverse-propensity
    weighting needs to undo the exploiting policy's choices (its own rows are
    logged with propensity 1 by a deterministic ranker, which leaves nothing to reweight).
    """

    def __init__(self, exploit: PopularPolicy | ChronologicalPolicy, epsilon: float = 0.1, seed: int = 0):
        if not 0.0 < epsilon <= 1.0:
            raise PolicyError(f"epsilon must be in (0, 1], got {epsilon}")
        self.exploit, self.epsilon, self.seed = exploit, epsilon, seed
        self.explore = RandomPolicy(seed=seed + 1, max_age_days=exploit.catalogue.max_age_us / 86_400_000_000)
        self.name = f"{exploit.name}+explore"
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
        if len(order):
            at = np.minimum(np.searchsorted(g_key[order], u_key), len(order) - 1)
            same = (g_key[order][at] == u_key) & (greedy.item_id[order][at] == uniform.item_id)
        keep_g, keep_u = ~explored[greedy.request_index], explored[uniform.request_index]
        eps = self.epsilon
        request_index = np.concatenate([greedy.request_index[keep_g], uniform.request_index[keep_u]])
        position = np.concatenate([greedy.position[keep_g], uniform.position[keep_u]])
        item_id = np.concatenate([greedy.item_id[keep_g], uniform.item_id[keep_u]])
        propensity = np.concatenate(
            [
                (1 - eps) + eps * one_over_n[greedy.request_index[keep_g]],
                eps * uniform.propensity[keep_u] + (1 - eps) * same[keep_u],
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


BASELINES = ("random", "popular", "chronological")
#: Popular with a fifth of requests served at random: logs with varied, exact propensities (not in the demo's table).
EXPLORING = "popular+explore"


def make_baseline(name: str, seed: int = 0, max_age_days: float = 30.0):  # noqa: ANN201 - one of the classes above
    """A baseline policy by name; an unknown name is an error listing the choices."""
    if name == "random":
        return RandomPolicy(seed=seed, max_age_days=max_age_days)
    if name == "popular":
        return PopularPolicy(max_age_days=max_age_days)
    if name == "chronological":
        return ChronologicalPolicy(max_age_days=max_age_days)
    if name == EXPLORING:
        return ExploringPolicy(PopularPolicy(max_age_days=max_age_days), epsilon=0.2, seed=seed)
    raise PolicyError(f"unknown policy {name!r}; choose one of: {', '.join((*BASELINES, EXPLORING))}")
