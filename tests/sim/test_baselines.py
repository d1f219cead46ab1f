"""Baseline policies rank as their names promise and log honest propensities."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from homefeed.feed import validate_slates
from homefeed.schema import ENGAGEMENTS, ITEMS
from homefeed.sim import (
    ChronologicalPolicy,
    Feedback,
    PolicyError,
    PopularPolicy,
    RandomPolicy,
    RequestBatch,
    SlateBatch,
    TopicCap,
    make_baseline,
)
from homefeed.sim.baselines import EXPLORING, ExploringPolicy

HOUR_US = 3_600_000_000
T0 = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp() * 1e6)


def items(n: int, every_us: int = HOUR_US) -> pa.Table:
    created = T0 + np.arange(n, dtype=np.int64) * every_us
    return pa.Table.from_pydict(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "creator_id": np.zeros(n, dtype=np.int64),
            "topic": ["recipes"] * n,
            "created_at": pa.array(created).cast(ITEMS.field("created_at").type),
            "content": pa.nulls(n, ITEMS.field("content").type),
            "safety_label": ["safe"] * n,
        },
        schema=ITEMS,
    )


def requests(ts_us, sizes) -> RequestBatch:
    n = len(ts_us)
    return RequestBatch(
        request_id=pa.array([f"r{i}" for i in range(n)]),
        user_id=np.arange(n, dtype=np.int64),
        ts=np.asarray(ts_us, dtype=np.int64),
        slate_size=np.asarray(sizes, dtype=np.int32),
        country=pa.array(["US"] * n),
    )


def test_random_is_uniform_over_eligible_items_with_exact_propensities():
    policy = RandomPolicy(seed=3, max_age_days=2)
    policy.observe(Feedback(items=items(200)))  # one item an hour
    ts = T0 + 100 * HOUR_US  # items 52..100 are eligible: created in the last 48 hours, not after now
    batch = requests([ts] * 4000, [10] * 4000)
    slates = policy.rank(batch)
    validate_slates(slates, batch, T0 + np.arange(200) * HOUR_US)
    assert slates.item_id.min() == 52 and slates.item_id.max() == 100
    np.testing.assert_allclose(slates.propensity, 1 / 49)
    counts = np.bincount(slates.item_id, minlength=101)[52:]
    expected = len(slates) / 49
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))  # uniform, every slot included
    first_slot = np.bincount(slates.item_id[slates.position == 1], minlength=101)[52:]
    assert first_slot.min() > 0  # the propensity is per slot: every item can be in slot 1


def test_random_returns_short_slates_when_few_items_are_eligible():
    policy = RandomPolicy(seed=1)
    policy.observe(Feedback(items=items(5)))
    batch = requests([T0 + 10 * HOUR_US, T0 + 2 * HOUR_US + 1], [10, 10])
    slates = policy.rank(batch)
    assert np.bincount(slates.request_index).tolist() == [5, 3]
    assert sorted(slates.item_id[slates.request_index == 1].tolist()) == [0, 1, 2]


def test_chronological_shows_the_freshest_items_first():
    policy = ChronologicalPolicy()
    policy.observe(Feedback(items=items(50)))
    batch = requests([T0 + 20 * HOUR_US + 5, T0 + 40 * HOUR_US], [5, 3])
    slates = policy.rank(batch)
    assert slates.item_id[slates.request_index == 0].tolist() == [20, 19, 18, 17, 16]
    assert slates.item_id[slates.request_index == 1].tolist() == [40, 39, 38]
    assert np.all(slates.propensity == 1.0)


def engagements(pairs: list[tuple[int, str]]) -> pa.Table:
    n = len(pairs)
    return pa.Table.from_pydict(
        {
            "ts": pa.array(np.full(n, T0 + 30 * HOUR_US)).cast(ENGAGEMENTS.field("ts").type),
            "user_id": np.zeros(n, dtype=np.int64),
            "item_id": np.array([i for i, _ in pairs], dtype=np.int64),
            "request_id": ["r"] * n,
            "action": [a for _, a in pairs],
            "dwell": pa.nulls(n, pa.float64()),
        },
        schema=ENGAGEMENTS,
    )


def test_popular_ranks_by_recent_engagement_and_forgets_old_popularity():
    policy = PopularPolicy(decay=0.5)
    policy.observe(Feedback(items=items(30)))
    policy.observe(Feedback(engagements=engagements([(3, "save")] * 4 + [(7, "click")] * 4 + [(9, "closeup")] * 5)))
    batch = requests([T0 + 29 * HOUR_US], [3])
    assert policy.rank(batch).item_id.tolist() == [3, 7, 9]  # saves weigh more than clicks, clicks than closeups
    # A day later item 12 is hot and item 3 has cooled: 4 * 0.5 = 2 < 2.5.
    policy.observe(Feedback(engagements=engagements([(12, "save")] * 2 + [(12, "click")])))
    assert policy.rank(batch).item_id.tolist()[:2] == [12, 3]


def test_popular_never_serves_items_published_after_the_request():
    policy = PopularPolicy()
    policy.observe(Feedback(items=items(30)))
    policy.observe(Feedback(engagements=engagements([(25, "save")] * 10)))
    batch = requests([T0 + 10 * HOUR_US, T0 + 26 * HOUR_US], [3, 3])
    slates = policy.rank(batch)
    validate_slates(slates, batch, T0 + np.arange(30) * HOUR_US)
    assert 25 not in slates.item_id[slates.request_index == 0]


def test_unknown_policy_names_the_choices():
    with pytest.raises(PolicyError, match="unknown policy 'ml'; choose one of: random, popular, chronological"):
        make_baseline("ml")


def test_exploring_logs_the_mixtures_exact_propensities():
    """Each (item, slot)'s logged propensity is its empirical frequency in that slot over many identical requests."""
    policy = ExploringPolicy(ChronologicalPolicy(max_age_days=2), epsilon=0.25, seed=4)
    policy.observe(Feedback(items=items(200)))
    ts = T0 + 100 * HOUR_US  # 49 items eligible; the greedy slate is the freshest first
    batch = requests([ts] * 20_000, [5] * 20_000)
    slates = policy.rank(batch)
    validate_slates(slates, batch, T0 + np.arange(200) * HOUR_US)
    explored = np.zeros(len(batch), bool)
    greedy_item = 100 - (slates.position - 1)  # what the chronological slate puts in each slot
    explored[slates.request_index[slates.item_id != greedy_item]] = True
    assert abs(explored.mean() - 0.25) < 0.02
    for slot in (1, 5):
        here = slates.position == slot
        freq = np.bincount(slates.item_id[here], minlength=101)[52:] / here.sum()
        logged = np.zeros(101)
        logged[slates.item_id[here]] = slates.propensity[here]
        np.testing.assert_allclose(freq, logged[52:], atol=0.01)
    assert policy.name == "chronological+explore" and make_baseline(EXPLORING).name == "popular+explore"
    with pytest.raises(PolicyError, match="epsilon"):
        ExploringPolicy(ChronologicalPolicy(), epsilon=0.0)


