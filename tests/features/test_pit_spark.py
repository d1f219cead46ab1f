"""The point-in-time join on Spark (the portable form, transpiled) writes the rows DuckDB's ASOF join writes."""

from __future__ import annotations

import datetime as dt

import pyarrow.dataset as ds

from homefeed.config import EtlSettings
from homefeed.data.etl import DuckDBEngine, Params, SparkEngine, run_etl
from homefeed.data.lake import Lake
from homefeed.features.definitions import feature_set
from homefeed.features.pit import write_joined
from tests.conftest import load_lake, run_world

START = dt.date(2026, 3, 2)
ETL = EtlSettings(windows=[1, 3])


def test_spark_and_duckdb_join_the_same_feature_values(tmp_path):
    run_world(tmp_path / "logs", "random", days=4, users=500, items_per_day=120, creators=50, seed=3)
    lake = load_lake(tmp_path / "logs", tmp_path / "lake")
    etl = Lake(tmp_path / "etl")
    run_etl(lake, etl, Params.from_settings(ETL, START, START + dt.timedelta(days=3)), DuckDBEngine())
    fs = feature_set("default", ETL)
    first, last = START + dt.timedelta(days=2), START + dt.timedelta(days=3)
    write_joined(fs, etl, lake, first, last, tmp_path / "duckdb", DuckDBEngine(), chunk_days=1)
    fast = {"spark.sql.codegen.wholeStage": "false", "spark.sql.adaptive.enabled": "false"}
    engine = SparkEngine("local[2]", shuffle_partitions=1, conf=fast)
    try:
        write_joined(fs, etl, lake, first, last, tmp_path / "spark", engine)
    finally:
        engine.close()
    order = [("request_id", "ascending"), ("position", "ascending")]
    a = ds.dataset(str(tmp_path / "duckdb"), format="parquet").to_table().sort_by(order)
    b = ds.dataset(str(tmp_path / "spark"), format="parquet").to_table().sort_by(order)
    assert a.num_rows > 1_000 and a.num_rows == b.num_rows
    for name in [*fs.columns, "topic", "creator_id", "user_id", "item_id", "ts"]:
        assert a[name].equals(b[name].cast(a[name].type)), name
