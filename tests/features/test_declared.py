"""Features declared in homefeed.toml from the logs' own columns, on the bundled Open Bandit sample (random/men).

OBD logs each impression's user-item affinities in ``impressions.served_features``; a declared feature reads a key
of it, or reduces its values (how many are non-zero: the signal the sample holds), or another impression column.
Each is checked against a hand computation from the CSV; bad declarations are refused before anything is written.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from homefeed.cli import main
from homefeed.config import EtlSettings, FeatureSettings, Paths, Settings
from homefeed.config.stages import DeclaredFeature
from homefeed.datasets import open_bandit_sample
from homefeed.features.definitions import FeatureError, FeatureSet, catalogue, drop_groups, feature_set, is_declared
from homefeed.features.vectors import assemble
from homefeed.train import DatasetError, DatasetSpec, DatasetStore, build_dataset
from tests.conftest import OBD_FIRST, OBD_LAST, ingest_obd_week
from tests.test_cli import assert_one_line_error

FIRST, LAST = OBD_FIRST, OBD_LAST
ETL = EtlSettings(windows=[1, 7])
MAP = "impressions.served_features"
DECLARED = [
    {"name": "context_affinity_nonzero", "source": MAP, "transformation": "count_nonzero"},
    {"name": "context_affinity_sum", "source": MAP, "transformation": "sum"},
    {"name": "context_affinity_max", "source": MAP, "transformation": "max", "default": -1.0},
    {"name": "context_affinity_5", "source": MAP, "key": "user-item_affinity_5"},
    {"name": "context_propensity", "source": "impressions.propensity"},
]
OWN = ["item_impressions_7d", "user_impressions_7d", "context_hour_of_day", *(d["name"] for d in DECLARED)]


def settings_for(root: Path, declared: list[dict] = DECLARED) -> Settings:
    features = FeatureSettings(sets={"own": OWN}, declared=[DeclaredFeature(**d) for d in declared])
    return Settings(paths=Paths(root=root), etl=ETL, features=features)


def spec(settings: Settings) -> DatasetSpec:
    data = {"start": FIRST + dt.timedelta(days=1), "end": LAST, "feature_set": "own"}
    return DatasetSpec(**{**settings.dataset.model_dump(), **data})


@pytest.fixture(scope="module")
def obd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("obd")
    ingest_obd_week(settings_for(root))
    return root


def test_each_declared_feature_equals_a_hand_computation_from_the_csv(obd):
    settings = settings_for(obd)
    built = build_dataset(spec(settings), settings)
    rows = pd.concat([pq.read_table(built.path / f"{s}.parquet").to_pandas() for s in ("train", "validation", "test")])
    assert {d["name"] for d in DECLARED} <= set(built.manifest["feature_set"]["columns"])
    csv = pd.read_csv(open_bandit_sample("random/men") / "men.csv.gz", index_col=0)
    affinity = csv[[c for c in csv.columns if c.startswith("user-item_affinity_")]].to_numpy()
    logged = csv.loc[rows["request_id"].str.rsplit("-", n=1).str[-1].astype(int)]
    picked = affinity[logged.index.to_numpy()]
    np.testing.assert_array_equal(rows["context_affinity_nonzero"], (picked != 0).sum(axis=1).astype(np.float32))
    np.testing.assert_allclose(rows["context_affinity_sum"], picked.sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(rows["context_affinity_max"], picked.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(rows["context_affinity_5"], logged["user-item_affinity_5"], rtol=1e-6)
    np.testing.assert_allclose(rows["context_propensity"], logged["propensity_score"], rtol=1e-6)
    # the sample's signal: a few percent of rows have any non-zero affinity
    assert 0 < (rows["context_affinity_nonzero"] > 0).mean() < 0.2


def test_declared_features_are_listed_and_grouped_as_context(obd, tmp_path, capsys):
    settings = settings_for(obd)
    fs = feature_set("own", settings.etl, settings.features)
    assert {f.name: f.entity for f in fs.features if f.name.startswith("context_affinity")} == dict.fromkeys(
        ["context_affinity_nonzero", "context_affinity_sum", "context_affinity_max", "context_affinity_5"], "context"
    )
    kept, dropped = drop_groups(["context"], fs.columns)
    assert "item_impressions_7d" in kept
    assert set(dropped) == {"context_hour_of_day", *(d["name"] for d in DECLARED)}
    assert "context_affinity_nonzero" in feature_set("default", settings.etl, settings.features).names
    project = tmp_path / "homefeed.toml"
    project.write_text(
        f'[paths]\nroot = "{obd}"\n[[features.declared]]\nname = "context_affinity_nonzero"\n'
        f'source = "{MAP}"\ntransformation = "count_nonzero"\n',
        encoding="utf-8",
    )
    assert main(["features", "list", "-c", str(project)]) == 0
    listed = capsys.readouterr().out
    assert "context_affinity_nonzero" in listed and "impressions.served_features" in listed


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ({"name": "context_x", "source": "impressions.nope"}, "unknown column in source 'impressions.nope'"),
        ({"name": "context_x", "source": "clicks.dwell"}, "unknown table in source 'clicks.dwell'"),
        ({"name": "context_x", "source": "users.country"}, "a context feature's value comes from impressions"),
        ({"name": "context_x", "source": MAP}, "is a map: give a key"),
        ({"name": "context_x", "source": MAP, "key": "a", "transformation": "sum"}, "no key"),
        ({"name": "x_affinity", "source": MAP, "transformation": "sum"}, "must start with its entity, context_"),
        ({"name": "user_item_x", "entity": "user", "source": "users.country"}, "must start with its entity, user_"),
        ({"name": "user_x", "entity": "user", "source": MAP, "transformation": "sum"}, "a context feature, no key"),
        ({"name": "context_x", "source": MAP, "transformation": "mean"}, "aggregations describe user, item"),
        ({"name": "context_x", "source": MAP, "transformation": "sum", "windw": 7}, "windw"),
        ({"name": "user_clicks", "entity": "user", "source": "engagements", "transformation": "count"}, "window_days"),
        (
            {"name": "user_c", "entity": "user", "source": "engagements", "transformation": "count", "window_days": 0},
            "window_days >= 1",
        ),
        (
            {"name": "item_r", "entity": "item", "source": "impressions", "transformation": "rate", "window_days": 7},
            "source 'engagements', action",
        ),
        (
            {
                "name": "user_c",
                "entity": "user",
                "source": "engagements",
                "transformation": "count",
                "window_days": 7,
                "action": "like",
            },
            "action 'like' filters engagements",
        ),
        ({"name": "user_item_a", "entity": "user_item", "source": MAP, "cross": "affinity_"}, "'{item_id}'"),
        ({"name": "context_a", "source": MAP, "cross": "affinity_{item_id}"}, "a cross is a user_item feature"),
        ({"name": "user_a", "entity": "user", "source": "users.attributes"}, "is a map: give a key"),
        ({"name": "item_t", "entity": "item", "source": "items.topic", "window_days": 3}, "window_days belongs"),
        ({"name": "context_p", "source": "impressions.position", "ttl_hours": 3}, "has no TTL"),
    ],
)
def test_a_bad_declaration_is_refused_naming_what_is_wrong(declared, expected):
    with pytest.raises(ValidationError, match=expected):
        DeclaredFeature(**declared)


def test_two_features_with_one_name_or_a_built_in_name_are_refused():
    twice = [{"name": "context_a", "source": MAP, "transformation": "sum"}] * 2
    with pytest.raises(ValidationError, match="two features named 'context_a'"):
        FeatureSettings(declared=twice)
    clash = FeatureSettings(declared=[{"name": "context_hour_of_day", "source": "impressions.position"}])
    with pytest.raises(FeatureError, match="'context_hour_of_day': a built-in feature has that name"):
        catalogue(ETL, clash)


def test_a_key_no_impression_has_is_refused_before_anything_is_written(obd, tmp_path):
    declared = [{"name": "context_affinity_999", "source": MAP, "key": "user-item_affinity_999"}]
    settings = settings_for(obd, declared)
    settings = settings.model_copy(update={"paths": Paths(root=obd, datasets=tmp_path / "ds")})
    own = FeatureSettings(sets={"own": ["item_impressions_7d", "context_affinity_999"]}, declared=declared)
    settings = settings.model_copy(update={"features": own})
    with pytest.raises(DatasetError, match=r"key 'user-item_affinity_999' is in no impression's served_features"):
        build_dataset(spec(settings), settings)
    assert DatasetStore(tmp_path / "ds").ids() == []


def test_a_bad_declaration_in_the_project_file_is_one_error_line(tmp_path, capsys):
    project = tmp_path / "homefeed.toml"
    project.write_text(
        f'[[features.declared]]\nname = "context_x"\nsource = "{MAP}"\ntransformation = "sum"\nwindow = 0\n',
        encoding="utf-8",
    )
    assert main(["features", "list", "-c", str(project)]) == 2
    assert_one_line_error(capsys.readouterr().err, "window")


def test_serving_refuses_a_declared_feature_by_name_rather_than_guess_it():
    """A request does not carry the impression's logged map yet: the feature stage fails, naming the feature."""
    settings = settings_for(Path("."))
    fs = FeatureSet("declared", tuple(f for f in feature_set("own", ETL, settings.features).features if is_declared(f)))
    with pytest.raises(
        FeatureError, match=r"declared feature 'context_affinity_nonzero' reads impressions\.served_feat"
    ):
        assemble(fs, {}, np.array([0], np.int64), np.array([0], np.int64))


