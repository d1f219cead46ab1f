"""Feature-store figures: online batch reads of 1 user + 500 items, per backend and from the in-process cache.

Fills each online store with 1M items × 50 features and 100k users × 50
features, then times 2,000 requests of ``read_many([("user", [u]), ("item",
500 ids)])`` on SQLite and on a local redis-server, and 1 user from the store +
500 items from ``ItemCache``.  Targets: p99 <= 1 ms from the cache, <= 5 ms from
Redis.  For comparison, Feast publishes a p99 of 198–425 ms for 500 rows
online; if ``feast`` is importable (it is not a project dependency: install it
in a throwaway venv together with this project), its ``get_online_features``
is timed on the same 50 features, on a smaller table because its writes are
slow (a few thousand rows/s).

Point-in-time join: simulates a world with about 10 million impressions (28
days), computes the ETL snapshots (set-up, timed but not the target), then joins
every impression with the 50-feature default set as known at its time, straight
to Parquet, in a fresh process.  Target: <= 60 s and <= 4 GB peak memory.

    python benchmarks/features.py [--quick] [--items 1000000] [--users 100000] [--requests 2000]
                                  [--pit-users 59000] [--pit-days 28] [--skip-pit] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import isolated

from homefeed.features.cache import ItemCache
from homefeed.features.redis_store import RedisStore, local_redis
from homefeed.features.sqlite_store import SqliteStore
from homefeed.features.store import OnlineStore

CANDIDATES = 500


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def timed(fn: Callable[[int], object], requests: int, warmup: int = 50) -> dict[str, float]:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(requests):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return percentiles(out)


def fill(store: OnlineStore, items: np.ndarray, users: np.ndarray, d: int, seed: int = 0) -> float:
    """Write both entities in chunks, as a materialization would; returns the seconds it took."""
    rng = np.random.default_rng(seed)
    columns = tuple(f"f{i:02d}" for i in range(d))
    start = time.perf_counter()
    for entity, keys in (("item", items), ("user", users)):
        for lo in range(0, len(keys), 200_000):
            chunk = keys[lo : lo + 200_000]
            values = rng.random((len(chunk), d), dtype=np.float32)
            store.write(entity, chunk, values, columns, version="bench", replace=lo == 0)
    return time.perf_counter() - start


def bench_online(items: int, users: int, d: int, requests: int, seed: int = 1) -> dict[str, dict]:
    """p50/p99 of one request (1 user + 500 items) per read path, plus fill and cache-load times."""
    rng = np.random.default_rng(seed)
    item_ids = rng.permutation(items * 4)[:items].astype(np.int64)  # sparse ids, as a real catalogue's are
    user_ids = rng.permutation(users * 4)[:users].astype(np.int64)
    pick_users = rng.choice(user_ids, requests + 100)
    pick_items = [rng.choice(item_ids, CANDIDATES, replace=False) for _ in range(requests + 100)]
    results: dict[str, dict] = {}

    def request(store: OnlineStore) -> Callable[[int], object]:
        return lambda i: store.read_many([("user", [pick_users[i]]), ("item", pick_items[i])])

    def with_cache(store: OnlineStore, cache: ItemCache) -> Callable[[int], object]:
        return lambda i: (store.read("user", [pick_users[i]]), cache.lookup(pick_items[i]))

    with tempfile.TemporaryDirectory(prefix="homefeed-bench-") as tmp, local_redis(Path(tmp) / "redis") as url:
        stores = {"sqlite": SqliteStore(Path(tmp) / "online.sqlite"), "redis": RedisStore(url)}
        for name, store in stores.items():
            fill_s = fill(store, item_ids, user_ids, d)
            start = time.perf_counter()
            cache = ItemCache.from_store(store)
            load_s = time.perf_counter() - start
            results[f"{name}: user + {CANDIDATES} items (read_many)"] = {
                **timed(request(store), requests),
                "fill_s": fill_s,
            }
            results[f"{name} user + cache {CANDIDATES} items"] = {
                **timed(with_cache(store, cache), requests),
                "cache_load_s": load_s,
            }
            results[f"cache: {CANDIDATES} items only ({name}-loaded)"] = timed(
                lambda i, c=cache: c.lookup(pick_items[i]), requests
            )
            store.close()
    return results


def bench_feast(items: int, d: int, requests: int, seed: int = 1) -> dict[str, dict] | None:
    """Feast's get_online_features for 500 rows × d features (SQLite and Redis online stores); None if absent."""
    try:
        import pandas as pd
        from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig
        from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
        from feast.repo_config import RepoConfig
        from feast.types import Float32
    except ImportError:
        return None
    import datetime as dt
    import logging

    logging.getLogger("feast").setLevel(logging.ERROR)
    rng = np.random.default_rng(seed)
    columns = [f"f{i:02d}" for i in range(d)]
    frame = pd.DataFrame(rng.random((items, d), dtype=np.float32), columns=columns)
    frame["item_id"] = np.arange(items, dtype=np.int64)
    frame["event_timestamp"] = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    features = [f"item_stats:{c}" for c in columns]
    picks = [rng.integers(0, items, CANDIDATES) for _ in range(requests + 5)]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="homefeed-feast-") as tmp, local_redis(Path(tmp) / "redis") as url:
        frame.to_parquet(f"{tmp}/items.parquet")
        host_port = url.removeprefix("redis://").rsplit("/", 1)[0]
        online = {
            "sqlite": SqliteOnlineStoreConfig(path=f"{tmp}/online.db"),
            "redis": RedisOnlineStoreConfig(connection_string=host_port),
        }
        for name, config in online.items():
            item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
            source = FileSource(path=f"{tmp}/items.parquet", timestamp_field="event_timestamp")
            schema = [Field(name=c, dtype=Float32) for c in columns]
            view = FeatureView(name="item_stats", entities=[item], schema=schema, source=source)
            repo = RepoConfig(
                project=f"bench_{name}",
                registry=f"{tmp}/registry_{name}.db",
                provider="local",
                online_store=config,
                entity_key_serialization_version=3,
            )
            fs = FeatureStore(config=repo)
            fs.apply([item, view])
            start = time.perf_counter()
            fs.write_to_online_store("item_stats", frame)
            fill_s = time.perf_counter() - start

            def get(i: int, fs: FeatureStore = fs) -> object:
                rows = [{"item_id": int(k)} for k in picks[i]]
                return fs.get_online_features(features=features, entity_rows=rows).to_dict()

            results[f"feast {name}: {CANDIDATES} items"] = {**timed(get, requests, warmup=5), "fill_s": fill_s}
    return results


