"""The hidden world: sparse interests, noisy content features, a classifier that misses some unsafe items."""

from __future__ import annotations

import numpy as np

from homefeed.config import SimSettings
from homefeed.sim.world import World


def test_generation_is_deterministic_for_a_seed():
    a, b = World.generate(SimSettings(seed=3, users=500)), World.generate(SimSettings(seed=3, users=500))
    np.testing.assert_array_equal(a.interests, b.interests)
    np.testing.assert_array_equal(a.item_quality, b.item_quality)
    assert a.items_table(slice(0, 100)).equals(b.items_table(slice(0, 100)))
    c = World.generate(SimSettings(seed=4, users=500))
    assert not np.array_equal(a.interests, c.interests)


def test_interests_are_sparse_distributions_over_topics():
    world = World.generate(SimSettings(users=5_000))
    np.testing.assert_allclose(world.interests.sum(axis=1), 1.0, rtol=1e-5)
    top3 = np.sort(world.interests, axis=1)[:, -3:].sum(axis=1)
    assert np.median(top3) > 0.7  # most of a user's interest sits in a few topics (uniform: 3 / 24)
    # Declared interests are mostly, not always, the user's real top topics.
    users = world.users_table(np.arange(world.n_users))
    declared = users["declared_interests"].to_pylist()
    top = np.argmax(world.interests, axis=1)
    with_any = [i for i, d in enumerate(declared) if d]
    hit = np.mean([world.topics[top[i]] in declared[i] for i in with_any])
    assert 0.5 < hit < 1.0


def test_content_features_are_noisy_views_of_the_truth():
    world = World.generate(SimSettings(items_per_day=5_000, item_lifetime_days=2))
    table = world.items_table(slice(0, world.n_items))
    content = {k: np.array(v) for k, v in _columns(table["content"].to_pylist()).items()}
    quality = world.item_quality[: world.n_items]
    r = np.corrcoef(content["quality_score"], quality)[0, 1]
    assert 0.6 < r < 0.99  # informative, not the truth itself
    assert np.corrcoef(content["clickbait_score"], world.item_clickbait[: world.n_items])[0, 1] > 0.6


def test_safety_labels_catch_most_unsafe_items_and_few_safe_ones():
    world = World.generate(SimSettings(items_per_day=20_000, item_lifetime_days=1, unsafe_share=0.05))
    labels = np.array(world.items_table(slice(0, world.n_items))["safety_label"].to_pylist())
    unsafe = world.item_unsafe[: world.n_items] > 0
    assert 0.04 < unsafe.mean() < 0.06
    recall = np.mean(labels[unsafe] != "safe")
    false_positive = np.mean(labels[~unsafe] != "safe")
    assert 0.8 < recall < 0.97
    assert 0 < false_positive < 0.01


def _columns(rows):
    out = {}
    for row in rows:
        for key, value in row:
            out.setdefault(key, []).append(value)
    return out
