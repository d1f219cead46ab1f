"""Declared user and item features on the bundled Open Bandit sample (random/men), through `dataset build`.

OBD's users carry four hashed features in ``users.attributes`` and its items a number in ``items.content``; a
declared category and a declared number read them as each row's latest snapshot says, and a declared count of the
user's past clicks equals one computed from the CSV with the snapshot rule (day D's snapshot known at D + 1 01:00).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from homefeed.cli import main
from homefeed.config import EtlSettings, FeatureSettings, Paths, Settings
from homefeed.config.stages import DeclaredFeature
from homefeed.datasets import open_bandit_sample
from homefeed.train import DatasetSpec, build_dataset
from tests.conftest import OBD_FIRST, OBD_LAST, ingest_obd_week

DECLARED = [
    {
        "name": "user_segment_0",
        "entity": "user",
        "source": "users.attributes",
        "key": "user_feature_0",
        "transformation": "categorical",
    },
    {"name": "item_feature_0", "entity": "item", "source": "items.content", "key": "item_feature_0"},
    {
        "name": "user_clicks_2d",
        "entity": "user",
        "source": "engagements",
        "transformation": "count",
        "window_days": 2,
        "action": "click",
    },
]
NAMES = [d["name"] for d in DECLARED]


def settings_for(root: Path) -> Settings:
    features = FeatureSettings(
        sets={"own": ["item_impressions_7d", *NAMES]}, declared=[DeclaredFeature(**d) for d in DECLARED]
    )
    return Settings(paths=Paths(root=root), etl=EtlSettings(windows=[1, 7]), features=features)


@pytest.fixture(scope="module")
def obd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("obd_declared")
    ingest_obd_week(settings_for(root))
    return root


def test_declared_attributes_and_counts_equal_the_csv_in_the_dataset(obd):
    settings = settings_for(obd)
    spec = DatasetSpec(
        **{**settings.dataset.model_dump(), "start": OBD_FIRST + dt.timedelta(days=1), "end": OBD_LAST}
        | {"feature_set": "own"}
    )
    built = build_dataset(spec, settings)
    table = pa.concat_tables(pq.read_table(built.path / f"{s}.parquet") for s in ("train", "validation", "test"))
    assert table.schema.field("user_segment_0").type == pa.string()
    assert table.schema.field("item_feature_0").type == table.schema.field("user_clicks_2d").type == pa.float32()
    rows = table.to_pandas()
    csv = pd.read_csv(open_bandit_sample("random/men") / "men.csv.gz", index_col=0, parse_dates=["timestamp"])
    items = pd.read_csv(open_bandit_sample("random/men") / "item_context.csv.gz", index_col=0).set_index("item_id")
    logged = csv.loc[rows["request_id"].str.rsplit("-", n=1).str[-1].astype(int)]
    # the snapshot known at the row's time (lag 60 min); none before the ETL's first day: missing, flagged
    known = ((logged["timestamp"] - pd.Timedelta(hours=1)) - pd.Timestamp("1970-01-01", tz="UTC")).dt.days - 1
    computed = (known >= (OBD_FIRST - dt.date(1970, 1, 1)).days).to_numpy()
    assert 0 < (~computed).sum() < 100
    np.testing.assert_array_equal(rows["user_declared_missing"].to_numpy(), (~computed).astype(np.int8))
    # every user is in every snapshot (its attributes row), so a category is its segment's hash
    want_segment = np.where(computed, logged["user_feature_0"].to_numpy(), None)
    assert table["user_segment_0"].to_pylist() == want_segment.tolist()
    want_item = np.where(computed, items.loc[logged["item_id"], "item_feature_0"].to_numpy(), 0.0)
    np.testing.assert_allclose(rows["item_feature_0"], want_item, rtol=1e-6)
    # clicks of the user's segment on the two days up to that snapshot
    segment = csv[[f"user_feature_{k}" for k in range(4)]].astype(str).agg("|".join, axis=1)
    day = (csv["timestamp"] - pd.Timestamp("1970-01-01", tz="UTC")).dt.days
    clicks = pd.Series(csv["click"].to_numpy(), index=pd.MultiIndex.from_arrays([segment, day])).groupby(level=[0, 1])
    per_day = clicks.sum()
    want = [
        sum(per_day.get((s, d), 0) for d in (k - 1, k)) for s, k in zip(segment.loc[logged.index], known, strict=True)
    ]
    np.testing.assert_array_equal(rows["user_clicks_2d"].to_numpy(), np.array(want, np.float32))
    assert 0 < (rows["user_clicks_2d"] > 0).mean() < 0.5


def test_features_list_shows_declared_user_and_item_features(obd, tmp_path, capsys):
    project = tmp_path / "homefeed.toml"
    project.write_text(
        f'[paths]\nroot = "{obd}"\n[[features.declared]]\nname = "user_segment_0"\nentity = "user"\n'
        'source = "users.attributes"\nkey = "user_feature_0"\ntransformation = "categorical"\n',
        encoding="utf-8",
    )
    assert main(["features", "list", "--all", "-c", str(project)]) == 0
    listed = capsys.readouterr().out
    line = next(line for line in listed.splitlines() if "user_segment_0" in line)
    assert "user_declared" in line and "string" in line and "null" in line
    assert "user_declared_missing" in listed
