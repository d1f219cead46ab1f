"""Declared user, item and user_item features on Spark: the same snapshots and the same joined rows as DuckDB."""

from __future__ import annotations

import datetime as dt

import pyarrow.dataset as ds

from homefeed.data.etl import DuckDBEngine, SparkEngine
from homefeed.features.definitions import feature_set
from homefeed.features.pit import write_joined
from tests.features.test_declared_entities import ETL, NAMES, START, run, settings, write_lake


def test_spark_computes_and_joins_the_declared_features_duckdb_does(tmp_path):
    lake = write_lake(tmp_path / "lake")
    fast = {"spark.sql.codegen.wholeStage": "false", "spark.sql.adaptive.enabled": "false"}
    spark = SparkEngine("local[2]", shuffle_partitions=1, conf=fast)
    try:
        on_spark = run(lake, tmp_path / "spark_etl", settings(), spark)
        on_duckdb = run(lake, tmp_path / "duckdb_etl", settings())
        last = START + dt.timedelta(days=3)
        for name in ("user_declared", "item_declared", "user_item_declared"):
            a, b = on_duckdb.read(name, START, last), on_spark.read(name, START, last)
            assert a.num_rows > 0 and a.equals(b), name
        fs = feature_set("all", ETL, settings())
        write_joined(fs, on_duckdb, lake, START, last, tmp_path / "duckdb", DuckDBEngine())
        write_joined(fs, on_duckdb, lake, START, last, tmp_path / "spark", spark)
    finally:
        spark.close()
    order = [("request_id", "ascending")]
    a = ds.dataset(str(tmp_path / "duckdb"), format="parquet").to_table().sort_by(order)
    b = ds.dataset(str(tmp_path / "spark"), format="parquet").to_table().sort_by(order)
    assert a.num_rows == 6 and a.num_rows == b.num_rows
    for name in [*NAMES, *fs.flags]:
        assert a[name].equals(b[name].cast(a[name].type)), name
    assert a["user_a"].null_count < a.num_rows  # the categories made it through, as strings
