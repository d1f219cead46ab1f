"""Shared fixtures: the simulator is the fixture factory; data is generated, never committed."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from homefeed.config import SimSettings
from homefeed.data.lake import Lake
from homefeed.sim import Simulation, make_baseline


def run_world(out: Path, policy: str = "random", days: int = 7, **overrides) -> Simulation:
    """Simulate ``days`` days under a baseline policy and write the logs to ``out``."""
    settings = SimSettings(**overrides)
    sim = Simulation(settings)
    sim.run(make_baseline(policy, seed=settings.seed, max_age_days=settings.item_lifetime_days), days, out)
    return sim


def lake_of(logs_root: Path, lake_root: Path) -> Lake:
    """A lake holding a simulation's logs, appended as they are (they are canonical; ingestion is tested apart)."""
    lake = Lake(lake_root)
    for table in ("users", "items", "impressions", "engagements"):
        for part in sorted((logs_root / table).rglob("*.parquet")):
            lake.append(table, pq.read_table(part, partitioning=None), [str(part)])
    return lake


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
