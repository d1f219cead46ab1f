"""Evaluation fixtures: two small rankers trained on one simulated world and registered, GBDT as production."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from homefeed.train.gbdt import GBDTRanker
from homefeed.train.nn import NNRanker
from homefeed.train.registry import Registry
from tests.train.conftest import World, build

#: Small enough to train in seconds on the fixture world, good enough to rank better than chance.
FAST_GBDT = {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 15}
FAST_NN = {"hidden": (32,), "max_epochs": 3, "batch_size": 512}


@dataclass
class Registered:
    """A world, its registry, and the versions of the two rankers registered in it."""

    world: World
    registry: Registry
    production: str  # the GBDT
    candidate: str  # the NN


@pytest.fixture(scope="session")
def registered(tmp_path_factory) -> Registered:
    world = build(tmp_path_factory.mktemp("evaluate_world"), "random")
    registry = Registry.of(world.settings)
    gbdt = registry.register(GBDTRanker(**FAST_GBDT).fit(world.data), world.data)
    nn = registry.register(NNRanker(**FAST_NN, seed=1).fit(world.data), world.data)
    registry.alias("production", gbdt.version, reason="fixture")
    registry.alias("candidate", nn.version, reason="fixture")
    return Registered(world, registry, gbdt.version, nn.version)


@pytest.fixture
def project_file(registered, tmp_path, monkeypatch) -> Path:
    """A project file for the CLI: the fixture's registry, datasets and ETL windows, reports in ``tmp_path/reports``.

    Commands run in an empty folder, with no project file from the environment.
    """
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    root = registered.world.settings.resolved_paths.root
    windows = registered.world.settings.etl.windows
    path = tmp_path / "homefeed.toml"
    text = f'[paths]\nroot = "{root}"\nreports = "{tmp_path / "reports"}"\n[etl]\nwindows = {windows}\n'
    path.write_text(text, encoding="utf-8")
    return path
