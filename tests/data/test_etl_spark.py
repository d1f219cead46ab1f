"""The same ETL jobs on Spark (local mode) give the same snapshots as on DuckDB."""

from __future__ import annotations

import datetime as dt

import pytest

from homefeed.data.etl import DuckDBEngine, Params, SparkEngine, outputs, run_etl
from homefeed.data.lake import Lake
from tests.conftest import assert_same_table, load_lake, run_world

START = dt.date(2026, 3, 2)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    root = tmp_path_factory.mktemp("etl_spark")
    run_world(root / "logs", "random", days=5, users=600, items_per_day=150, creators=60, seed=9)
    return load_lake(root / "logs", root / "lake")


@pytest.mark.parametrize("first", [1, 4], ids=["backfill", "daily run"])  # one day: no join with the snapshot days
def test_spark_and_duckdb_write_identical_snapshots(lake, tmp_path, first):
    params = Params(start=START + dt.timedelta(days=first), end=START + dt.timedelta(days=4), windows=(1, 3))
    on_duckdb, on_spark = Lake(tmp_path / "duckdb"), Lake(tmp_path / "spark")
    # Tiny data: code generation and adaptive planning cost more than they save here.
    fast = {"spark.sql.codegen.wholeStage": "false", "spark.sql.adaptive.enabled": "false"}
    engine = SparkEngine("local[2]", shuffle_partitions=1, conf=fast)
    try:
        spark_report = run_etl(lake, on_spark, params, engine)
    finally:
        engine.close()
    duck_report = run_etl(lake, on_duckdb, params, DuckDBEngine())
    assert spark_report.rows == duck_report.rows and all(duck_report.rows.values())
    for name in outputs(params):
        a, b = on_duckdb.read(name), on_spark.read(name)
        assert a.schema == b.schema, name
        # Same formulas; transcendental functions (POWER) may differ in the last bit between the JVM and C.
        assert_same_table(a, b, name, rtol=1e-12)
