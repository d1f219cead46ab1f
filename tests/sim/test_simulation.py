"""The closed loop: determinism, the logging contract, and the policy contract."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from homefeed.config import SimSettings
from homefeed.schema import TABLES, check_values, conform
from homefeed.sim import PolicyError, RandomPolicy, Simulation, SlateBatch, make_baseline
from homefeed.sim.simulation import compare_policies
from tests.conftest import logs, run_world

SMALL = {"users": 800, "items_per_day": 300, "creators": 120}


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_same_seed_gives_byte_identical_logs(tmp_path):
    for policy in ("random", "popular", "chronological"):
        run_world(tmp_path / f"{policy}-a", policy, days=3, seed=21, **SMALL)
        run_world(tmp_path / f"{policy}-b", policy, days=3, seed=21, **SMALL)
        a, b = files(tmp_path / f"{policy}-a"), files(tmp_path / f"{policy}-b")
        assert len(a) == 5 * 3  # users, items, impressions, engagements and the truth table, each day
        assert a == b, policy
    run_world(tmp_path / "other-seed", "random", days=3, seed=22, **SMALL)
    assert files(tmp_path / "other-seed") != files(tmp_path / "random-a")


def test_every_written_table_conforms_to_the_schema(random_logs):
    _, root = random_logs
    for name, schema in TABLES.items():
        parts = sorted((root / name).glob("date=*/*.parquet"))
        assert len(parts) == 7, name
        for part in parts:
            table = pq.read_table(part)
            assert table.schema.equals(schema), (name, part)
            conform(name, table)  # raises on a contract break
            assert check_values(name, table) == [], (name, part)


def test_logs_are_consistent_with_each_other(random_logs, con):
    _, root = random_logs
    logs(con, root)
    orphans = con.sql(
        "select count(*) from engagements e anti join impressions i using (request_id, item_id)"
    ).fetchall()[0][0]
    assert orphans == 0
    unknown_items = con.sql("select count(*) from impressions anti join items using (item_id)").fetchall()[0][0]
    unknown_users = con.sql("select count(*) from impressions anti join users using (user_id)").fetchall()[0][0]
    assert unknown_items == 0 and unknown_users == 0
    early = con.sql(
        "select count(*) from engagements e join impressions i using (request_id, item_id) where e.ts < i.ts"
    ).fetchall()[0][0]
    assert early == 0
    served_before_created = con.sql(
        "select count(*) from impressions i join items it using (item_id) where i.ts < it.created_at"
    ).fetchall()[0][0]
    assert served_before_created == 0
    # One session a day per user, and slates without duplicates.
    dup = con.sql("select count(*) from (select request_id, item_id from impressions group by all having count(*) > 1)")
    assert dup.fetchall()[0][0] == 0


def test_new_users_arrive_during_the_run_and_visit_on_signup_day(random_logs, con):
    _, root = random_logs
    logs(con, root)
    per_day = con.sql(
        "select signup_at::date as d, count(*) as n from users where signup_at >= '2026-03-02' group by 1 order by 1"
    ).fetchnumpy()
    assert len(per_day["d"]) == 7 and per_day["n"].min() > 0
    first_visits = con.sql(
        """
        select count(*) filter (where i.user_id is null) from users u
        left join (select distinct user_id, ts::date as d from impressions) i
          on i.user_id = u.user_id and i.d = u.signup_at::date
        where u.signup_at >= '2026-03-02'
        """
    ).fetchall()[0][0]
    assert first_visits == 0
    # New users are a growing, visible segment, tenured users the bulk.
    tenured = con.sql("select count(*) from users where signup_at < '2026-03-02'").fetchall()[0][0]
    assert tenured > 5 * per_day["n"].sum()


def test_weekends_bring_more_visits(random_logs, con):
    _, root = random_logs
    logs(con, root)
    visits = dict(
        con.sql("select dayofweek(ts), count(distinct user_id) from impressions group by 1").fetchall()
    )  # 0 = Sunday
    weekday_mean = np.mean([visits[d] for d in (1, 2, 3, 4)])
    assert visits[6] > weekday_mean and visits[0] > weekday_mean


def test_run_continues_from_where_it_stopped(tmp_path):
    settings = SimSettings(seed=4, **SMALL)
    whole = Simulation(settings).run(RandomPolicy(seed=1), 4, tmp_path / "whole")
    sim = Simulation(settings)
    policy = RandomPolicy(seed=1)
    first = sim.run(policy, 2, tmp_path / "split")
    second = sim.run(policy, 2, tmp_path / "split")
    assert [d.day for d in first.days + second.days] == [0, 1, 2, 3]
    assert [d.saves for d in whole.days] == [d.saves for d in first.days + second.days]
    assert files(tmp_path / "whole") == files(tmp_path / "split")


def test_compare_policies_runs_each_on_the_same_world(tmp_path):
    settings = SimSettings(seed=9, **SMALL)
    policies = [make_baseline(name, seed=9) for name in ("random", "chronological")]
    results = compare_policies(settings, policies, 3, {p.name: tmp_path / p.name for p in policies})
    assert [r.policy for r in results] == ["random", "chronological"]
    # Same world: the same users sign up under both policies, and the same items are published on the first
    # day; from then on creators respond to the engagement each policy brought them (so the catalogues part).
    assert files(tmp_path / "random" / "users") == files(tmp_path / "chronological" / "users")
    first = "date=2026-03-02"
    assert files(tmp_path / "random" / "items" / first) == files(tmp_path / "chronological" / "items" / first)
    summary = results[1].summary()
    assert summary["fresh_share"] > 0.9  # chronological shows today's items
    assert results[0].summary()["fresh_share"] < 0.2
    assert 0 < summary["return_rate"] < 1


def test_a_failed_run_leaves_the_previous_logs_in_place(tmp_path):
    settings = SimSettings(seed=9, **SMALL)
    out = tmp_path / "logs"
    compare_policies(settings, [RandomPolicy(seed=1)], 2, {"random": out})
    before = files(out)

    class Exploding(RandomPolicy):
        def rank(self, requests):
            if self._batches == 1:
                raise RuntimeError("model server down")
            return super().rank(requests)

    with pytest.raises(RuntimeError, match="model server down"):
        compare_policies(settings, [Exploding(seed=1)], 3, {"random": out})
    assert files(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp directories left behind


class Broken(RandomPolicy):
    """A random policy that breaks the slate contract in one chosen way."""

    def __init__(self, breakage: str, world=None):
        super().__init__(seed=0)
        self.breakage, self.world = breakage, world

    def rank(self, requests):
        s = super().rank(requests)
        item, position, propensity = s.item_id.copy(), s.position.copy(), s.propensity.copy()
        if self.breakage == "duplicate":
            item[1] = item[0]
        elif self.breakage == "unknown":
            item[0] = len(self.catalogue) + 10_000
        elif self.breakage == "future":  # the first request is the day's earliest; the day's last item is not out
            item[0] = self.world.n_items - 1
        elif self.breakage == "propensity":
            propensity[0] = 0.0
        elif self.breakage == "positions":
            position[0] = 3
        return SlateBatch(s.request_index, position, item, propensity, model_version="broken")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("duplicate", "twice"),
        ("unknown", "unknown item_id"),
        ("future", "before it was created"),
        ("propensity", "propensity"),
        ("positions", "positions"),
    ],
)
def test_a_policy_that_breaks_the_slate_contract_is_refused(breakage, message):
    sim = Simulation(SimSettings(seed=2, **SMALL))
    with pytest.raises(PolicyError, match=message):
        sim.run(Broken(breakage, sim.world), 1)


def test_an_object_that_is_not_a_policy_is_refused():
    with pytest.raises(PolicyError, match="not a feed policy"):
        Simulation(SimSettings(seed=2, **SMALL)).run(object(), 1)
