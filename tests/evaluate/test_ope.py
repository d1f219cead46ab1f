"""Off-policy estimators: textbook formulas on the real Open Bandit sample, unbiased on simulated logs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from homefeed.config import SimSettings
from homefeed.data.lake import Lake
from homefeed.data.open_bandit import bandit_feedback, ingest_open_bandit
from homefeed.datasets import open_bandit_sample
from homefeed.evaluate.bootstrap import EvaluationError
from homefeed.evaluate.ope import LoggedFeedback, estimate, from_action_dist
from homefeed.sim.behaviour import MarketEffects, funnel
from homefeed.sim.state import UserState
from homefeed.sim.world import DAY_US, World, day_start_us


@pytest.fixture(scope="module")
def obd(tmp_path_factory) -> dict[str, np.ndarray]:
    """The bundled sample's random-policy 'all' campaign, read back from our lake after the adapter ingested it."""
    root = tmp_path_factory.mktemp("obd")
    lake = Lake(root / "lake")
    ingest_open_bandit(open_bandit_sample("random/all"), lake, root / "q", now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    fb = bandit_feedback(lake, "random", "all")
    return {
        "reward": fb["click"].to_numpy().astype(np.float64),
        "action": fb["item_id"].to_numpy().astype(np.int64),
        "position": fb["position"].to_numpy().astype(np.int64) - 1,
        "pscore": fb["propensity_score"].to_numpy().astype(np.float64),
    }


def test_estimators_equal_the_textbook_formulas_on_the_open_bandit_sample(obd):
    n, actions, slots = len(obd["reward"]), int(obd["action"].max()) + 1, int(obd["position"].max()) + 1
    rng = np.random.default_rng(0)
    # A candidate policy: a fixed, position-dependent preference over the 80 items.
    logits = rng.normal(0, 1.5, (actions, slots))
    dist = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    action_dist = np.broadcast_to(dist, (n, actions, slots))
    # A reward model: each (item, slot)'s smoothed click rate in the logs.
    clicks = np.zeros((actions, slots))
    shown = np.zeros((actions, slots))
    np.add.at(clicks, (obd["action"], obd["position"]), obd["reward"])
    np.add.at(shown, (obd["action"], obd["position"]), 1)
    rate = (clicks + obd["reward"].mean() * 10) / (shown + 10)
    q = np.broadcast_to(rate, (n, actions, slots))
    got = estimate(from_action_dist(obd["reward"], obd["action"], obd["position"], obd["pscore"], action_dist, q))

    # The textbook, one row at a time.
    w = np.array([dist[a, k] / p for a, k, p in zip(obd["action"], obd["position"], obd["pscore"], strict=True)])
    r = obd["reward"]
    q_a = np.array([rate[a, k] for a, k in zip(obd["action"], obd["position"], strict=True)])
    per_slot = [sum(dist[b, k] * rate[b, k] for b in range(actions)) for k in range(slots)]
    q_pi = np.array([per_slot[k] for k in obd["position"]])
    textbook = {
        "ips": sum(w * r) / n,
        "snips": sum(w * r) / sum(w),
        "dm": sum(q_pi) / n,
        "dr": sum(q_pi + w * (r - q_a)) / n,
        "sndr": sum(q_pi) / n + sum(w * (r - q_a)) / sum(w),
    }
    for name, value in textbook.items():
        assert got[name].value == pytest.approx(value, rel=1e-12), name
        assert got[name].low < got[name].value < got[name].high, name
    # The logging policy evaluated on its own logs: IPS weights are all 1, so IPS is the plain click rate.
    uniform = np.full((n, actions, slots), 1.0 / actions)
    own = estimate(from_action_dist(r, obd["action"], obd["position"], obd["pscore"], uniform), ("ips", "snips"))
    assert own["ips"].value == pytest.approx(r.mean(), rel=1e-9) and own["snips"].value == pytest.approx(r.mean())


def test_estimators_are_unbiased_on_simulated_logs_against_the_simulators_truth():
    """Uniform logging over a catalogue, rewards drawn from the simulator's own save probabilities."""
    settings = SimSettings(users=3_000, items_per_day=40, seed=3)
    world = World.generate(settings)
    world.add_items(0)
    state = UserState(world)  # nothing shown yet: no boredom, no memory
    items = np.arange(world.n_items)
    market = MarketEffects.on_day(settings, world.countries, 0)
    ts0 = day_start_us(settings.start_date, 0) + DAY_US  # the end of the first day: every item exists
    target = np.exp(3.0 * world.item_quality[items])
    target /= target.sum()  # the candidate prefers quality; the logger is uniform
    covered = dict.fromkeys(("ips", "snips", "dr", "sndr"), 0)
    seeds = 20
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        n = 4_000
        user = rng.integers(0, settings.users, n)
        slot = rng.integers(1, 11, n)
        shown = rng.integers(0, len(items), n)
        seen = state.impressions(world, user, np.tile(items, (n, 1)), np.full((n, 1), ts0))
        examined = settings.position_bias.examination(slot)[:, None]
        truth = examined * funnel(world, seen, market).given_examined()["save"].reshape(n, len(items))
        reward = (rng.random(n) < truth[np.arange(n), shown]).astype(np.float64)
        value = float((truth * target).sum(1).mean())
        q = np.clip(truth * 0.6 + 0.01, 0, 1)  # a deliberately wrong reward model: DR must not care
        fb = LoggedFeedback(
            reward, np.full(n, 1.0 / len(items)), target[shown], q[np.arange(n), shown], (q * target).sum(1)
        )
        for name, est in estimate(fb, tuple(covered)).items():
            covered[name] += est.contains(value)
    assert all(c >= 0.9 * seeds for c in covered.values()), covered


def test_missing_propensities_and_models_are_clear_errors():
    fb = LoggedFeedback(np.array([1.0, 0.0]), np.array([0.5, np.nan]), np.array([0.5, 0.5]))
    with pytest.raises(EvaluationError, match="1 of 2 logged rows have no usable propensity"):
        estimate(fb, ("ips",))
    with pytest.raises(EvaluationError, match="DM needs a reward model"):
        estimate(fb, ("dm",))
    with pytest.raises(EvaluationError, match="unknown estimator\\(s\\) magic"):
        estimate(fb, ("magic",))


def _candidate(rows: int, actions: int, slots: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dist = rng.dirichlet(np.ones(actions), size=(rows, slots)).transpose(0, 2, 1)  # (rows, actions, slots)
    return dist, rng.random((rows, actions, slots))


def test_from_action_dist_takes_single_slot_input_as_obp_lays_it_out():
    n, actions = 50, 4
    dist, q = _candidate(n, actions, 1)
    rng = np.random.default_rng(1)
    reward, action, pscore = rng.integers(0, 2, n).astype(float), rng.integers(0, actions, n), np.full(n, 0.25)
    full = from_action_dist(reward, action, np.zeros(n, int), pscore, dist, q)
    for position in (None, np.zeros(n, int)):
        for d, r in ((dist, q), (dist[:, :, 0], q[:, :, 0])):  # (rows, actions, 1) or (rows, actions)
            fb = from_action_dist(reward, action, position, pscore, d, r)
            np.testing.assert_array_equal(fb.target, full.target)
            np.testing.assert_allclose(fb.q_target, (dist[:, :, 0] * q[:, :, 0]).sum(1))
            np.testing.assert_array_equal(fb.q_logged, q[np.arange(n), action, 0])


def test_from_action_dist_refuses_a_distribution_that_does_not_sum_to_1_per_row_and_slot():
    n, actions = 20, 3
    dist, _ = _candidate(n, actions, 2)
    args = (np.zeros(n), np.zeros(n, int), np.ones(n, int), np.full(n, 1 / 3))
    from_action_dist(*args, dist)  # a policy: fine
    bad = dist.copy()
    bad[7, :, 1] *= 0.9
    with pytest.raises(EvaluationError, match=r"summing to 1 .* 1 of 40 do not \(row 7, slot 1 sums to 0\.9\)"):
        from_action_dist(*args, bad)
    negative = dist.copy()
    negative[3, :, 0] = [1.5, -0.5, 0.0]
    with pytest.raises(EvaluationError, match="row 3, slot 0"):
        from_action_dist(*args, negative)
    with pytest.raises(EvaluationError, match="position is needed: the candidate's distribution covers 2 slots"):
        from_action_dist(args[0], args[1], None, args[3], dist)
    with pytest.raises(EvaluationError, match=r"position must lie in \[0, 2\)"):
        from_action_dist(args[0], args[1], np.full(n, 2), args[3], dist)
    with pytest.raises(EvaluationError, match="estimated_rewards has shape"):
        from_action_dist(*args, dist, np.ones((n, actions, 1)))