def pit_setup(work: Path, users: int, days: int) -> dict:
    """Simulated logs into a lake, then the ETL's daily snapshots for every day: what the join reads."""
    import datetime as dt

    import pyarrow.dataset as ds

    from homefeed.config import EtlSettings, SimSettings
    from homefeed.data.etl import DuckDBEngine, Params, run_etl
    from homefeed.data.lake import Lake
    from homefeed.schema import TABLES
    from homefeed.sim import Simulation, make_baseline

    lake = Lake(work / "lake")
    began = time.perf_counter()
    if not lake.dates("impressions"):
        settings = SimSettings(users=users, items_per_day=5_000, creators=3_000, seed=1)
        policy = make_baseline("random", seed=1, max_age_days=settings.item_lifetime_days)
        Simulation(settings).run(policy, days, work / "logs")
        for table in TABLES:
            rows = ds.dataset(str(work / "logs" / table), schema=TABLES[table], format="parquet").to_table()
            lake.append(table, rows, [str(work / "logs" / table)])
    simulated = time.perf_counter() - began
    dates = lake.dates("impressions")
    params = Params.from_settings(EtlSettings(), dates[0], dates[-1] + dt.timedelta(days=0))
    report = run_etl(lake, Lake(work / "etl"), params, DuckDBEngine(memory_limit="8GB"))
    return {"simulate_s": simulated, "etl_s": report.seconds, "days": len(dates)}


