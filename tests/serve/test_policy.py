"""The policy layer on a synthetic catalogue: caps on every slate, exploration at its rate, exact propensities."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from homefeed.config import Caps, Surface
from homefeed.schema import ITEMS
from homefeed.serve.catalog import ItemCatalogue
from homefeed.serve.policy import arrange
from homefeed.serve.stages import SOURCE_CODES, Candidates

NOW = 1_780_000_000_000_000
HOUR = 3_600_000_000


def catalogue(n: int = 600, topics: int = 30, creators: int = 150, seed: int = 0) -> ItemCatalogue:
    rng = np.random.default_rng(seed)
    cat = ItemCatalogue()
    cat.add(
        pa.table(
            {
                "item_id": pa.array(np.arange(1000, 1000 + n), pa.int64()),
                "creator_id": pa.array(rng.integers(0, creators, n), pa.int64()),
                "topic": pa.array([f"t{t}" for t in rng.integers(0, topics, n)]),
                "created_at": pa.array(NOW - rng.integers(1, 200, n) * HOUR).cast(ITEMS.field("created_at").type),
                "content": pa.nulls(n, ITEMS.field("content").type),
                "safety_label": pa.array(["safe"] * n),
            },
            schema=ITEMS,
        )
    )
    return cat


def batch(cat: ItemCatalogue, requests: int, exploit: int, pool: int, seed: int, exploit_topics: int | None = None):
    """``requests`` requests, each with its own exploit candidates (scored) and exploration-pool candidates."""
    rng = np.random.default_rng(seed)
    ri, rows, source = [], [], []
    allowed = np.flatnonzero(cat.topic < exploit_topics) if exploit_topics else np.arange(len(cat))
    for r in range(requests):
        chosen = rng.choice(allowed, exploit, replace=False)
        others = np.setdiff1d(np.arange(len(cat)), chosen)
        explore = rng.choice(others, pool, replace=False)
        ri += [r] * (exploit + pool)
        rows += [*chosen, *explore]
        source += [SOURCE_CODES["affinity"]] * exploit + [SOURCE_CODES["explore"]] * pool
    cands = Candidates(np.array(ri, np.int64), np.array(rows, np.int64), np.array(source, np.int8))
    return cands, rng.random(len(cands))


def windows_within_caps(cat: ItemCatalogue, items: np.ndarray, caps: Caps) -> bool:
    for k in range(len(items)):
        window = items[k : k + caps.window]
        creators, topics = cat.creator_id[window], cat.topic[window]
        if caps.per_creator and np.bincount(np.unique(creators, return_inverse=True)[1]).max() > caps.per_creator:
            return False
        if caps.per_topic and len(topics) and np.bincount(topics).max() > caps.per_topic:
            return False
    return True


@pytest.mark.parametrize("explore_rate", [0.0, 0.3])
def test_caps_hold_on_every_slate_exploration_included(explore_rate):
    cat = catalogue()
    surface = Surface(explore_rate=explore_rate, explore_from=1, caps=Caps(window=5, per_creator=1, per_topic=2))
    cands, score = batch(cat, 300, exploit=120, pool=60, seed=1)
    sizes = np.full(300, 25)
    slates = arrange(cands, score, np.full(300, NOW), sizes, cat, surface, np.random.default_rng(2))
    assert len(slates) > 300 * 20
    explored = 0
    for r in range(300):
        mine = slates.request_index == r
        rows = cands.row[slates.candidate[mine]]
        assert np.array_equal(slates.position[mine], np.arange(1, mine.sum() + 1))
        assert len(np.unique(rows)) == len(rows)
        assert windows_within_caps(cat, rows, surface.caps), f"request {r}"
        explored += slates.explored[mine].sum()
    assert (explored > 0) == (explore_rate > 0)


def test_without_caps_the_best_scores_come_first():
    cat = catalogue()
    surface = Surface(explore_rate=0.0, freshness_boost=0.0, caps=Caps(per_creator=0, per_topic=0))
    cands, score = batch(cat, 5, exploit=50, pool=0, seed=3)
    slates = arrange(cands, score, np.full(5, NOW), np.full(5, 10), cat, surface, np.random.default_rng(0))
    for r in range(5):
        mine = cands.request_index == r
        best = np.sort(score[mine])[::-1][:10]
        np.testing.assert_array_equal(slates.score[slates.request_index == r], best)
    assert np.all(slates.propensity == 1.0)


def test_freshness_boost_lifts_new_items():
    cat = catalogue()
    flat = Surface(explore_rate=0.0, freshness_boost=0.0, caps=Caps(per_creator=0, per_topic=0))
    boosted = flat.model_copy(update={"freshness_boost": 10.0})
    cands, score = batch(cat, 1, exploit=100, pool=0, seed=4)
    args = (np.full(1, NOW), np.full(1, 10), cat)
    plain = arrange(cands, score, *args, flat, np.random.default_rng(0))
    fresh = arrange(cands, score, *args, boosted, np.random.default_rng(0))
    age = lambda s: (NOW - cat.created_us[cands.row[s.candidate]]).mean()  # noqa: E731
    assert age(fresh) < age(plain) / 2


def test_exploration_slots_come_at_the_configured_rate_with_propensities_equal_to_frequencies():
    """The same request served 30,000 times: each (item, slot)'s frequency matches its logged propensity."""
    cat = catalogue(n=900, topics=40, creators=400, seed=5)
    eps, start = 0.2, 3
    surface = Surface(explore_rate=eps, explore_from=start, caps=Caps(window=4, per_creator=1, per_topic=2))
    one, score = batch(cat, 1, exploit=150, pool=120, seed=6, exploit_topics=10)
    n = 30_000
    cands = Candidates(np.repeat(np.arange(n), len(one)), np.tile(one.row, n), np.tile(one.source, n))
    slates = arrange(cands, np.tile(score, n), np.full(n, NOW), np.full(n, 12), cat, surface, np.random.default_rng(7))
    position, item = slates.position, cands.row[slates.candidate]
    # exploration at its rate: every slot from `explore_from` on, while the pool lasts (it does here)
    eligible = position >= start
    assert not slates.explored[~eligible].any()
    share = slates.explored[eligible].mean()
    assert abs(share - eps) < 4 * np.sqrt(eps * (1 - eps) / eligible.sum())
    # the logged propensity of an (item, slot) is one number, and it is the frequency of that (item, slot)
    key = item * 100 + position
    keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    logged = np.zeros(len(keys))
    logged[inverse] = slates.propensity
    spread = np.zeros(len(keys))
    np.maximum.at(spread, inverse, np.abs(slates.propensity - logged[inverse]))
    assert spread.max() < 1e-12
    freq = counts / n
    tolerance = 4.5 * np.sqrt(logged * (1 - logged) / n) + 2 / n
    assert np.all(np.abs(freq - logged) <= tolerance), np.abs(freq - logged).max()
    explored_keys = np.unique(key[slates.explored])
    assert len(explored_keys) > 50  # many pool items in many slots: the check above covers them
    # per slot, the propensities of everything that can land there sum to the chance the slot exists
    for k in range(1, 13):
        assert logged[keys % 100 == k].sum() == pytest.approx((position == k).sum() / n, abs=0.01)


