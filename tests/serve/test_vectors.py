"""Online features equal offline features: the vectors the pipeline serves are the point-in-time join's."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.data.lake import Lake
from homefeed.features.definitions import feature_set
from homefeed.features.pit import join_frame
from homefeed.features.skew import skew
from tests.serve.conftest import active_users, make_pipeline, requests_for, settings_for


def _served_rows(world, tmp_path, cached):
    settings = settings_for(world, tmp_path, served_features_sample=1.0)
    pipeline = make_pipeline(settings, cached=cached)
    requests = requests_for(active_users(settings, 150))
    served = pipeline.serve(requests)
    assert not served.trace.degraded
    slates = served.slates
    assert len(slates) and slates.served_features is not None
    impressions = pa.table(
        {
            "request_id": requests.request_id.take(pa.array(slates.request_index)),
            "ts": pa.array(requests.ts[slates.request_index]).cast(pa.timestamp("us", tz="UTC")),
            "user_id": pa.array(requests.user_id[slates.request_index]),
            "item_id": pa.array(slates.item_id),
            "served_features": slates.served_features_column(),
        }
    )
    return settings, impressions


def _offline(settings, impressions):
    fs = feature_set("default", settings.etl, settings.features)
    paths = settings.resolved_paths
    con = duckdb.connect()
    try:
        keyed = impressions.append_column("_row", pa.array(np.arange(impressions.num_rows)))
        rows = join_frame(fs, Lake(paths.etl), Lake(paths.lake), keyed.drop(["served_features"]), con)
        return fs, rows.order("_row").to_arrow_table()
    finally:
        con.close()


def test_served_vectors_equal_the_offline_join_for_the_same_user_item_and_time(served_world, tmp_path):
    """Every feature and every missing flag, bit for bit, from the store read per request and from the caches."""
    for cached in (("item", "creator"), ("item", "creator", "user", "user_topic", "user_creator")):
        settings, impressions = _served_rows(served_world, tmp_path / "-".join(cached), cached)
        fs, offline = _offline(settings, impressions)
        served = impressions["served_features"]
        for name in fs.columns:
            got = pc.map_lookup(served, pa.scalar(name), "first").to_numpy(zero_copy_only=False).astype(np.float32)
            want = offline[name].to_numpy(zero_copy_only=False).astype(np.float32)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} (cached: {cached})")
        flags = [c for c in fs.columns if c.endswith("_missing")]
        assert any(offline[f].to_numpy().any() for f in flags), "some rows should miss a source (cold items)"
        assert any((offline[f].to_numpy() == 0).any() for f in flags)


def test_the_skew_check_runs_on_serving_logs_and_finds_no_skew(served_world, tmp_path):
    settings, impressions = _served_rows(served_world, tmp_path, ("item", "creator"))
    paths = settings.resolved_paths
    fs = feature_set("default", settings.etl, settings.features)
    report = skew(impressions, fs, Lake(paths.etl), Lake(paths.lake))
    assert {r.feature for r in report} == set(fs.columns)
    assert not [r.feature for r in report if r.flagged]
    assert all(r.mismatch_share == 0 for r in report)
