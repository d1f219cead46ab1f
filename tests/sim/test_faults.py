"""Fault injection does exactly what it says, on the day it says, and nothing else."""

from __future__ import annotations

import datetime as dt

import pytest

from homefeed.config import ConfigError, SimSettings
from homefeed.schema import check_values
from homefeed.sim import Feedback, RandomPolicy, Simulation
from tests.conftest import logs

BASE = {"users": 2_000, "items_per_day": 400, "creators": 150, "seed": 17}
START = dt.date(2026, 3, 2)


def simulate(tmp_path, name, faults, days=4, policy=None):
    settings = SimSettings(**BASE, faults=faults)
    sim = Simulation(settings)
    sim.run(policy or RandomPolicy(seed=1), days, tmp_path / name)
    return tmp_path / name


def by_day(con, query):
    return dict(con.sql(query).fetchall())


def test_logging_change_drops_an_action_from_its_day(tmp_path, con):
    root = simulate(tmp_path, "drop", [{"kind": "logging_change", "action": "closeup", "from_day": 2}])
    logs(con, root)
    closeups = by_day(con, "select ts::date, count(*) filter (where action = 'closeup') from engagements group by 1")
    assert closeups[START] > 0 and closeups[START + dt.timedelta(days=1)] > 0
    assert closeups[START + dt.timedelta(days=2)] == 0 and closeups[START + dt.timedelta(days=3)] == 0
    saves = by_day(con, "select ts::date, count(*) filter (where action = 'save') from engagements group by 1")
    assert saves[START + dt.timedelta(days=3)] > 0  # other actions still logged


def test_logging_change_renames_an_action_which_breaks_the_contract(tmp_path, con):
    root = simulate(
        tmp_path, "rename", [{"kind": "logging_change", "action": "save", "from_day": 1, "rename_to": "repin"}]
    )
    logs(con, root)
    actions = con.sql("select distinct action from engagements where ts >= '2026-03-03 01:00'").fetchall()
    assert ("repin",) in actions and ("save",) not in actions
    day1 = con.sql("select * from engagements where ts::date = '2026-03-04'").to_arrow_table()
    assert any("engagements.action" in p for p in check_values("engagements", day1))


def test_coverage_drop_nulls_a_column_for_one_market_only(tmp_path, con):
    fault = {"kind": "coverage_drop", "table": "impressions", "column": "country", "country": "BR", "from_day": 2}
    root = simulate(tmp_path, "coverage", [fault])
    logs(con, root)
    coverage = con.sql(
        """
        select u.country as market, i.ts::date >= '2026-03-04' as after, avg((i.country is not null)::int) as covered
        from impressions i join users u using (user_id) group by all
        """
    ).fetchall()
    covered = {(market, after): c for market, after, c in coverage}
    assert covered[("BR", False)] == 1.0 and covered[("BR", True)] == 0.0
    assert all(covered[(m, True)] == 1.0 for m, _ in covered if m != "BR")


def test_volume_drop_loses_a_share_of_rows_from_its_day(tmp_path, con):
    clean = simulate(tmp_path, "clean", [])
    dropped = simulate(
        tmp_path, "dropped", [{"kind": "volume_drop", "table": "impressions", "share": 0.5, "from_day": 2}]
    )
    counts = {}
    for name, root in (("clean", clean), ("dropped", dropped)):
        logs(con, root)
        counts[name] = by_day(con, "select ts::date, count(*) from impressions group by 1")
    assert counts["dropped"][START] == counts["clean"][START]
    ratio = counts["dropped"][START + dt.timedelta(days=3)] / counts["clean"][START + dt.timedelta(days=3)]
    assert 0.4 < ratio < 0.6


class Recorder(RandomPolicy):
    """A random policy that remembers how many impressions reached it each day."""

    def __init__(self):
        super().__init__(seed=1)
        self.seen: list[int] = []

    def observe(self, feedback: Feedback) -> None:
        super().observe(feedback)
        if feedback.impressions is not None:
            self.seen.append(feedback.impressions.num_rows)


def test_delayed_arrival_lands_late_in_the_lake_and_at_the_policy(tmp_path):
    policy = Recorder()
    root = simulate(tmp_path, "late", [{"kind": "delayed_arrival", "day": 1, "delay_days": 2}], policy=policy)
    day1 = root / "impressions" / "date=2026-03-03"
    assert [p.name for p in day1.glob("*.parquet")] == ["part-20260305.parquet"]  # written on day 3, not day 1
    assert sorted(p.name for p in (root / "impressions" / "date=2026-03-02").glob("*.parquet")) == [
        "part-20260302.parquet"
    ]
    assert policy.seen[1] == 0  # nothing from day 1 arrived on day 1 ...
    assert policy.seen[3] > policy.seen[2]  # ... it came with day 3's own logs


