"""The feed contract's experiment combinator: arms split by a stable hash, every row says which arm served it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from homefeed.config import SimSettings
from homefeed.feed import (
    EXPERIMENTS_TYPE,
    Experiment,
    PolicyError,
    RequestBatch,
    sees_hidden_state,
    slots,
    validate_slates,
)
from homefeed.sim import ChronologicalPolicy, OraclePolicy, RandomPolicy, Simulation
from tests.conftest import logs


def test_each_user_always_gets_the_same_arm_in_the_shares_asked_for():
    experiment = Experiment("ranker", {"control": RandomPolicy(seed=1), "treatment": ChronologicalPolicy()}, {
        "control": 0.7, "treatment": 0.3})  # fmt: skip
    users = np.arange(200_000)
    arm = experiment.arm_of(users)
    assert abs((arm == 1).mean() - 0.3) < 0.005
    np.testing.assert_array_equal(arm, experiment.arm_of(users))
    # A stable hash: the same arms in another process (Python's own hash would differ per process).
    code = (
        "import numpy as np; from homefeed.feed import Experiment; from homefeed.sim import RandomPolicy;"
        "e = Experiment('ranker', {'control': RandomPolicy(), 'treatment': RandomPolicy()}, "
        "{'control': 0.7, 'treatment': 0.3}); print(''.join(map(str, e.arm_of(np.arange(64)))))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == "".join(map(str, arm[:64]))
    # Experiments of different names split users independently.
    other_split = Experiment("layout", {"a": RandomPolicy(), "b": RandomPolicy()}).arm_of(users)
    assert abs(np.corrcoef(arm, other_split)[0, 1]) < 0.01


def test_rows_carry_their_arm_and_model_version_in_the_logs(tmp_path, con):
    experiment = Experiment("ranker", {"control": RandomPolicy(seed=1), "treatment": ChronologicalPolicy()})
    sim = Simulation(SimSettings(users=1_500, items_per_day=250, creators=150, seed=3))
    sim.run(experiment, 2, tmp_path)
    logs(con, tmp_path)
    rows = con.sql(
        "select experiments['ranker'] as arm, model_version, count(*) as n, count(distinct user_id) as users "
        "from impressions group by all order by 1"
    ).fetchall()
    assert [(arm, version) for arm, version, _, _ in rows] == [
        ("control", "baseline-random"), ("treatment", "baseline-chronological")]  # fmt: skip
    assert min(users for *_, users in rows) > 300
    # A user is always in one arm, on every surface and day.
    assert (
        con.sql(
            "select max(k) from (select count(distinct experiments['ranker']) as k from impressions group by user_id)"
        ).fetchall()[0][0]
        == 1
    )


def test_nested_experiments_keep_both_assignments_and_slates_stay_valid():
    inner = Experiment("inner", {"x": RandomPolicy(seed=1), "y": RandomPolicy(seed=2)})
    outer = Experiment("outer", {"a": inner, "b": ChronologicalPolicy()})
    sim = Simulation(SimSettings(users=400, items_per_day=80, creators=40, seed=4))
    sim.run(outer, 1)
    hi = sim.world.n_items
    requests = RequestBatch(
        pa.array([f"r{i}" for i in range(300)]), np.arange(300, dtype=np.int64),
        np.full(300, int(sim.world.item_created_us[hi - 1]) + 1), np.full(300, 5, np.int32),
        pa.array(["US"] * 300),
    )  # fmt: skip
    slates = outer.rank(requests)
    validate_slates(slates, requests, sim.world.item_created_us)
    assignment = slates.experiments.cast(EXPERIMENTS_TYPE)
    outer_arm = pc.map_lookup(assignment, "outer", "first").to_pylist()
    inner_arm = pc.map_lookup(assignment, "inner", "first").to_pylist()
    assert set(outer_arm) == {"a", "b"}
    assert all((o == "a") == (i is not None) for o, i in zip(outer_arm, inner_arm, strict=True))


@pytest.mark.parametrize(
    ("arms", "shares", "message"),
    [
        ({}, None, "at least one arm"),
        ({"a": None, "b": None}, {"a": 0.5}, "shares name"),
        ({"a": None, "b": None}, {"a": 0.7, "b": 0.7}, "sum to 1"),
        ({"a": None, "b": None}, {"a": 1.0, "b": 0.0}, "positive"),
    ],
)
def test_bad_experiments_are_refused(arms, shares, message):
    with pytest.raises(PolicyError, match=message):
        Experiment("e", arms, shares)


def test_the_oracle_says_it_reads_hidden_state_and_so_does_an_experiment_holding_it():
    sim = Simulation(SimSettings(users=50, items_per_day=20, creators=10, seed=1))
    oracle = OraclePolicy(sim)
    assert sees_hidden_state(oracle) and not sees_hidden_state(RandomPolicy())
    assert sees_hidden_state(Experiment("e", {"a": RandomPolicy(), "b": oracle}))


@pytest.mark.parametrize("sizes", [[3, 3, 3], [2, 0, 4, 1], [5], [], [0, 0]])
def test_slots_number_each_slate_from_1_whatever_the_sizes(sizes):
    request_index, position = slots(np.array(sizes))
    expected = [(r, p) for r, k in enumerate(sizes) for p in range(1, k + 1)]
    assert list(zip(request_index.tolist(), position.tolist(), strict=True)) == expected
    assert request_index.dtype == np.int64 and position.dtype == np.int32
