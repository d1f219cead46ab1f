"""The train/serve skew check finds and names a feature computed differently online."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from homefeed.config import EtlSettings
from homefeed.data.lake import Lake
from homefeed.features.definitions import FeatureError, feature_set
from homefeed.features.pit import join_frame
from homefeed.features.skew import skew
from tests.conftest import etl_world

START = dt.date(2026, 3, 2)
ETL = EtlSettings(windows=[1, 7])


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Lake, Lake]:
    root = tmp_path_factory.mktemp("skew")
    return etl_world(root, ETL, days=6, seed=6, users=1_200, items_per_day=250, creators=100)


def served(world, transform: dict[str, object] | None = None, rows: int = 3_000) -> pa.Table:
    """A sample of day-5 impressions with the feature vector 'the service' scored, as it logs it."""
    lake, etl = world
    fs = feature_set("default", ETL)
    order = [("request_id", "ascending"), ("position", "ascending")]
    sample = lake.read("impressions", day(5), day(5)).slice(0, rows).sort_by(order)
    con = duckdb.connect()
    vectors = join_frame(fs, etl, lake, sample, con).to_arrow_table().sort_by(order)
    con.close()
    matrix = np.column_stack([vectors[c].to_numpy().astype(np.float64) for c in fs.columns])
    for name, fn in (transform or {}).items():
        j = fs.columns.index(name)
        matrix[:, j] = fn(matrix[:, j])  # type: ignore[operator]
    n, k = matrix.shape
    logged = pa.MapArray.from_arrays(
        pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), pa.array(np.tile(fs.columns, n)), pa.array(matrix.ravel())
    )
    index = sample.schema.get_field_index("served_features")
    return sample.set_column(index, sample.schema.field(index), logged)


def test_features_served_as_computed_offline_raise_no_flag(world):
    report = skew(served(world), feature_set("default", ETL), world[1], world[0])
    assert len(report) == len(feature_set("default", ETL).columns)
    assert [r.feature for r in report if r.flagged] == []
    assert max(r.mismatch_share for r in report) == 0.0


def test_a_feature_computed_differently_online_is_found_and_named(world):
    online = served(world, {"item_save_rate_7d": lambda x: x * 1.3, "user_topic_affinity": lambda x: np.zeros_like(x)})
    report = {r.feature: r for r in skew(online, feature_set("default", ETL), world[1], world[0])}
    flagged = sorted(name for name, r in report.items() if r.flagged)
    assert flagged == ["item_save_rate_7d", "user_topic_affinity"]
    assert report["item_save_rate_7d"].mismatch_share > 0.9
    assert "differ" in report["user_topic_affinity"].reason


def test_impressions_without_a_log_are_a_clear_error(world):
    lake, etl = world
    with pytest.raises(FeatureError, match="no impressions with served_features"):
        skew(lake.read("impressions", day(5), day(5)), feature_set("default", ETL), etl, lake)
