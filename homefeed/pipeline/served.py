"""The demo's serving half: the production model served to the simulated world, day by day, as in production.

After the random policy's weeks (the exploration logs the rankers were trained on), the world is forked: one copy
continues under each baseline, one under the ranking pipeline with the ``production`` model, for the same days
from the same state, so the rows of the table compare like with like.  The served copy runs the daily loop a
real deployment runs: each day's logs are ingested into a lake, the day's ETL snapshot is computed and
materialized into the online store, and the pipeline's caches reload — features the model sees are those the
offline join would give (its sampled vectors are checked with the skew check at the end).

The served copy works in ``<paths.root>/served/`` (a lake and ETL folder that start as hard links to the
project's, and its own online store), so the project's lake, on which the demo trains, keeps only the random
policy's logs and re-running the demo trains the same models.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from homefeed.config import Settings
from homefeed.data.etl import Params, engine_for, run_etl
from homefeed.data.ingest import ingest
from homefeed.data.lake import Lake
from homefeed.features.definitions import feature_set
from homefeed.features.materialize import materialize
from homefeed.features.skew import FeatureSkew, SkewThresholds, skew
from homefeed.features.sqlite_store import SqliteStore
from homefeed.feed import Feedback, FeedPolicy, RequestBatch, SlateBatch
from homefeed.schema import TABLES
from homefeed.serve.catalog import ItemCatalogue
from homefeed.serve.model import ModelHolder
from homefeed.serve.pipeline import RankingPipeline
from homefeed.serve.service import signals_for
from homefeed.serve.state import OnlineFeatures, StoreGuard
from homefeed.sim import BASELINES, Simulation, SimulationResult, explore_policy, make_baseline
from homefeed.train.registry import Registry

#: The entities the demo's pipeline holds in memory: all of them, as a batch ranker of a whole day should.
CACHED = ("item", "creator", "user", "user_topic", "user_creator")


class _Tee:
    """Serves one policy and lets others watch: the baselines learn what they would have during its run."""

    def __init__(self, serving: FeedPolicy, watchers: list[FeedPolicy]):
        self.serving, self.watchers, self.name = serving, watchers, serving.name

    def observe(self, feedback: Feedback) -> None:
        self.serving.observe(feedback)
        for w in self.watchers:
            w.observe(feedback)

    def rank(self, requests: RequestBatch) -> SlateBatch:
        return self.serving.rank(requests)


@dataclass
class ServedRun:
    first_day: dt.date
    days: int
    results: list[SimulationResult] = field(default_factory=list)  # the baselines, then the served model
    skew: list[FeatureSkew] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    root: Path | None = None


def served_settings(settings: Settings) -> Settings:
    """The demo's serving project: its own lake, ETL and store under ``<root>/served``; the project's registry."""
    paths = settings.resolved_paths
    data = settings.model_dump()
    root = paths.root / "served"
    data["paths"].update(
        root=root,
        lake=root / "lake",
        etl=root / "etl",
        quarantine=root / "quarantine",
        online_store=root / "online.sqlite",
        registry=paths.registry,
        models=paths.models,
    )
    data["backends"]["online_store"] = "sqlite"
    return Settings(**data)


def serve_days(
    settings: Settings, warm_days: int, days: int, on_step: Callable[[str], None] | None = None
) -> ServedRun:
    """Fork the world after ``warm_days`` of random feeds; serve ``days`` more under each baseline and the model."""
    s = settings.sim
    out = ServedRun(first_day=s.start_date + dt.timedelta(days=warm_days), days=days)

    def step(name: str) -> Callable[[], None]:
        if on_step:
            on_step(name)
        began = time.perf_counter()
        return lambda: out.seconds.__setitem__(name, out.seconds.get(name, 0.0) + time.perf_counter() - began)

    done = step("warm-up")
    random = make_baseline("random", seed=s.seed, max_age_days=s.item_lifetime_days)
    others = [make_baseline(n, seed=s.seed, max_age_days=s.item_lifetime_days) for n in BASELINES if n != "random"]
    explore = explore_policy(s.seed, s.item_lifetime_days)  # as in the weeks the logs came from
    world = Simulation(s)
    # the random run the logs came from, replayed (same seed)
    world.run(_Tee(random, others), warm_days, surfaces={s.surfaces.explore: explore})
    done()

    done = step("baselines")
    for policy in [random, *others]:
        fork, fork_explore = copy.deepcopy((world, explore))
        out.results.append(fork.run(policy, days, surfaces={s.surfaces.explore: fork_explore}))
    done()

    served = served_settings(settings)
    paths = served.resolved_paths
    out.root = paths.root
    _fresh_copy(settings, served)
    fs = feature_set(settings.features.set, settings.etl, settings.features)
    done = step("materialize")
    store = SqliteStore(paths.online_store)
    materialize(fs, Lake(paths.etl), store)
    done()
    pipeline = _pipeline(served, store)
    holder = pipeline.model
    name = f"ranker ({holder().version})" if holder() else "ranker"
    pipeline.name = name
    result = SimulationResult(policy=name)
    sim, explore = copy.deepcopy((world, explore))
    lake, etl = Lake(paths.lake), Lake(paths.etl)
    engine = engine_for(served)
    try:
        for d in range(days):
            date = out.first_day + dt.timedelta(days=d)
            done = step("serve")
            day = sim.run(pipeline, 1, paths.root / "logs", surfaces={s.surfaces.explore: explore})
            result.days += day.days
            done()
            done = step("daily pipeline")  # ingest the day, its snapshot, into the store, caches reload
            for table in TABLES:
                for part in sorted((paths.root / "logs" / table).glob(f"date=*/part-{date:%Y%m%d}.parquet")):
                    ingest(part, table, "parquet", lake, paths.quarantine)
            run_etl(lake, etl, Params.from_settings(settings.etl, date, date, settings.features), engine)
            materialize(fs, etl, store, as_of=date)
            pipeline.refresh()
            done()
    finally:
        engine.close()
        store.close()
    out.results.append(result)
    done = step("skew")
    impressions = lake.read("impressions", out.first_day, out.first_day + dt.timedelta(days=days - 1))
    out.skew = skew(impressions, fs, etl, lake, SkewThresholds.from_settings(settings.features))
    done()
    return out


def _fresh_copy(settings: Settings, served: Settings) -> None:
    """The served project starts as the project's lake and ETL snapshots (hard links: no bytes copied)."""
    src, dst = settings.resolved_paths, served.resolved_paths
    if dst.root.exists():
        shutil.rmtree(dst.root)
    dst.root.mkdir(parents=True)
    for a, b in ((src.lake, dst.lake), (src.etl, dst.etl)):
        shutil.copytree(a, b, copy_function=os.link, ignore=shutil.ignore_patterns(".spill"))


def _pipeline(settings: Settings, store: SqliteStore) -> RankingPipeline:
    """The ranking pipeline over the served project, as the simulator runs it: every entity cached, no budgets."""
    paths = settings.resolved_paths
    guard = StoreGuard(store, retry_s=settings.serve.store_retry_seconds)
    holder = ModelHolder(Registry.of(settings), settings.serve.model, settings)
    holder.check()
    pipeline = RankingPipeline(
        settings.serve,
        ItemCatalogue(),
        OnlineFeatures(guard, CACHED),
        signals_for(guard, settings),
        holder,
        seed=settings.sim.seed,
        budgets=False,
    )
    lake = Lake(paths.lake)
    dates = lake.dates("impressions")
    recent = dates[-1] - dt.timedelta(days=int(max(s.seen_hours for s in settings.serve.surfaces.values()) // 24) + 1)
    # what the pipeline would know had it served all along: the catalogue, recent impressions, every engagement
    pipeline.observe(
        Feedback(
            items=lake.read("items"),
            impressions=lake.read("impressions", recent, None).select(["user_id", "item_id", "ts"]),
            engagements=lake.read("engagements"),
        )
    )
    pipeline.refresh()
    return pipeline
