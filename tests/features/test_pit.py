"""Point-in-time joins: a value is joined only once it was known, and missing values stay visible."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from homefeed.config import EtlSettings, FeatureSettings
from homefeed.data.lake import Lake
from homefeed.features.definitions import FeatureError, FeatureSet, catalogue, feature_set
from homefeed.features.pit import join_frame, query, register_sources
from homefeed.schema import ITEMS, TIMESTAMP
from tests.conftest import etl_world

START = dt.date(2026, 3, 2)
ETL = EtlSettings(windows=[1, 7])
T0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def one(name: str) -> FeatureSet:
    return FeatureSet("test", (catalogue(ETL)[name],))


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


@pytest.fixture
def planted(tmp_path) -> tuple[Lake, Lake]:
    """One item, two item_stats snapshots: an old one, and one that becomes known one second after T0."""
    lake = Lake(tmp_path / "lake")
    created = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    item = {"item_id": 1, "creator_id": 5, "topic": "art", "created_at": created, "content": [], "safety_label": "safe"}
    lake.append("items", pa.Table.from_pylist([item], schema=ITEMS), ["test"])
    etl = Lake(tmp_path / "etl")
    lag = catalogue(ETL)["item_save_rate_7d"].lag
    for date, known_at, rate in (
        (day(7), T0 - dt.timedelta(hours=5), 0.1),
        (day(8), T0 + dt.timedelta(seconds=1), 0.987),
    ):
        rows = pa.table(
            {
                "item_id": pa.array([1], pa.int64()),
                "save_rate_7d": [rate],
                "valid_from": pa.array([known_at - lag], TIMESTAMP),
            }
        )
        etl.commit("item_stats", date, etl.stage("item_stats", date, rows, ["test"]))
    return lake, etl


def impressions_at(*times: dt.datetime, item: int = 1, user: int = 9) -> pa.Table:
    return pa.table(
        {
            "request_id": [f"r{i}" for i in range(len(times))],
            "ts": pa.array(times, TIMESTAMP),
            "user_id": pa.array([user] * len(times), pa.int64()),
            "item_id": pa.array([item] * len(times), pa.int64()),
        }
    )


def test_a_value_known_one_second_after_the_impression_is_not_joined(planted, con):
    lake, etl = planted
    rows = join_frame(one("item_save_rate_7d"), etl, lake, impressions_at(T0, T0 + dt.timedelta(seconds=1)), con)
    got = rows.order("ts").to_arrow_table()
    assert got["item_save_rate_7d"].to_pylist() == pytest.approx([0.1, 0.987])
    assert got["item_missing"].to_pylist() == [0, 0]


def test_a_value_older_than_its_ttl_is_missing_and_flagged(planted, con):
    lake, etl = planted
    feature = catalogue(ETL)["item_save_rate_7d"]
    late = T0 + dt.timedelta(seconds=1) + feature.ttl
    before = T0 - dt.timedelta(hours=6)  # before any snapshot was known
    got = join_frame(one("item_save_rate_7d"), etl, lake, impressions_at(before, late), con).order("ts")
    table = got.to_arrow_table()
    assert table["item_save_rate_7d"].to_pylist() == [feature.default, feature.default]
    assert table["item_missing"].to_pylist() == [1, 1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Lake, Lake]:
    root = tmp_path_factory.mktemp("pit")
    return etl_world(root, ETL, days=6, seed=4, users=1_200, items_per_day=250, creators=100)


def test_impressions_get_the_latest_snapshot_known_at_their_time(world, con):
    lake, etl = world
    fs = feature_set("default", ETL, FeatureSettings(lag_minutes=8 * 60))
    impressions = lake.read("impressions", day(4), day(4))
    joined = join_frame(fs, etl, lake, impressions, con).to_arrow_table()
    assert joined.num_rows == impressions.num_rows
    known = dt.datetime.combine(day(4), dt.time(8), dt.UTC)  # with an 8-hour lag, day 3's snapshot is known from 08:00
    for snapshot_day, rows in ((day(3), pc.greater_equal(joined["ts"], known)), (day(2), pc.less(joined["ts"], known))):
        part = joined.filter(rows)
        assert part.num_rows > 0
        stats = etl.read("user_profile", snapshot_day, snapshot_day)
        expected = dict(zip(stats["user_id"].to_pylist(), stats["impressions_7d"].to_pylist(), strict=True))
        got = part["user_impressions_7d"].to_numpy()
        want = np.array([expected.get(u, 0) for u in part["user_id"].to_pylist()], dtype=np.float32)
        np.testing.assert_array_equal(got, want)
        missing = np.array([u not in expected for u in part["user_id"].to_pylist()])
        np.testing.assert_array_equal(part["user_missing"].to_numpy() == 1, missing)


def test_every_feature_and_flag_is_a_column_in_the_declared_order(world, con):
    lake, etl = world
    fs = feature_set("default", ETL)
    impressions = lake.read("impressions", day(5), day(5)).slice(0, 500)
    joined = join_frame(fs, etl, lake, impressions, con).to_arrow_table()
    tail = joined.column_names[-len(fs.columns) :]
    assert tail == fs.columns and len(fs.features) >= 35  # two windows here; about fifty with the default three
    for name in fs.names:
        assert joined[name].null_count == 0, name
    assert pc.min(joined["context_item_age_hours"]).as_py() >= 0
    assert set(joined["context_hour_of_day"].to_pylist()) <= set(range(24))


def test_cold_start_items_are_flagged_not_mistaken_for_unpopular_ones(world, con):
    lake, etl = world
    items = lake.read("items", day(5), day(5))
    impressions = lake.read("impressions", day(5), day(5))
    fresh = impressions.filter(pc.is_in(impressions["item_id"], items["item_id"]))
    assert fresh.num_rows > 0
    joined = join_frame(feature_set("default", ETL), etl, lake, fresh, con).to_arrow_table()
    assert set(joined["item_missing"].to_pylist()) == {1}  # created today: no snapshot known yet


def test_unknown_features_sets_and_sources_are_clear_errors(world, tmp_path, con):
    lake, _ = world
    with pytest.raises(FeatureError, match="unknown feature\\(s\\) item_shares_7d"):
        feature_set("mine", ETL, FeatureSettings(sets={"mine": ["item_save_rate_7d", "item_shares_7d"]}))
    with pytest.raises(FeatureError, match="unknown feature set 'nope'"):
        feature_set("nope", ETL)
    with pytest.raises(FeatureError, match="no item_stats snapshots"):
        join_frame(one("item_save_rate_7d"), Lake(tmp_path / "empty"), lake, impressions_at(T0), con)
    with pytest.raises(FeatureError, match="lack column\\(s\\) user_id"):
        join_frame(one("item_save_rate_7d"), world[1], lake, impressions_at(T0).drop_columns(["user_id"]), con)


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("request_id", "ascending"), ("position", "ascending")])


def test_the_portable_join_gives_the_asof_join_rows(world, con, tmp_path):
    """The equi-join form Spark runs is checked against DuckDB's ASOF join on DuckDB itself."""
    lake, etl = world
    fs = feature_set("default", ETL, FeatureSettings(ttl_hours=50))  # three candidate days per source
    impressions = lake.read("impressions", day(3), day(5))
    register_sources(con, fs, etl, lake)
    con.register("imps", impressions)
    keep = tuple(impressions.column_names)
    asof = _sorted(con.sql(query(fs, "imps", keep=keep)).to_arrow_table())
    portable = _sorted(con.sql(query(fs, "imps", keep=keep, portable=True)).to_arrow_table())
    assert asof.num_rows == impressions.num_rows
    assert portable.equals(asof)
    assert 0 < pc.mean(asof["user_topic_missing"]).as_py() < 1  # both paths exercised: found and missing
