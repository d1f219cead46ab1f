"""The demo's training half: simulated logs → lake → ETL → dataset → models in the registry.

The same public entry points a user calls one by one (ingest, ETL, dataset
build, train, register) in the order the loop runs them, so ``homefeed demo``
exercises the real path rather than a shortcut around it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from homefeed.config import Settings
from homefeed.data.etl import Params, engine_for, run_etl, snapshot_lake
from homefeed.data.ingest import ingest
from homefeed.data.lake import Lake
from homefeed.schema import TABLES
from homefeed.train import DatasetStore, build_dataset, load_spec
from homefeed.train.model import TrainingData
from homefeed.train.registry import Registry, Version, model_class

#: Days of logs the demo's dataset covers, the last ones: train, then one day each of validation and test.
DATASET_DAYS = 7


@dataclass
class DemoTraining:
    events: int = 0
    dataset_id: str = ""
    rows: dict[str, int] = field(default_factory=dict)
    versions: dict[str, Version] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def train_on_logs(
    settings: Settings,
    logs: Path,
    kinds: tuple[str, ...] = ("gbdt", "nn"),
    on_step: Callable[[str], None] | None = None,
) -> DemoTraining:
    """Ingest ``logs`` (a simulator's output folder), compute features, build a dataset, train and register."""
    paths = settings.resolved_paths
    out = DemoTraining()

    def step(name: str) -> Callable[[], None]:
        if on_step:
            on_step(name)
        began = time.perf_counter()
        return lambda: out.seconds.__setitem__(name, time.perf_counter() - began)

    done = step("ingest")
    lake = Lake(paths.lake)
    for table in TABLES:  # users and items first: engagements must find their impressions
        for part in sorted((logs / table).rglob("*.parquet")):
            out.events += ingest(part, table, "parquet", lake, paths.quarantine).rows_in
    done()

    done = step("etl")
    days = lake.dates("impressions")
    engine = engine_for(settings)
    try:
        run_etl(
            lake,
            snapshot_lake(paths.etl),
            Params.from_settings(settings.etl, days[0], days[-1], settings.features),
            engine,
        )
    finally:
        engine.close()
    done()

    done = step("dataset")
    start = max(days[0] + dt.timedelta(days=1), days[-1] - dt.timedelta(days=DATASET_DAYS - 1))
    spec = load_spec(settings, None, start, days[-1])
    built = build_dataset(spec, settings)
    data = TrainingData.load(DatasetStore(paths.datasets), built.id)
    out.dataset_id, out.rows = built.id, {name: t.num_rows for name, t in data.splits.items()}
    done()

    registry = Registry.of(settings)
    for kind in kinds:
        done = step(f"train {kind}")
        model = model_class(kind)(position="feature", seed=settings.sim.seed).fit(data)
        out.versions[kind] = registry.register(model, data)
        done()
    if "gbdt" in out.versions:
        registry.alias("production", out.versions["gbdt"].version, "demo: the GBDT ships first")
    if "nn" in out.versions:
        registry.alias("candidate", out.versions["nn"].version, "demo: the NN asks for a launch review")
    return out
