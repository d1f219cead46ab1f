"""Training fixtures: datasets built from simulated logs, where the truth behind every label is known."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from homefeed.config import EtlSettings, Paths, Settings
from homefeed.data.etl import DuckDBEngine, Params, run_etl
from homefeed.data.lake import Lake
from homefeed.sim import Simulation
from homefeed.train import DatasetSpec, DatasetStore, build_dataset
from homefeed.train.model import TrainingData
from tests.conftest import load_lake, run_world

ETL = EtlSettings(windows=[1, 7])
START = Settings().sim.start_date


@dataclass
class World:
    """A simulated world's settings (paths under a temporary root), its simulation, and one dataset of it."""

    settings: Settings
    sim: Simulation  # its ground_truth() says what each logged impression was really worth
    data: TrainingData


def build(root: Path, policy: str, days: int = 8, seed: int = 21, **overrides: object) -> World:
    """``days`` of ``policy``'s feeds → lake → ETL → a dataset of days 1..days-1 (the last two: validation, test)."""
    settings = Settings(paths=Paths(root=root), etl=ETL)
    params = {"users": 3_000, "items_per_day": 400, "creators": 200, **overrides}
    sim = run_world(root / "logs", policy, days=days, seed=seed, **params)
    lake = load_lake(root / "logs", root / "lake")
    last = START + dt.timedelta(days=days - 1)
    run_etl(lake, Lake(root / "etl"), Params.from_settings(ETL, START, last), DuckDBEngine())
    spec = DatasetSpec(
        **{
            **settings.dataset.model_dump(),
            "start": START + dt.timedelta(days=1),
            "end": START + dt.timedelta(days=days - 1),
            "feature_set": "default",
        }
    )
    built = build_dataset(spec, settings)
    return World(settings, sim, TrainingData.load(DatasetStore(settings.resolved_paths.datasets), built.id))


@pytest.fixture(scope="session")
def random_world(tmp_path_factory) -> World:
    """Uniformly random feeds: unbiased by position or by the ranker's choices."""
    return build(tmp_path_factory.mktemp("random_world"), "random")


@pytest.fixture(scope="session")
def ranked_world(tmp_path_factory) -> World:
    """A popularity ranker's feeds: the top slots hold what the old system liked."""
    return build(tmp_path_factory.mktemp("ranked_world"), "popular")


@pytest.fixture(scope="session")
def explored_world(tmp_path_factory) -> World:
    """The popularity ranker with a fifth of requests served at random: exact propensities from 1/N to 1."""
    return build(tmp_path_factory.mktemp("explored_world"), "popular+explore")
