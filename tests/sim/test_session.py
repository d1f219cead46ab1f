"""A visit, slot by slot: patience and time end it, boredom and memory shape it, examination follows a model."""

from __future__ import annotations

import numpy as np
import pytest

from homefeed.config import SimSettings
from homefeed.errors import HomefeedError
from homefeed.feed import Catalogue, Feedback, RequestBatch, SlateBatch, slots
from homefeed.sim import OraclePolicy, RandomPolicy, Simulation
from homefeed.sim.behaviour import MarketEffects, funnel
from homefeed.sim.session import ACTIONS
from homefeed.sim.state import UserState
from tests.conftest import logs

SMALL = {"users": 1_500, "items_per_day": 250, "creators": 150}


class Stubborn:
    """Shows every user the same few items, newest first, every day: the world's memory gets tested."""

    name = "stubborn"

    def __init__(self, n: int = 30):
        self.catalogue = Catalogue(30)
        self.n = n

    def observe(self, feedback: Feedback) -> None:
        self.catalogue.add(feedback.items)

    def rank(self, requests: RequestBatch) -> SlateBatch:
        lo, hi = self.catalogue.eligible(requests.ts)
        first_day = self.catalogue.item_id[: self.n]  # the oldest: eligible all run long
        sizes = np.minimum(np.full(len(requests), self.n), np.minimum(requests.slate_size, hi - lo))
        request_index, position = slots(sizes)
        return SlateBatch(request_index, position, first_day[position - 1], np.ones(len(position)))


def test_users_read_a_prefix_of_the_list_and_better_feeds_hold_them_longer():
    """The policy ranks slate_size items; how far a user scrolls is an outcome (patience and time)."""
    reached = {}
    for name in ("random", "oracle"):
        sim = Simulation(SimSettings(seed=3, **SMALL), keep_truth=True)
        policy = RandomPolicy(seed=3) if name == "random" else OraclePolicy(sim, candidates=200, seed=3)
        result = sim.run(policy, 3, surfaces={"explore": RandomPolicy(seed=4)})
        truth = sim.truth_table()
        depth = truth.group_by("request_id").aggregate([("position", "max"), ("position", "count")])
        deepest, count = depth["position_max"].to_numpy(), depth["position_count"].to_numpy()
        np.testing.assert_array_equal(deepest, count)  # a prefix: slots 1..n, no gaps
        assert deepest.max() <= sim.settings.sessions.slate_size
        assert np.median(deepest) < sim.settings.sessions.slate_size / 2  # most stop well before the end
        reached[name] = result.summary()["impressions_per_user_day"]
    assert reached["random"] < 0.92 * reached["oracle"]


def test_a_hidden_item_shown_again_is_never_engaged_and_is_hidden_again(tmp_path, con):
    sim = Simulation(SimSettings(seed=5, **SMALL))
    result = sim.run(Stubborn(), 6, tmp_path)
    assert result.total("hidden_reshown") > 200
    assert result.total("hidden_reshown_engaged") == 0 and result.total("hidden_reshown_saved") == 0
    # As an analyst sees it: impressions of an item after the user hid it, with the truth the world used.
    logs(con, tmp_path)
    con.sql(f"create view truth as select * from read_parquet('{tmp_path}/truth/*/*.parquet')")
    after = con.sql(
        """
        with hidden as (select user_id, item_id, min(ts) as first_hide from engagements
                        where action in ('hide', 'report') group by all)
        select i.request_id, i.item_id, t.p_examine, t.p_closeup, t.p_save, t.p_hide,
               (select list(action) from engagements e where e.request_id = i.request_id and e.item_id = i.item_id)
                 as actions
        from impressions i join hidden h using (user_id, item_id) join truth t using (request_id, position)
        where i.ts > h.first_hide
        """
    ).fetchall()
    assert len(after) > 200
    for _, _, examine, closeup, save, hide, actions in after:
        assert closeup == 0 and save == 0 and hide == pytest.approx(examine)
        assert not set(actions or []) & {"closeup", "click", "save"}


def test_memory_makes_a_saved_item_worth_less_and_a_hidden_one_worthless():
    sim = Simulation(SimSettings(seed=6, **SMALL))
    world, state = sim.world, sim.state
    users = np.arange(200)
    items = np.full((200, 1), world.n_items - 1)
    ts = np.full((200, 1), int(world.item_created_us[-1]) + 3_600_000_000)
    market = MarketEffects.on_day(sim.settings, world.countries, 0)
    before = funnel(world, state.impressions(world, users, items, ts), market)
    outcome = {a: np.zeros(200, bool) for a in ("closeup", "click", "save", "hide", "report")}
    outcome["save"][:100] = True
    outcome["hide"][100:] = True
    state.remember(world, users, items[:, 0], outcome)
    after = funnel(world, state.impressions(world, users, items, ts), market)
    assert np.all(after.closeup[:100] < before.closeup[:100]) and np.all(after.save[:100] < before.save[:100])
    assert np.all(after.closeup[100:] == 0) and np.all(after.hide_other[100:] == 1)


