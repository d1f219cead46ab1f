"""Declared features known at the impression (context values, categories, the user x item cross) on the bundled
Open Bandit sample: the same values on DuckDB and Spark, a hand computation of the cross, and serving's twin.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from homefeed.config import EtlSettings, FeatureSettings, Paths, Settings
from homefeed.config.stages import DeclaredFeature
from homefeed.data.etl import DuckDBEngine, SparkEngine, snapshot_lake
from homefeed.data.lake import Lake
from homefeed.datasets import open_bandit_sample
from homefeed.features.definitions import (
    FeatureError,
    FeatureSet,
    at_impression,
    catalogue,
    feature_set,
    is_categorical,
)
from homefeed.features.pit import write_joined
from homefeed.features.vectors import AtImpression, assemble, hydrate
from homefeed.train import DatasetError, DatasetSpec, DatasetStore, build_dataset
from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import TrainingData
from tests.conftest import OBD_FIRST, OBD_LAST, ingest_obd_week

MAP = "impressions.served_features"
CROSS = {"name": "user_item_affinity", "entity": "user_item", "source": MAP, "cross": "user-item_affinity_{item_id}"}
DECLARED = [
    {"name": "context_affinity_nonzero", "source": MAP, "transformation": "count_nonzero"},
    {"name": "context_affinity_sum", "source": MAP, "transformation": "sum"},
    {"name": "context_affinity_max", "source": MAP, "transformation": "max", "default": -1.0},
    {"name": "context_affinity_5", "source": MAP, "key": "user-item_affinity_5"},
    {"name": "context_surface", "source": "impressions.surface", "transformation": "categorical"},
    {"name": "context_country", "source": "impressions.country", "transformation": "categorical"},
    {"name": "context_slot", "source": "impressions.position", "transformation": "categorical"},
    CROSS,
]
NAMES = [d["name"] for d in DECLARED]
ETL = EtlSettings(windows=[1, 7])
FIRST, LAST = OBD_FIRST + dt.timedelta(days=1), OBD_LAST


def settings_for(root: Path, declared: list[dict] = DECLARED, extra: tuple[str, ...] = ()) -> Settings:
    names = ["item_impressions_7d", *extra, *(d["name"] for d in declared)]
    features = FeatureSettings(sets={"own": names}, declared=[DeclaredFeature(**d) for d in declared])
    return Settings(paths=Paths(root=root), etl=ETL, features=features)


@pytest.fixture(scope="module")
def obd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("obd")
    ingest_obd_week(settings_for(root))
    return root


def joined(settings: Settings, out: Path, engine: DuckDBEngine | SparkEngine) -> pa.Table:
    paths = settings.resolved_paths
    fs = feature_set("own", settings.etl, settings.features)
    write_joined(fs, snapshot_lake(paths.etl), Lake(paths.lake), FIRST, LAST, out, engine)
    order = [("request_id", "ascending"), ("position", "ascending")]
    return ds.dataset(str(out), format="parquet").to_table().sort_by(order)


def test_the_catalogue_types_categories_as_strings_and_the_cross_as_a_user_item_number(obd):
    cat = catalogue(ETL, settings_for(obd).features)
    assert [n for n in NAMES if is_categorical(cat[n])] == ["context_surface", "context_country", "context_slot"]
    assert cat["user_item_affinity"].entity == "user_item" and at_impression(cat["user_item_affinity"])
    assert all(at_impression(cat[n]) for n in NAMES)


def test_the_cross_reads_the_affinity_named_by_the_shown_item(obd, tmp_path):
    rows = joined(settings_for(obd), tmp_path / "duckdb", DuckDBEngine()).to_pandas()
    csv = pd.read_csv(open_bandit_sample("random/men") / "men.csv.gz", index_col=0)
    logged = csv.loc[rows["request_id"].str.rsplit("-", n=1).str[-1].astype(int)]
    by_item = logged.to_numpy()[
        np.arange(len(logged)), [logged.columns.get_loc(f"user-item_affinity_{i}") for i in logged["item_id"]]
    ].astype(np.float64)
    np.testing.assert_allclose(rows["user_item_affinity"], by_item, rtol=1e-6)
    assert 5 <= (by_item != 0).sum() <= 30  # the sample's few rows with an affinity for the shown item itself
    assert rows["context_surface"].unique().tolist() == ["men"] and rows["context_country"].unique().tolist() == ["JP"]
    np.testing.assert_array_equal(rows["context_slot"], logged["position"].astype(str))


def test_spark_and_duckdb_join_the_same_declared_values(obd, tmp_path):
    settings = settings_for(obd)
    a = joined(settings, tmp_path / "duckdb", DuckDBEngine())
    fast = {"spark.sql.codegen.wholeStage": "false", "spark.sql.adaptive.enabled": "false"}
    engine = SparkEngine("local[2]", shuffle_partitions=1, conf=fast)
    try:
        b = joined(settings, tmp_path / "spark", engine)
    finally:
        engine.close()
    assert a.num_rows > 1_000 and a.num_rows == b.num_rows
    for name in [*NAMES, "item_impressions_7d", "request_id", "item_id"]:
        assert a[name].type == b[name].type or pa.types.is_string(a[name].type), name
        assert a[name].equals(b[name].cast(a[name].type)), name
    assert (a["user_item_affinity"].to_numpy() != 0).any()


def test_a_cross_whose_keys_no_impression_has_is_refused_before_anything_is_written(obd, tmp_path):
    declared = [{**CROSS, "cross": "user-item_affinty_{item_id}"}]
    settings = settings_for(obd, declared)
    settings = settings.model_copy(update={"paths": Paths(root=obd, datasets=tmp_path / "ds")})
    spec = DatasetSpec(**{**settings.dataset.model_dump(), "start": FIRST, "end": LAST, "feature_set": "own"})
    with pytest.raises(
        DatasetError,
        match=r"cross .user-item_affinty_\{item_id\}. names no key of any impression.s served_features by its shown",
    ):
        build_dataset(spec, settings)
    assert DatasetStore(tmp_path / "ds").ids() == []


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ({"name": "context_p", "source": "impressions.propensity", "transformation": "categorical"}, "declare it raw"),
        (
            {"name": "context_a", "source": MAP, "key": "user-item_affinity_5", "transformation": "categorical"},
            "a category is read from impressions.surface",
        ),
        ({"name": "context_s", "source": "impressions.surface"}, "is text, not a number: declare it categorical"),
    ],
)
def test_a_category_of_a_number_or_a_number_of_text_is_refused(declared, expected):
    with pytest.raises(FeatureError, match=expected):
        catalogue(ETL, FeatureSettings(declared=[declared]))


def test_served_values_equal_the_offline_join_for_the_same_rows(obd, tmp_path):
    """Hydration computes each declared feature from what a request carries (its context features, surface and
    country) and the candidate, bit for bit the offline join's; the slot, decided after scoring, is refused."""
    settings = settings_for(obd)
    rows = joined(settings, tmp_path / "duckdb", DuckDBEngine())
    cat = catalogue(ETL, settings.features)
    fs = FeatureSet("served", tuple(cat[n] for n in NAMES if n != "context_slot"), missing_flags=False)
    known = AtImpression(
        np.arange(rows.num_rows),
        rows["item_id"].to_numpy(),
        rows["served_features"].combine_chunks(),
        {"surface": rows["surface"].combine_chunks(), "country": rows["country"].combine_chunks()},
    )
    ts = np.zeros(rows.num_rows, np.int64)
    table = hydrate(fs, assemble(fs, {}, ts, ts, known), known)
    for name in fs.columns:
        assert table[name].type == rows[name].type, name
        assert table[name].combine_chunks().equals(rows[name].combine_chunks()), name
    slot = FeatureSet("slot", (cat["context_slot"],), missing_flags=False)
    with pytest.raises(
        FeatureError, match=r"'context_slot' reads impressions\.position, which the policy decides after"
    ):
        hydrate(slot, assemble(slot, {}, ts, ts, known), known)
    # a request that sent no context features: every number its default, every category null
    none = AtImpression(known.request_index, known.item_id, None, known.columns)
    empty = hydrate(fs, assemble(fs, {}, ts, ts, none), none)
    assert pc.all(pc.equal(empty["context_affinity_max"], -1.0)).as_py()
    assert pc.all(pc.equal(empty["user_item_affinity"], 0.0)).as_py()


