"""Declared user, item and user_item features through the serving pipeline: the table the model is given equals
the offline point-in-time join's for the same user, item and time, categories as strings."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa

from homefeed.config import FeatureSettings
from homefeed.data.etl import DuckDBEngine, Params, run_etl
from homefeed.data.lake import Lake
from homefeed.features.definitions import CATEGORY, FeatureSet, catalogue
from homefeed.features.materialize import materialize
from homefeed.features.pit import join_frame
from homefeed.features.sqlite_store import SqliteStore
from homefeed.features.vectors import Hydrated
from homefeed.serve.model import ServingModel
from tests.serve.conftest import SERVE_DAY, SERVE_TS_US, active_users, make_pipeline, requests_for, settings_for

DECLARED = [
    {"name": "user_home_country", "entity": "user", "source": "users.country", "transformation": "categorical"},
    {"name": "item_topic_category", "entity": "item", "source": "items.topic", "transformation": "categorical"},
    {
        "name": "user_saves_3d",
        "entity": "user",
        "source": "engagements",
        "transformation": "count",
        "window_days": 3,
        "action": "save",
    },
    {
        "name": "item_closeup_rate_3d_declared",
        "entity": "item",
        "source": "engagements",
        "transformation": "rate",
        "window_days": 3,
        "action": "closeup",
        "default": -1.0,
    },
    {
        "name": "user_item_impressions_7d",
        "entity": "user_item",
        "source": "impressions",
        "transformation": "count",
        "window_days": 7,
        "lag_minutes": 30,
    },
]


class Recorder:
    """A ranker that keeps the table it is given and scores every row the same."""

    def __init__(self, columns: list[str]):
        self.features = columns
        self.tables: list[pa.Table] = []

    def predict_hydrated(self, rows: Hydrated) -> dict[str, np.ndarray]:
        table = rows.table()  # what a model reading tables is given
        self.tables.append(table)
        return {"engaged": np.zeros(table.num_rows)}

    def combine(self, heads: dict[str, np.ndarray]) -> np.ndarray:
        return heads["engaged"]


def test_the_served_table_equals_the_offline_join_for_declared_features(served_world, tmp_path):
    settings = settings_for(served_world, tmp_path)
    features = FeatureSettings(**{**settings.features.model_dump(), "declared": DECLARED})
    settings = settings.model_copy(update={"features": features})
    lake = Lake(settings.resolved_paths.lake)
    etl = Lake(tmp_path / "etl")
    last = SERVE_DAY - dt.timedelta(days=1)
    run_etl(lake, etl, Params.from_settings(settings.etl, last, last, features), DuckDBEngine())
    cat = catalogue(settings.etl, features)
    fs = FeatureSet("declared", tuple(cat[d["name"]] for d in DECLARED))
    with SqliteStore(settings.resolved_paths.online_store) as store:
        materialize(fs, etl, store)
    pipeline = make_pipeline(settings)
    recorder = Recorder(fs.columns)
    pipeline.model = lambda: ServingModel("declared-test", recorder, fs)  # type: ignore[arg-type]
    requests = requests_for(active_users(settings, 40))
    served = pipeline.serve(requests)
    assert not served.trace.degraded, served.trace.degraded
    (online,) = recorder.tables
    cands = served.candidates
    impressions = pa.table(
        {
            "request_id": pa.array([f"c{i}" for i in range(len(cands))]),
            "ts": pa.array(np.full(len(cands), SERVE_TS_US)).cast(pa.timestamp("us", tz="UTC")),
            "user_id": pa.array(np.asarray(requests.user_id)[cands.request_index]),
            "item_id": pa.array(served.item_id),
            "_row": pa.array(np.arange(len(cands))),
        }
    )
    con = duckdb.connect()
    try:
        offline = join_frame(fs, etl, lake, impressions, con).order("_row").to_arrow_table()
    finally:
        con.close()
    assert online.num_rows == offline.num_rows > 100
    for name in fs.columns:
        feature = next((f for f in fs.features if f.name == name), None)
        if feature is not None and feature.dtype == CATEGORY:
            assert online[name].type == pa.string()
            assert online[name].to_pylist() == offline[name].to_pylist(), name
        else:
            np.testing.assert_array_equal(
                online[name].to_numpy(), offline[name].to_numpy().astype(np.float32), err_msg=name
            )
    assert online["item_topic_category"].null_count < online.num_rows
    assert 0 < np.count_nonzero(online["user_item_impressions_7d"].to_numpy()) < online.num_rows