def test_delayed_events_not_arrived_by_the_end_are_not_in_the_logs(tmp_path):
    root = simulate(tmp_path, "pending", [{"kind": "delayed_arrival", "day": 2, "delay_days": 5}], days=4)
    assert not list((root / "impressions").glob("date=2026-03-04/*.parquet"))


def test_market_shift_changes_behaviour_in_that_market(tmp_path, con):
    root = simulate(tmp_path, "shift", [{"kind": "market_shift", "country": "JP", "hide_shift": 2.0}], days=3)
    logs(con, root)
    rates = dict(
        con.sql(
            """
            select u.country, count(e.action) / count(distinct i.request_id || i.item_id::varchar)
            from impressions i join users u using (user_id)
            left join engagements e on e.request_id = i.request_id and e.item_id = i.item_id and e.action = 'hide'
            group by 1
            """
        ).fetchall()
    )
    others = [r for c, r in rates.items() if c != "JP"]
    assert rates["JP"] > 3 * max(others)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "coverage_drop", "table": "impressions", "column": "user_id"}, "required"),
        ({"kind": "coverage_drop", "table": "impressions", "column": "nope"}, "no column 'nope'"),
        ({"kind": "coverage_drop", "table": "items", "column": "topic", "country": "BR"}, "no market"),
    ],
)
def test_impossible_faults_are_refused_before_anything_runs(fault, message):
    with pytest.raises(ConfigError, match=message):
        Simulation(SimSettings(**BASE, faults=[fault]))


def test_a_fault_scoped_to_an_arm_breaks_only_that_arms_rows(tmp_path, con):
    """A logging bug shipped with one arm of an experiment: the other arm's logs stay whole."""
    from homefeed.feed import Experiment

    fault = {"kind": "volume_drop", "table": "engagements", "share": 1.0, "experiment": "ranker", "arm": "b"}
    experiment = Experiment("ranker", {"a": RandomPolicy(seed=1), "b": RandomPolicy(seed=2)})
    Simulation(SimSettings(**BASE, faults=[fault])).run(experiment, 2, tmp_path / "arm")
    logs(con, tmp_path / "arm")
    per_arm = dict(
        con.sql(
            """
            select i.experiments['ranker'], count(e.action) from impressions i
            left join engagements e using (request_id, item_id) group by 1
            """
        ).fetchall()
    )
    assert per_arm["a"] > 500 and per_arm["b"] == 0


def test_a_fault_scoped_to_a_surface_spares_the_other(tmp_path, con):
    fault = {"kind": "coverage_drop", "table": "impressions", "column": "country", "surface": "explore"}
    simulate(tmp_path, "surface", [fault], days=2)
    logs(con, tmp_path / "surface")
    covered = dict(con.sql("select surface, avg((country is not null)::int) from impressions group by 1").fetchall())
    assert covered == {"home": 1.0, "explore": 0.0}


def test_a_market_shift_scoped_to_an_arm_changes_behaviour_in_that_arm_only():
    from homefeed.feed import Experiment

    shift = {"kind": "market_shift", "country": "US", "hide_shift": 3.0, "experiment": "ranker", "arm": "b"}
    experiment = Experiment("ranker", {"a": RandomPolicy(seed=1), "b": RandomPolicy(seed=1)})
    sim = Simulation(SimSettings(**BASE, faults=[shift]), keep_truth=True)
    sim.run(experiment, 2)
    truth = sim.truth_table()
    us = sim.world.user_country[truth["user_id"].to_numpy()] == sim.world.countries.index("US")
    arm = experiment.arm_of(truth["user_id"].to_numpy())
    hide = truth["p_hide"].to_numpy() / truth["p_examine"].to_numpy()
    assert hide[us & (arm == 1)].mean() > 3 * hide[us & (arm == 0)].mean()
    assert hide[~us & (arm == 1)].mean() < 1.5 * hide[~us & (arm == 0)].mean()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "volume_drop", "table": "impressions", "arm": "b"}, "name the experiment"),
        ({"kind": "coverage_drop", "table": "items", "column": "topic", "surface": "home"}, "not served"),
        ({"kind": "volume_drop", "table": "impressions", "surface": "search"}, "not a surface"),
        ({"kind": "market_shift", "country": "US", "visit_shift": 1.0, "surface": "home"}, "visit_shift"),
    ],
)
def test_impossible_scopes_are_refused_when_the_settings_load(fault, message):
    with pytest.raises(ValueError, match=message):
        SimSettings(**BASE, faults=[fault])
