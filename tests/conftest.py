"""Shared fixtures: the simulator is the fixture factory; data is generated, never committed."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from hypothesis import settings

from homefeed.config import EtlSettings, Settings, SimSettings
from homefeed.data.etl import DuckDBEngine, Params, run_etl, snapshot_lake
from homefeed.data.lake import Lake
from homefeed.data.open_bandit import ingest_open_bandit
from homefeed.datasets import open_bandit_sample
from homefeed.schema import TABLES, TIME_COLUMN
from homefeed.sim import Simulation, make_baseline

# Property tests explore new inputs on every local run (that is how they find bugs: a `null` line crashing Arrow's
# JSON reader was one); CI runs the same examples every time (``HOMEFEED_HYPOTHESIS=ci``, set by .ci/run), so a
# submission is judged on the code, not on which inputs were drawn that day.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HOMEFEED_HYPOTHESIS", "default"))


def run_world(out: Path, policy: str = "random", days: int = 7, **overrides) -> Simulation:
    """Simulate ``days`` days under a baseline policy and write the logs to ``out``."""
    settings = SimSettings(**overrides)
    sim = Simulation(settings)
    sim.run(make_baseline(policy, seed=settings.seed, max_age_days=settings.item_lifetime_days), days, out)
    return sim


def load_lake(
    logs_root: Path, lake_root: Path, tables: tuple[str, ...] = tuple(TABLES), skip: dict[str, str] | None = None
) -> Lake:
    """Put simulated logs into a lake as they are (canonical already), without ingestion's contracts.

    ``skip`` maps a table to a day (YYYY-MM-DD) left out of the lake, as if that day had not been loaded.
    """
    lake = Lake(lake_root)
    for table in tables:
        rows = ds.dataset(str(logs_root / table), schema=TABLES[table], format="parquet").to_table()
        if skip and table in skip:
            day = pc.strftime(rows[TIME_COLUMN[table]], format="%Y-%m-%d")
            rows = rows.filter(pc.not_equal(day, skip[table]))
        lake.append(table, rows, [str(logs_root / table)])
    return lake


def shifted(rows: pa.Table, column: str, by: dt.timedelta) -> pa.Table:
    """``rows`` with the timestamps of ``column`` moved by ``by``: the same events, logged at another time."""
    moved = pc.add(rows[column], pa.scalar(by, pa.duration("us")))
    return rows.set_column(rows.schema.get_field_index(column), column, moved.cast(rows.schema.field(column).type))


def logs(con: duckdb.DuckDBPyConnection, root: Path) -> duckdb.DuckDBPyConnection:
    """Register the four log tables of ``root`` as DuckDB views, as an analyst would read them."""
    for table in ("users", "items", "impressions", "engagements"):
        if (root / table).exists():
            con.sql(
                f"create or replace view {table} as select * exclude (date) from "
                f"read_parquet('{root / table}/*/*.parquet', hive_partitioning = true)"
            )
    return con


@pytest.fixture(scope="session")
def random_logs(tmp_path_factory) -> tuple[Simulation, Path]:
    """A week of uniformly random feeds: the exploration logs analysts learn position bias from."""
    out = tmp_path_factory.mktemp("random_logs")
    sim = run_world(out, "random", days=7, users=15_000, items_per_day=2_000, seed=11)
    return sim, out


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    yield connection
    connection.close()


def etl_world(root: Path, etl: EtlSettings, days: int, seed: int, **sim: object) -> tuple[Lake, Lake]:
    """A simulated world's lake and its ETL snapshots for every simulated day: what the features stage reads."""
    from homefeed.data.etl import DuckDBEngine, Params, run_etl

    sim_settings = SimSettings(**sim)
    run_world(root / "logs", "random", days=days, seed=seed, **sim)
    lake = load_lake(root / "logs", root / "lake")
    features = Lake(root / "etl")
    first = sim_settings.start_date
    run_etl(lake, features, Params.from_settings(etl, first, first + dt.timedelta(days=days - 1)), DuckDBEngine())
    return lake, features


def assert_same_table(a: pa.Table, b: pa.Table, label: str, rtol: float = 0.0) -> None:
    """Equal row for row: exact for every column, or within ``rtol`` for floating-point ones."""
    assert a.num_rows == b.num_rows, label
    for col in a.column_names:
        x, y = a[col], b[col]
        if rtol and pa.types.is_floating(x.type):
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=rtol, err_msg=f"{label}.{col}")
        else:
            assert x.equals(y), f"{label}.{col}"


#: The bundled Open Bandit samples' week.
OBD_FIRST, OBD_LAST = dt.date(2019, 11, 24), dt.date(2019, 11, 30)


def ingest_obd_week(settings: Settings, sample: str = "random/men") -> None:
    """A bundled Open Bandit sample ingested into ``settings``' lake, and its week of ETL snapshots computed."""
    paths = settings.resolved_paths
    lake = Lake(paths.lake)
    ingest_open_bandit(open_bandit_sample(sample), lake, paths.quarantine)
    run_etl(
        lake,
        snapshot_lake(paths.etl),
        Params.from_settings(settings.etl, OBD_FIRST, OBD_LAST, settings.features),
        DuckDBEngine(),
    )
