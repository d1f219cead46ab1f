"""A request's context features: what the client sends with it (``context.features``), carried through the batch
to hydration, where declared context features and crosses read them (tests/features/test_declared_impression.py
checks the values equal the offline join's)."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from homefeed.config import FeatureSettings
from homefeed.data.lake import Lake
from homefeed.features.definitions import feature_set
from homefeed.features.pit import join_frame
from homefeed.feed import SERVED_FEATURES_TYPE, RequestBatch
from homefeed.serve.api import FeedRequest, _context_features
from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import TrainingData
from homefeed.train.registry import Registry
from tests.serve.conftest import active_users, make_pipeline, requests_for, settings_for


def test_a_request_carries_its_context_features_as_the_impression_map():
    body = FeedRequest(user_id=7, context={"features": {"user-item_affinity_5": 0.25, "user-item_affinity_9": 0.0}})
    column = _context_features(body.context.features)
    assert column.type == SERVED_FEATURES_TYPE
    assert column.to_pylist() == [[("user-item_affinity_5", 0.25), ("user-item_affinity_9", 0.0)]]
    assert _context_features(FeedRequest(user_id=7).context.features) is None


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_context_feature_that_is_no_number_is_refused(value):
    with pytest.raises(ValidationError, match="finite"):
        FeedRequest(user_id=7, context={"features": {"a": value}})


def test_a_batch_keeps_each_request_s_context_features_when_taken_or_sliced():
    context = pa.array([[("a", 1.0)], None, [("a", 3.0), ("b", 4.0)]], SERVED_FEATURES_TYPE)
    batch = RequestBatch(
        pa.array(["r0", "r1", "r2"]),
        np.arange(3, dtype=np.int64),
        np.zeros(3, np.int64),
        np.full(3, 5, np.int32),
        pa.array(["JP"] * 3),
        "home",
        context,
    )
    assert batch.take(np.array([2, 0])).context_features.to_pylist() == [[("a", 3.0), ("b", 4.0)], [("a", 1.0)]]
    assert batch.slice(1, 3).context_features.to_pylist() == [None, [("a", 3.0), ("b", 4.0)]]
    plain = RequestBatch(batch.request_id, batch.user_id, batch.ts, batch.slate_size, batch.country)
    assert plain.take(np.array([1])).context_features is None


DECLARED = [
    {"name": "context_affinity_sum", "source": "impressions.served_features", "transformation": "sum"},
    {"name": "context_market", "source": "impressions.country", "transformation": "categorical"},
    {
        "name": "user_item_affinity",
        "entity": "user_item",
        "source": "impressions.served_features",
        "cross": "affinity_{item_id}",
    },
]


def test_the_pipeline_serves_declared_context_features_as_the_offline_join_computes_them(served_world, tmp_path):
    """A model trained with declared context features (a number, a category, the cross) is served from what each
    request carries: the logged vectors equal the point-in-time join of the same rows, and nothing degrades."""
    base = settings_for(served_world, tmp_path, private=True, served_features_sample=1.0)
    default = feature_set("default", base.etl, base.features).names
    features = FeatureSettings(sets={"ctx": [*default, *(d["name"] for d in DECLARED)]}, declared=DECLARED)
    settings = base.model_copy(update={"features": features})
    fs = feature_set("ctx", settings.etl, settings.features)
    rng = np.random.default_rng(4)
    splits = {}
    for name, rows in served_world.data.splits.items():
        n = rows.num_rows
        rows = rows.append_column("context_affinity_sum", pa.array(rng.random(n).astype(np.float32)))
        rows = rows.append_column("context_market", pa.array(rng.choice(["US", "BR", "JP"], n)))
        splits[name] = rows.append_column("user_item_affinity", pa.array(rng.random(n).astype(np.float32)))
    data = TrainingData("ctx", fs.columns, splits, {"feature_set": {"version": fs.version}})
    model = GBDTRanker(n_estimators=10, min_category_count=5, seed=1).fit(data)
    assert set(model.categories.values) == {"context_market"}
    registry = Registry.of(settings)
    registry.alias("production", registry.register(model, data).version, "tests: declared context features")
    pipeline = make_pipeline(settings)
    users = active_users(settings, 40)
    items = pipeline.catalogue.item_id[: len(pipeline.catalogue)]
    maps = [[(f"affinity_{i}", float(v)) for i, v in zip(items, rng.random(len(items)), strict=True)] for _ in users]
    maps[0] = None  # a request that sent no context features
    plain = requests_for(users)
    requests = RequestBatch(
        plain.request_id, plain.user_id, plain.ts, plain.slate_size, plain.country, plain.surface,
        pa.array(maps, SERVED_FEATURES_TYPE),
    )  # fmt: skip
    served = pipeline.serve(requests)
    assert not served.trace.degraded and served.trace.fallback is None
    slates = served.slates
    at = pa.array(slates.request_index)
    impressions = pa.table(
        {
            "request_id": requests.request_id.take(at),
            "ts": pa.array(requests.ts[slates.request_index]).cast(pa.timestamp("us", tz="UTC")),
            "user_id": pa.array(requests.user_id[slates.request_index]),
            "item_id": pa.array(slates.item_id),
            "country": requests.country.take(at),
            "served_features": requests.context_features.take(at),
            "_row": pa.array(np.arange(len(slates))),
        }
    )
    paths = settings.resolved_paths
    with duckdb.connect() as con:
        offline = join_frame(fs, Lake(paths.etl), Lake(paths.lake), impressions, con).order("_row").to_arrow_table()
    logged = slates.served_features_column()
    for name in ("context_affinity_sum", "user_item_affinity"):
        got = pc.map_lookup(logged, pa.scalar(name), "first").to_numpy(zero_copy_only=False).astype(np.float32)
        np.testing.assert_array_equal(got, offline[name].to_numpy(zero_copy_only=False), err_msg=name)
    first = slates.request_index == 0
    assert (offline["context_affinity_sum"].to_numpy()[first] == 0).all()  # no map: the default
    assert (offline["user_item_affinity"].to_numpy()[~first] > 0).all()  # every shown item has its key
    assert offline["context_market"].to_pylist() == ["US"] * len(slates)
