"""The oracle: a policy that ranks by the world's true expected value — the ceiling, never a product.

For each request it draws ``candidates`` items uniformly from those it knows of (the same catalogue every
policy learns from its feedback) and ranks them by what each is truly worth to this user right now, as the
behaviour model would score it at the top of the visit: tastes, satiation, fatigue, memory of saves and hides,
all read from the hidden state.  It is item-wise, like every pointwise ranker: it does not foresee the boredom
its own slate builds within the visit.  It exists to calibrate the world (the world card) and to mark the
ceiling every ranker is compared to; it says so with ``sees_hidden_state``, and the ranking service refuses it.
"""

from __future__ import annotations

import numpy as np

from homefeed.feed import Catalogue, Feedback, RequestBatch, SlateBatch, slots
from homefeed.sim.behaviour import MarketEffects, expected_value, funnel


class OraclePolicy:
    name = "oracle"
    sees_hidden_state = True

    def __init__(
        self, simulation: object, candidates: int = 200, seed: int = 0, max_age_days: float = 30.0,
        sees: str = "everything",
    ):  # fmt: skip
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if sees not in ("everything", "tastes"):
            raise ValueError(f"sees must be 'everything' or 'tastes', got {sees!r}")
        self.sees = sees
        if sees == "tastes":
            self.name = "taste-oracle"
        self.simulation = simulation  # homefeed.sim.Simulation: the oracle reads its hidden state
        self.candidates = candidates
        self.seed = seed
        self.catalogue = Catalogue(max_age_days)
        self._batches = 0

    def observe(self, feedback: Feedback) -> None:
        self.catalogue.add(feedback.items)

    def rank(self, requests: RequestBatch) -> SlateBatch:
        sim = self.simulation
        world = sim.world
        rng = np.random.default_rng([self.seed, 11, self._batches])
        self._batches += 1
        lo, hi = self.catalogue.eligible(requests.ts)
        available = hi - lo
        has = np.flatnonzero(available > 0)
        k = self.candidates
        pick = lo[has, None] + (rng.random((len(has), k)) * available[has, None]).astype(np.int64)
        items = self.catalogue.item_id[pick]
        imp = sim.state.impressions(world, requests.user_id[has], items, requests.ts[has, None])
        if self.sees == "tastes":  # blind to boredom and memory: what a ranker trained on history can learn
            imp.satiation = imp.creator_recent = imp.exposures = np.zeros_like(imp.satiation)
            imp.saved = imp.hidden = np.zeros(len(imp.item_id), bool)
        market = MarketEffects.on_day(sim.settings, world.countries, sim.day)
        value = expected_value(world, imp, funnel(world, imp, market).given_examined()).reshape(len(has), k)
        # A candidate drawn twice for one request counts once.
        order = np.argsort(items, axis=1, kind="stable")
        ranked = np.take_along_axis(items, order, axis=1)
        repeat = np.zeros(items.shape, bool)
        np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], axis=1)
        value = np.where(repeat, -np.inf, value)
        distinct = k - repeat.sum(1)
        sizes = np.zeros(len(requests), np.int64)
        sizes[has] = np.minimum(np.minimum(requests.slate_size[has], distinct), available[has])
        best = np.argsort(-value, axis=1, kind="stable")
        request_index, position = slots(sizes)
        at = np.searchsorted(has, request_index)
        column = best[at, position - 1]
        return SlateBatch(
            request_index=request_index,
            position=position,
            item_id=items[at, column],
            propensity=np.full(len(request_index), np.nan),  # a random candidate draw: not a logging policy
            score=value[at, column].astype(np.float64),
            model_version=self.name,
        )