def test_a_topic_cap_keeps_the_inner_order_with_at_most_k_of_a_topic():
    two_topics = items(200)
    topics = pa.array(["recipes" if i % 3 else "travel" for i in range(200)])
    two_topics = two_topics.set_column(two_topics.schema.get_field_index("topic"), "topic", topics)
    capped = TopicCap(ChronologicalPolicy(max_age_days=30), max_per_topic=2)
    capped.observe(Feedback(items=two_topics))
    batch = requests([T0 + 150 * HOUR_US], [6])
    slates = capped.rank(batch)
    validate_slates(slates, batch, T0 + np.arange(200) * HOUR_US)
    # Chronological order: 150, 149, 148 (travel), ... keeping at most two of each topic, then running out.
    assert slates.item_id.tolist() == [150, 149, 148, 147]
    assert capped.name == "chronological+cap2" and np.all(slates.propensity == 1.0)
    uncertain = TopicCap(RandomPolicy(seed=1), max_per_topic=2)
    uncertain.observe(Feedback(items=two_topics))
    assert np.all(np.isnan(uncertain.rank(batch).propensity))  # a random inner policy: the cap's are unknown


def test_exploring_an_unknown_propensity_stays_unknown():
    class Unknown(ChronologicalPolicy):
        name = "unknown"

        def rank(self, requests):
            s = super().rank(requests)
            return SlateBatch(s.request_index, s.position, s.item_id, np.full(len(s), np.nan))

    policy = ExploringPolicy(Unknown(max_age_days=2), epsilon=0.5, seed=1)
    policy.observe(Feedback(items=items(200)))
    slates = policy.rank(requests([T0 + 100 * HOUR_US] * 200, [3] * 200))
    greedy = slates.item_id == 100 - (slates.position - 1)
    assert np.all(np.isnan(slates.propensity[greedy]))
    assert np.all(slates.propensity[~greedy] > 0)  # a random pick the greedy slate did not make: ε / N, known