def bench_pit(work: Path) -> dict:
    """Every impression of the lake joined with the default feature set, written to Parquet by DuckDB."""
    import duckdb

    from homefeed.config import Settings
    from homefeed.data.etl import DuckDBEngine
    from homefeed.data.lake import Lake
    from homefeed.features.definitions import feature_set
    from homefeed.features.pit import write_joined

    settings = Settings()
    fs = feature_set("default", settings.etl, settings.features)
    lake, etl = Lake(work / "lake"), Lake(work / "etl")
    days = lake.dates("impressions")
    out = work / "joined"
    began = time.perf_counter()
    write_joined(fs, etl, lake, days[0], days[-1], out, DuckDBEngine())
    seconds = time.perf_counter() - began
    rows, missing = duckdb.sql(f"SELECT count(*), avg(item_missing) FROM read_parquet('{out}/*/*.parquet')").fetchall()[
        0
    ]
    return {
        "seconds": seconds,
        "rows": rows,
        "features": len(fs.features),
        "flags": len(fs.flags),
        "item_missing": missing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k items, 10k users, 300 requests")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--feast-items", type=int, default=20_000, help="rows Feast materializes (its writes are slow)")
    parser.add_argument("--feast-requests", type=int, default=100)
    parser.add_argument("--pit-users", type=int, default=59_000, help="world for the join (59k x 28 days: ~10M)")
    parser.add_argument("--pit-days", type=int, default=28)
    parser.add_argument("--skip-pit", action="store_true", help="only the online reads")
    parser.add_argument("--workdir", type=Path, help="keep the join's lake and snapshots here between runs")
    args = parser.parse_args()
    if args.quick:
        args.items, args.users, args.requests, args.feast_items, args.feast_requests = 100_000, 10_000, 300, 5_000, 20
        args.pit_users, args.pit_days = 5_000, 10

    load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())  # p99 suffers when others share the cores
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}; {load}")
    print(
        f"online store: {args.items:,} items and {args.users:,} users × {args.features} float32 features; "
        f"{args.requests:,} requests of 1 user + {CANDIDATES} items (redis-server local, same machine)"
    )
    rows = bench_online(args.items, args.users, args.features, args.requests)
    feast = bench_feast(args.feast_items, args.features, args.feast_requests)
    if feast is None:
        print("feast: not installed")
    else:
        print(f"feast: {args.feast_items:,} items materialized, {args.feast_requests} requests")
        rows.update(feast)
    print(f"{'read path':<44}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}  set-up")
    for name, r in rows.items():
        extra = ""
        if "fill_s" in r:
            extra = f"fill {r['fill_s']:.1f} s"
        if "cache_load_s" in r:
            extra = f"cache load {r['cache_load_s']:.1f} s"
        print(f"{name:<44}{r['n']:>9,}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}  {extra}")
    print("load average at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    print("targets: p99 <= 1 ms from the cache, <= 5 ms from Redis; Feast publishes p99 198–425 ms for 500 rows")
    if args.skip_pit:
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="homefeed-pit-"))
    work.mkdir(parents=True, exist_ok=True)
    setup = isolated(pit_setup, work, args.pit_users, args.pit_days)
    print(f"\npoint-in-time join: {args.pit_users:,} users x {setup['days']} days simulated and loaded in "
          f"{setup['simulate_s']:.0f} s; ETL snapshots for every day in {setup['etl_s']:.0f} s (set-up)")  # fmt: skip
    pit = isolated(bench_pit, work)
    print(f"joined {pit['rows']:,} impressions x {pit['features']} features + {pit['flags']} missing flags to "
          f"Parquet in {pit['seconds']:.1f} s (target <= 60 s); peak memory {pit['peak_rss'] / 2**30:.2f} GiB "
          f"(target <= 4 GB); item_missing rate {pit['item_missing']:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