def test_exploration_items_show_topics_and_creators_the_ranked_slate_does_not():
    cat = catalogue(n=900, topics=40, creators=400, seed=8)
    surface = Surface(explore_rate=0.5, explore_from=1)
    cands, score = batch(cat, 200, exploit=100, pool=100, seed=9, exploit_topics=10)
    slates = arrange(cands, score, np.full(200, NOW), np.full(200, 20), cat, surface, np.random.default_rng(1))
    for r in range(200):
        mine = slates.request_index == r
        rows = cands.row[slates.candidate[mine]]
        explored = slates.explored[mine]
        assert not set(cat.topic[rows[explored]]) & set(cat.topic[rows[~explored]])
        assert len(set(cat.topic[rows[explored]])) == explored.sum()
        assert not set(cat.creator_id[rows[explored]]) & set(cat.creator_id[rows[~explored]])


def test_one_request_takes_the_scalar_path_and_gets_what_the_batch_path_gives():
    """A service call (one request) and a batch rank the same candidates into the same slate, same propensities."""
    from homefeed.serve.policy import _buckets, _draw, _padded, capped_order

    cat = catalogue(n=900, topics=40, creators=400, seed=11)
    surface = Surface(explore_rate=0.4, explore_from=2, caps=Caps(window=5, per_creator=1, per_topic=2))
    one, score = batch(cat, 1, exploit=200, pool=80, seed=12, exploit_topics=12)
    two = Candidates(
        np.concatenate([one.request_index, one.request_index + 1]), np.tile(one.row, 2), np.tile(one.source, 2)
    )
    for cands, scores in ((one, score), (two, np.tile(score, 2))):
        n = int(cands.request_index.max()) + 1
        exploit = np.flatnonzero(cands.source != SOURCE_CODES["explore"])
        order = exploit[np.lexsort((-scores[exploit], cands.request_index[exploit]))]
        width = int(np.bincount(cands.request_index[exploit]).max())
        matrix = _padded(cands.request_index, order, n, width)
        r = capped_order(
            matrix, cat.creator_id[cands.row], cat.topic[cands.row].astype(np.int64), np.full(n, 20), surface
        )
        if n == 1:
            single_r = r
        else:
            np.testing.assert_array_equal(r[0] % len(one), single_r[0])
    sizes, len_r = np.array([20]), (single_r >= 0).sum(axis=1)
    pool = np.flatnonzero(one.source == SOURCE_CODES["explore"])
    buckets = _buckets(
        pool,
        one.request_index,
        cat.creator_id[one.row],
        cat.topic[one.row].astype(np.int64),
        single_r,
        1,
        surface,
        np.random.default_rng(3),
    )
    assert buckets.n[0] > 5
    scalar = _draw(single_r, len_r, buckets, sizes, surface, np.random.default_rng(4), score)
    doubled = type(buckets)(
        np.repeat(buckets.n, 2), np.repeat(buckets.item, 2, axis=0), np.repeat(buckets.size, 2, axis=0)
    )
    vector = _draw(
        np.repeat(single_r, 2, axis=0),
        np.repeat(len_r, 2),
        doubled,
        np.repeat(sizes, 2),
        surface,
        np.random.default_rng(4),
        score,
    )
    first = vector.request_index == 0
    np.testing.assert_array_equal(scalar.candidate, vector.candidate[first])
    np.testing.assert_array_equal(scalar.position, vector.position[first])
    np.testing.assert_array_equal(scalar.explored, vector.explored[first])
    np.testing.assert_allclose(scalar.propensity, vector.propensity[first], rtol=1e-12)
    assert scalar.explored.any() and (~scalar.explored).any()