def test_the_same_topic_again_in_a_visit_or_over_recent_days_is_met_with_boredom():
    sim = Simulation(SimSettings(seed=6, **SMALL))
    world, state = sim.world, sim.state
    market = MarketEffects.on_day(sim.settings, world.countries, 0)
    users = np.arange(500)
    items = np.full((500, 1), world.n_items - 1)
    ts = np.full((500, 1), int(world.item_created_us[-1]) + 3_600_000_000)
    fresh = funnel(world, state.impressions(world, users, items, ts), market).closeup
    repeats = [funnel(world, state.impressions(world, users, items, ts, k, 0), market).closeup for k in (1, 3)]
    assert np.all(repeats[0] < fresh) and np.all(repeats[1] < repeats[0])
    # A day of nothing but this topic: the next day it bores the user (satiation), then slowly recovers.
    topic = world.item_topic[world.n_items - 1]
    shown = np.flatnonzero(world.item_topic == topic)[:20]
    for day in range(2):
        user, item = np.repeat(users, 20), np.tile(shown, 500)
        state.remember(world, user, item, {a: np.zeros(len(user), bool) for a in ACTIONS})
        state.end_of_day(world, day, users, np.zeros(500), np.ones(500))
    sated = funnel(world, state.impressions(world, users, items, ts), market).closeup
    assert np.all(sated < fresh)


def test_engagement_pulls_tastes_toward_its_topic_and_unfed_topics_fade():
    sim = Simulation(SimSettings(seed=7, **SMALL))
    world, state = sim.world, sim.state
    users = np.arange(300)
    topic = 3
    item = np.flatnonzero(world.item_topic == topic)[:300]
    before = world.interests[users].copy()
    saved = {a: np.zeros(300, bool) for a in ACTIONS}
    saved["save"] = np.ones(300, bool)
    state.remember(world, users, item, saved)
    state.end_of_day(world, 0, users, np.ones(300), np.ones(300))
    after = world.interests[users]
    assert np.all(after[:, topic] > before[:, topic])
    others = np.arange(world.interests.shape[1]) != topic
    assert np.all(after[:, others] <= before[:, others] + 1e-7)
    np.testing.assert_allclose(after.sum(1), 1.0, rtol=1e-5)


def test_cascade_examination_follows_the_chain_and_stops_for_good():
    bias = {"model": "cascade", "continue_prob": 0.9, "continue_after_open": 0.6}
    sim = Simulation(SimSettings(seed=8, position_bias=bias, **SMALL), keep_truth=True)
    sim.run(RandomPolicy(seed=8), 2)
    t = sim.truth_table().sort_by([("request_id", "ascending"), ("position", "ascending")])
    request, position, p = (t[c].to_numpy(zero_copy_only=False) for c in ("request_id", "position", "p_examine"))
    assert np.all(p[position == 1] == 1.0)
    later = position > 1
    assert set(np.round(np.unique(p[later]), 9)) <= {0.0, 0.9, 0.6}
    same = request[1:] == request[:-1]
    stopped = same & (p[:-1] == 0)
    assert np.all(p[1:][stopped] == 0)  # once attention lapses it does not come back
    with pytest.raises(HomefeedError, match="position-based"):
        sim.ground_truth(request[:5], position[:5], at_position=1)


def test_new_users_have_less_patience_than_established_ones():
    sim = Simulation(SimSettings(seed=9, **SMALL))
    rng = np.random.default_rng(0)
    visits = sim._visits(rng, 10, MarketEffects.on_day(sim.settings, sim.world.countries, 10))
    new = visits["new"]
    assert new.any() and (~new).any()
    ratio = (visits["patience"][new] / sim.world.patience[visits["user_id"][new]]).mean()
    assert ratio < 0.8 * (visits["patience"][~new] / sim.world.patience[visits["user_id"][~new]]).mean()


def test_state_lookups_match_a_fresh_state():
    """UserState.impressions of a pair never seen: no exposures, not saved, not hidden."""
    sim = Simulation(SimSettings(seed=1, users=50, items_per_day=20, creators=10))
    state = UserState(sim.world)
    items = np.arange(10).reshape(2, 5)
    imp = state.impressions(sim.world, np.array([0, 1]), items, np.zeros((2, 1), np.int64))
    assert not imp.saved.any() and not imp.hidden.any() and np.all(imp.exposures == 0)
    np.testing.assert_array_equal(imp.user_id, [0] * 5 + [1] * 5)
