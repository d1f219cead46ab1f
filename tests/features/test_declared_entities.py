"""Declared user, item and user x item features: attributes and windowed aggregations through the ETL's snapshots.

A tiny lake written by hand (two users, two items, four days) so that every value below is a hand computation:
each kind equals it in the snapshot and in the point-in-time join, events at or after an impression (or inside
the lag) change nothing it is joined, and bad declarations are refused before a snapshot is written.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from homefeed.config import EtlSettings, FeatureSettings
from homefeed.config.stages import DeclaredFeature
from homefeed.data.etl import DuckDBEngine, Params, run_etl
from homefeed.data.etl.declared import DeclaredError
from homefeed.data.lake import Lake
from homefeed.features.definitions import (
    CATEGORY,
    FeatureError,
    catalogue,
    drop_groups,
    entity_groups,
    feature_set,
)
from homefeed.features.pit import join_frame
from homefeed.schema import ENGAGEMENTS, IMPRESSIONS, ITEMS, TIMESTAMP, USERS

START = dt.date(2026, 3, 2)
ETL = EtlSettings(windows=[1, 2])
U1, U2, U3 = 11, 12, 13
I1, I2 = 101, 102
DECLARED = [
    {"name": "user_a", "entity": "user", "source": "users.attributes", "key": "a", "transformation": "categorical"},
    {"name": "user_n", "entity": "user", "source": "users.attributes", "key": "n", "default": -1.0},
    {"name": "user_country", "entity": "user", "source": "users.country", "transformation": "categorical"},
    {"name": "item_q", "entity": "item", "source": "items.content", "key": "q"},
    {"name": "item_topic", "entity": "item", "source": "items.topic", "transformation": "categorical"},
    {
        "name": "user_clicks_2d",
        "entity": "user",
        "source": "engagements",
        "transformation": "count",
        "window_days": 2,
        "action": "click",
    },
    {
        "name": "item_ctr_2d",
        "entity": "item",
        "source": "engagements",
        "transformation": "rate",
        "window_days": 2,
        "action": "click",
        "default": -1.0,
    },
    {
        "name": "user_item_impressions_3d",
        "entity": "user_item",
        "source": "impressions",
        "transformation": "count",
        "window_days": 3,
    },
    {
        "name": "item_mean_position_2d",
        "entity": "item",
        "source": "impressions.position",
        "transformation": "mean",
        "window_days": 2,
    },
    {
        "name": "user_last_dwell_3d",
        "entity": "user",
        "source": "engagements.dwell",
        "transformation": "last",
        "window_days": 3,
    },
    {
        "name": "user_mean_affinity_3d",
        "entity": "user",
        "source": "impressions.served_features",
        "key": "aff",
        "transformation": "mean",
        "window_days": 3,
    },
    {  # a count of a map key's values: the impressions that logged it
        "name": "user_affinity_logged_3d",
        "entity": "user",
        "source": "impressions.served_features",
        "key": "aff",
        "transformation": "count",
        "window_days": 3,
    },
]
NAMES = [d["name"] for d in DECLARED]


def at(day: int, hour: float) -> dt.datetime:
    return dt.datetime.combine(START + dt.timedelta(days=day), dt.time(), dt.UTC) + dt.timedelta(hours=hour)


def settings(declared: list[dict] = DECLARED) -> FeatureSettings:
    return FeatureSettings(declared=[DeclaredFeature(**d) for d in declared])


#: (user, item, day, hour, position, served_features)
IMPRESSIONS_ROWS = [
    (U1, I1, 0, 10, 1, {"aff": 1.0}),
    (U1, I1, 1, 10, 2, {"aff": 3.0}),
    (U2, I1, 1, 12, 4, None),
    (U1, I1, 2, 10, 3, {"other": 9.0}),
    (U2, I2, 2, 9, 2, None),
    (U1, I2, 3, 8, 1, None),  # day 3: in no snapshot an impression of day 3 reads
]
#: (user, item, day, hour, action, dwell)
ENGAGEMENT_ROWS = [
    (U1, I1, 1, 10.1, "click", 5.0),
    (U1, I1, 2, 10.1, "save", None),
    (U2, I2, 2, 9.02, "click", 7.0),
    (U1, I2, 3, 8.1, "click", 1.0),
]


def write_lake(root: Path, extra_impressions=(), extra_engagements=()) -> Lake:
    lake = Lake(root)
    users = [
        {"user_id": U1, "signup_at": at(-5, 0), "country": "BR", "attributes": [("a", "x"), ("n", "3.5")]},
        {"user_id": U2, "signup_at": at(-4, 0), "country": "US", "attributes": [("a", "y")]},
    ]
    lake.append("users", pa.Table.from_pylist(users, schema=USERS), ["test"])
    items = [
        {"item_id": I1, "creator_id": 1, "topic": "art", "created_at": at(-3, 0), "content": [("q", 0.5)]},
        {"item_id": I2, "creator_id": 2, "topic": "food", "created_at": at(-2, 0), "content": [("q", 2.0)]},
    ]
    lake.append("items", pa.Table.from_pylist([i | {"safety_label": "safe"} for i in items], schema=ITEMS), ["test"])
    impressions = [
        {
            "request_id": f"r{n}",
            "ts": at(day, hour),
            "user_id": user,
            "item_id": item,
            "surface": "home",
            "position": position,
            "model_version": "m",
            "served_features": list(served.items()) if served else None,
        }
        for n, (user, item, day, hour, position, served) in enumerate([*IMPRESSIONS_ROWS, *extra_impressions])
    ]
    lake.append("impressions", pa.Table.from_pylist(impressions, schema=IMPRESSIONS), ["test"])
    engagements = [
        {"ts": at(day, hour), "user_id": user, "item_id": item, "request_id": "r", "action": action, "dwell": dwell}
        for user, item, day, hour, action, dwell in [*ENGAGEMENT_ROWS, *extra_engagements]
    ]
    lake.append("engagements", pa.Table.from_pylist(engagements, schema=ENGAGEMENTS), ["test"])
    return lake


def run(lake: Lake, etl_root: Path, features: FeatureSettings, engine=None) -> Lake:
    etl = Lake(etl_root)
    params = Params.from_settings(ETL, START, START + dt.timedelta(days=3), features)
    run_etl(lake, etl, params, engine or DuckDBEngine())
    return etl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Lake, Lake]:
    root = tmp_path_factory.mktemp("declared")
    lake = write_lake(root / "lake")
    return lake, run(lake, root / "etl", settings())


def probe(*rows: tuple[int, int, dt.datetime]) -> pa.Table:
    return pa.table(
        {
            "request_id": [f"p{n}" for n in range(len(rows))],
            "ts": pa.array([r[2] for r in rows], TIMESTAMP),
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "item_id": pa.array([r[1] for r in rows], pa.int64()),
        }
    )


def joined(lake: Lake, etl: Lake, impressions: pa.Table, features: FeatureSettings | None = None) -> dict:
    fs = feature_set("all", ETL, features or settings())
    con = duckdb.connect()
    try:
        return join_frame(fs, etl, lake, impressions, con).order("request_id").to_arrow_table().to_pydict()
    finally:
        con.close()


def test_each_kind_equals_a_hand_computation_in_the_snapshot_of_day_2(tiny):
    _, etl = tiny
    day2 = START + dt.timedelta(days=2)
    users = {r["user_id"]: r for r in etl.read("user_declared", day2, day2).to_pylist()}
    items = {r["item_id"]: r for r in etl.read("item_declared", day2, day2).to_pylist()}
    pairs = {(r["user_id"], r["item_id"]): r for r in etl.read("user_item_declared", day2, day2).to_pylist()}
    # attributes: the latest row; a category as its string, a number parsed, a key the row lacks null
    assert (users[U1]["user_a"], users[U1]["user_n"], users[U1]["user_country"]) == ("x", 3.5, "BR")
    assert (users[U2]["user_a"], users[U2]["user_n"], users[U2]["user_country"]) == ("y", None, "US")
    assert (items[I1]["item_q"], items[I1]["item_topic"], items[I2]["item_q"]) == (0.5, "art", 2.0)
    # clicks of days 1-2: U1 clicked on day 1, U2 on day 2
    assert (users[U1]["user_clicks_2d"], users[U2]["user_clicks_2d"]) == (1.0, 1.0)
    # I1: impressions of days 1-2 are U1 d1, U2 d1, U1 d2 (3), one click; I2: one impression, one click
    assert items[I1]["item_ctr_2d"] == pytest.approx(1 / 3) and items[I2]["item_ctr_2d"] == 1.0
    # positions of days 1-2: I1 2, 4, 3; I2 2
    assert (items[I1]["item_mean_position_2d"], items[I2]["item_mean_position_2d"]) == (3.0, 2.0)
    # impressions of days 0-2 per pair
    assert {k: v["user_item_impressions_3d"] for k, v in pairs.items()} == {(U1, I1): 3.0, (U2, I1): 1.0, (U2, I2): 1.0}
    # the latest dwell of days 0-2 (U1's save of day 2 has none): U1 5 s, U2 7 s
    assert (users[U1]["user_last_dwell_3d"], users[U2]["user_last_dwell_3d"]) == (5.0, 7.0)
    # U1's served "aff" over days 0-2: 1 and 3 (day 2's impression lacks the key); U2's impressions have none
    assert users[U1]["user_mean_affinity_3d"] == 2.0 and users[U2]["user_mean_affinity_3d"] is None
    assert (users[U1]["user_affinity_logged_3d"], users[U2]["user_affinity_logged_3d"]) == (2.0, 0.0)


def test_a_count_falls_to_zero_when_its_events_leave_the_window(tiny):
    _, etl = tiny
    day4 = START + dt.timedelta(days=3)
    users = {r["user_id"]: r for r in etl.read("user_declared", day4, day4).to_pylist()}
    # day 3 snapshot: clicks of days 2-3: U1 clicked I2 on day 3, U2's day-2 click is still inside
    assert (users[U1]["user_clicks_2d"], users[U2]["user_clicks_2d"]) == (1.0, 1.0)
    day1 = START + dt.timedelta(days=1)
    items = {r["item_id"]: r for r in etl.read("item_declared", day1, day1).to_pylist()}
    assert items[I2]["item_ctr_2d"] is None  # no impression of I2 yet: the rate is absent, not 0
    assert items[I2]["item_q"] == 2.0  # while its attribute is known


def test_the_join_reads_the_snapshot_known_at_the_impression_with_defaults_and_flags(tiny):
    lake, etl = tiny
    t = at(3, 12)  # day 2's snapshot is known from day 3 01:00
    got = joined(lake, etl, probe((U1, I1, t), (U2, I2, t), (U2, I1, t), (U3, I1, t)))
    assert got["user_a"] == ["x", "y", "y", None]  # a category is a string; an unknown user's is null
    assert got["user_n"] == [3.5, -1.0, -1.0, -1.0]  # U2 lacks the key: its default
    assert got["user_clicks_2d"] == [1.0, 1.0, 1.0, 0.0]
    assert got["item_ctr_2d"] == pytest.approx([1 / 3, 1.0, 1 / 3, 1 / 3])
    assert got["user_item_impressions_3d"] == [3.0, 1.0, 1.0, 0.0]
    assert got["user_last_dwell_3d"] == [5.0, 7.0, 7.0, 0.0]
    assert got["user_declared_missing"] == [0, 0, 0, 1]
    assert got["item_declared_missing"] == [0, 0, 0, 0]
    assert got["user_item_declared_missing"] == [0, 0, 0, 1]


def test_events_at_or_after_the_impression_or_inside_the_lag_change_nothing_joined(tiny, tmp_path):
    lake, etl = tiny
    noon, early = at(3, 12), at(3, 0.5)  # early: day 2's snapshot is not known yet (lag 60 min)
    at_noon, at_early = probe((U1, I1, noon), (U2, I2, noon)), probe((U2, I1, early), (U1, I1, early))
    day3 = (  # inside the lag of noon, at noon, after it
        [(U1, I1, 3, 11.5, 1, {"aff": 100.0}), (U1, I1, 3, 12, 1, {"aff": 100.0}), (U2, I2, 3, 13, 5, None)],
        [(U1, I1, 3, 11.9, "click", 99.0), (U1, I1, 3, 12, "click", 99.0), (U2, I2, 3, 13, "click", 99.0)],
    )
    late_day2 = ([(U2, I1, 2, 23.9, 9, None)], [(U2, I1, 2, 23.95, "click", 99.0)])  # known at day 3 01:00
    for n, (planted, probes) in enumerate([(day3, [at_noon, at_early]), (late_day2, [at_early])]):
        leaky = write_lake(tmp_path / f"lake{n}", *planted)
        leaky_etl = run(leaky, tmp_path / f"etl{n}", settings())
        for impressions in probes:
            clean, dirty = joined(lake, etl, impressions), joined(leaky, leaky_etl, impressions)
            for name in NAMES:
                assert dirty[name] == clean[name], (n, name)
    # the late day-2 events did reach the snapshots: once known (noon), they count
    assert joined(leaky, leaky_etl, probe((U2, I1, noon)))["user_item_impressions_3d"] == [2.0]
    assert joined(leaky, leaky_etl, probe((U2, I1, noon)))["user_clicks_2d"] == [2.0]


def test_declared_features_are_listed_grouped_and_typed():
    cat = catalogue(ETL, settings())
    assert cat["user_a"].dtype == CATEGORY == "string" and cat["user_n"].dtype == "float32"
    assert {cat[n].source for n in NAMES} == {"user_declared", "item_declared", "user_item_declared"}
    assert cat["user_clicks_2d"].lag == dt.timedelta(minutes=60) and cat["user_clicks_2d"].ttl == dt.timedelta(hours=36)
    fs = feature_set("all", ETL, settings())
    groups = entity_groups(fs.columns)
    assert groups["user_item"] == 2  # user_item_impressions_3d and user_item_declared_missing, not the user's
    kept, dropped = drop_groups(["user"], fs.columns)
    assert "user_item_impressions_3d" in kept and "user_a" in dropped and "user_declared_missing" in dropped
    assert set(NAMES) <= set(feature_set("default", ETL, settings()).names)


def test_a_declaration_change_recomputes_the_snapshots(tiny, tmp_path):
    lake, _ = tiny
    etl = run(lake, tmp_path / "etl", settings(DECLARED[:2]))
    params = Params.from_settings(ETL, START, START + dt.timedelta(days=3), settings(DECLARED[:3]))
    report = run_etl(lake, etl, params, DuckDBEngine())
    assert len(report.computed) == 4
    day = START + dt.timedelta(days=2)
    assert "user_country" in etl.read("user_declared", day, day).column_names


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (
            {"name": "user_b", "entity": "user", "source": "users.attributes", "key": "nope"},
            "no row of users has the key 'nope' in attributes; keys there include 'a', 'n'",
        ),
        (
            {"name": "user_a_number", "entity": "user", "source": "users.attributes", "key": "a"},
            "users.attributes['a'] holds 'x', not a number: declare it transformation = \"categorical\"",
        ),
        (
            {
                "name": "item_mean_nope_2d",
                "entity": "item",
                "source": "impressions.served_features",
                "key": "nope",
                "transformation": "mean",
                "window_days": 2,
            },
            "no row of impressions has the key 'nope' in served_features",
        ),
    ],
)
def test_a_declaration_the_data_cannot_give_is_refused_before_anything_is_written(tiny, tmp_path, declared, expected):
    lake, _ = tiny
    with pytest.raises(DeclaredError, match="declared feature") as err:
        run(lake, tmp_path / "etl", settings([declared]))
    assert expected in str(err.value)
    assert not any((tmp_path / "etl").rglob("*.parquet"))


def test_mean_of_text_and_a_reused_name_are_refused():
    bad = {"name": "user_m", "entity": "user", "source": "impressions.surface", "transformation": "mean"}
    with pytest.raises(FeatureError, match=r"mean reads a number; impressions\.surface is not one"):
        catalogue(ETL, settings([{**bad, "window_days": 2}]))
    with pytest.raises(FeatureError, match="a built-in feature has that name"):
        catalogue(ETL, settings([{"name": "user_impressions_2d", "entity": "user", "source": "users.country"}]))


def test_snapshots_computed_before_a_declaration_are_a_clear_error_not_a_missing_column(tiny, tmp_path):
    lake, _ = tiny
    etl = run(lake, tmp_path / "etl", settings(DECLARED[:2]))  # without user_country
    with pytest.raises(FeatureError, match=r"has no column for declared feature\(s\) user_country.*homefeed data etl"):
        joined(lake, etl, probe((U1, I1, at(3, 12))), settings(DECLARED[:3]))


def test_a_changed_declaration_changes_the_feature_set_version():
    """A model trained on a 2-day count must not be served a 3-day one under the same name."""
    changed = [{**d, "window_days": 3} if d["name"] == "user_clicks_2d" else d for d in DECLARED]
    versions = {feature_set("all", ETL, settings(x)).version for x in (DECLARED, changed, DECLARED)}
    assert len(versions) == 2
