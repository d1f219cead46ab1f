"""Serving fixtures: a simulated world trained, registered and materialized, and pipelines over it.

The world is a week of random feeds (exploration logs), its lake, ETL snapshots, a dataset, a small GBDT
registered as ``production`` and the latest snapshot materialized into a SQLite online store: what a service
finds on disk after the daily pipeline ran.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from homefeed.config import Settings
from homefeed.data.lake import Lake
from homefeed.features.definitions import feature_set
from homefeed.features.materialize import materialize
from homefeed.features.sqlite_store import SqliteStore
from homefeed.feed import Feedback, RequestBatch
from homefeed.serve.catalog import ItemCatalogue
from homefeed.serve.model import ModelHolder
from homefeed.serve.pipeline import RankingPipeline
from homefeed.serve.service import signals_for
from homefeed.serve.state import OnlineFeatures, StoreGuard
from homefeed.sim import Simulation
from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import TrainingData
from homefeed.train.registry import Registry
from tests.train.conftest import build

DAYS = 8
#: Serving time in the tests: the day after the last logged day, 14:00 UTC — after the last snapshot became
#: known (01:00) and after the one before it expired (13:00), so the store's latest snapshot is exactly what the
#: offline join picks for every key (see test_vectors).
START = Settings().sim.start_date
SERVE_DAY = START + dt.timedelta(days=DAYS)
SERVE_TS_US = int(dt.datetime.combine(SERVE_DAY, dt.time(14), dt.UTC).timestamp() * 1_000_000)


@dataclass
class ServedWorld:
    root: Path
    settings: Settings
    sim: Simulation
    version: str
    model: GBDTRanker
    data: TrainingData


@pytest.fixture(scope="session")
def served_world(tmp_path_factory) -> ServedWorld:
    root = tmp_path_factory.mktemp("served_world")
    world = build(root, "random", days=DAYS, seed=5)
    model = GBDTRanker(position="feature", n_estimators=60, seed=1).fit(world.data)
    registry = Registry.of(world.settings)
    version = registry.register(model, world.data).version
    registry.alias("production", version, "tests: the served model")
    fs = feature_set("default", world.settings.etl, world.settings.features)
    with SqliteStore(world.settings.resolved_paths.online_store) as store:
        materialize(fs, Lake(world.settings.resolved_paths.etl), store)
    return ServedWorld(root, world.settings, world.sim, version, model, world.data)


def settings_for(world: ServedWorld, root: Path | None = None, private: bool = False, **serve: object) -> Settings:
    """The world's settings with ``serve`` overrides.

    ``root`` gives the settings a copy of the world's online store there; ``private`` also copies the lake (hard
    links), the quarantine and the registry, for tests that write logs or move aliases.
    """
    data = world.settings.model_dump()
    data["serve"].update(serve)
    if root is None:
        return Settings(**data)
    root.mkdir(parents=True, exist_ok=True)
    paths = world.settings.resolved_paths
    data["paths"]["online_store"] = root / "online.sqlite"
    shutil.copy(paths.online_store, root / "online.sqlite")
    if private:
        shutil.copytree(paths.lake, root / "lake", copy_function=os.link)
        shutil.copytree(paths.models, root / "models")
        shutil.copy(paths.registry, root / "registry.sqlite")
        data["paths"].update(
            lake=root / "lake",
            quarantine=root / "quarantine",
            models=root / "models",
            registry=root / "registry.sqlite",
        )
    return Settings(**data)


def make_pipeline(settings: Settings, cached: tuple[str, ...] = ("item", "creator"), seed: int = 0) -> RankingPipeline:
    """A pipeline over the world's lake, registry and online store, as the simulator would run it."""
    paths = settings.resolved_paths
    guard = StoreGuard(SqliteStore(paths.online_store), retry_s=settings.serve.store_retry_seconds)
    features = OnlineFeatures(guard, cached)
    holder = ModelHolder(Registry.of(settings), settings.serve.model, settings)
    assert holder.check(), holder.error
    pipeline = RankingPipeline(
        settings.serve, ItemCatalogue(), features, signals_for(guard, settings), holder, seed=seed, budgets=False
    )
    lake = Lake(paths.lake)
    pipeline.observe(Feedback(items=lake.read("items")))
    pipeline.refresh()
    return pipeline


def requests_for(users: np.ndarray, ts_us: int = SERVE_TS_US, size: int = 20, surface: str = "home") -> RequestBatch:
    users = np.asarray(users, np.int64)
    return RequestBatch(
        request_id=pa.array([f"test-{i}" for i in range(len(users))], pa.string()),
        user_id=users,
        ts=np.full(len(users), ts_us, np.int64),
        slate_size=np.full(len(users), size, np.int32),
        country=pa.array(["US"] * len(users), pa.string()),
        surface=surface,
    )


def active_users(settings: Settings, n: int) -> np.ndarray:
    """Users with history in the lake (so every entity of the feature set has something to find)."""
    users = Lake(settings.resolved_paths.lake).read("impressions", SERVE_DAY - dt.timedelta(days=2))["user_id"]
    return np.unique(users.to_numpy())[:n]