def test_a_dataset_keeps_categories_as_strings_and_the_gbdt_codes_them(obd, tmp_path):
    settings = settings_for(obd)
    settings = settings.model_copy(update={"paths": Paths(root=obd, datasets=tmp_path / "ds")})
    spec = DatasetSpec(**{**settings.dataset.model_dump(), "start": FIRST, "end": LAST, "feature_set": "own"})
    built = build_dataset(spec, settings)
    data = TrainingData.load(DatasetStore(tmp_path / "ds"), built.id)
    train = data.splits["train"]
    assert [n for n in NAMES if pa.types.is_string(train.schema.field(n).type)] == [
        "context_surface",
        "context_country",
        "context_slot",
    ]
    stats = built.manifest["stats"]["all"]["features"]["context_slot"]
    assert stats["distinct"] == 3 and stats["null_rate"] == 0.0
    assert not [v for v in built.manifest["violations"] if v["column"] in NAMES]
    model = GBDTRanker(n_estimators=10, min_category_count=5, drop_empty_heads=True).fit(data)  # OBD logs no hides
    assert set(model.categories.values) == {"context_surface", "context_country", "context_slot"}
    assert sorted(model.categories.values["context_slot"]) == ["1", "2", "3"]
    assert np.isfinite(model.predict(data.splits["test"])["engaged"]).all()