@pytest.mark.parametrize(
    "declared",
    [
        {
            "name": "user_gender",
            "entity": "user",
            "source": "users.attributes",
            "key": "user_feature_0",
            "transformation": "categorical",
        },
        {"name": "item_price", "entity": "item", "source": "items.content", "key": "item_feature_0"},
        {"name": "item_topic", "entity": "item", "source": "items.topic", "transformation": "categorical"},
        {"name": "user_item_affinity", "entity": "user_item", "source": MAP, "cross": "user-item_affinity_{item_id}"},
        {
            "name": "user_clicks_7d",
            "entity": "user",
            "source": "engagements",
            "transformation": "count",
            "action": "click",
            "window_days": 7,
        },
        {
            "name": "item_click_rate_3d",
            "entity": "item",
            "source": "engagements",
            "transformation": "rate",
            "action": "click",
            "window_days": 3,
            "lag_minutes": 30,
        },
        {
            "name": "user_item_last_position",
            "entity": "user_item",
            "source": "impressions.position",
            "transformation": "last",
            "window_days": 28,
            "ttl_hours": 72,
        },
    ],
)
def test_each_shape_of_declaration_is_accepted(declared):
    d = DeclaredFeature(**declared)
    assert d.at_impression == (d.entity == "context" or d.cross is not None)
    assert d.is_aggregation == (d.window_days is not None)
