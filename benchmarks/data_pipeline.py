"""The data pipeline on ~10 million simulated events, on 2 cores (issue 3).

Simulates a 100,000-user world under the random policy (about 0.66 million
impressions and engagements a day), then measures, each section in a fresh
process so that its peak memory is its own:

- **ingest**: every Parquet log file into a fresh lake (impressions first, then
  engagements, as the orphan check requires), then all of them again (every
  row a duplicate); optionally a few days as CSV and JSON Lines into another
  lake.  Target: >= 1,000,000 events/s.
- **etl**: the daily run on DuckDB — every output (item, creator, user,
  user×topic, user×creator, position curve) for the last day, over a 28-day
  window that holds every simulated day — then a backfill of a snapshot for
  every day.  Target: <= 60 s and <= 4 GB for the 28-day window.
- **pandas**: ``item_stats`` for the same last day, written plainly in pandas
  (read the window, filter, group by, per window).  Target: ours >= 10x faster.

Figures are printed, never asserted.

    python benchmarks/data_pipeline.py [--users 100000] [--days 16] [--formats parquet,csv,jsonl] [--no-backfill]
                                       [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from common import isolated, pin

from homefeed.config import SimSettings

TARGET_EVENTS_PER_S = 1_000_000
EVENT_TABLES = ("impressions", "engagements")  # in ingestion order: an engagement needs its impression


def simulate(out: Path, users: int, days: int, items_per_day: int, seed: int) -> dict:
    """The world's logs as the simulator writes them: one Parquet file per table and day."""
    from homefeed.sim import Simulation, make_baseline

    settings = SimSettings(users=users, items_per_day=items_per_day, seed=seed)
    start = time.perf_counter()
    Simulation(settings).run(make_baseline("random", seed=seed, max_age_days=settings.item_lifetime_days), days, out)
    return {"seconds": time.perf_counter() - start}


def to_text(logs: Path, out: Path, days: int) -> dict:
    """The first ``days`` files of each event table again as CSV (maps as JSON text) and JSON Lines."""
    import duckdb

    con = duckdb.connect()
    con.sql("set TimeZone = 'UTC'")
    files: dict[str, list[str]] = {}
    for table in EVENT_TABLES:
        for part in sorted((logs / table).glob("*/*.parquet"))[:days]:
            source = f"read_parquet('{part}', hive_partitioning = false)"
            columns = con.sql(f"describe select * from {source}").fetchall()
            nested = [name for name, kind, *_ in columns if kind.startswith("MAP")]
            as_json = f" replace ({', '.join(f'to_json({c}) as {c}' for c in nested)})" if nested else ""
            for fmt, options in (("csv", "(header)"), ("jsonl", "(format json)")):
                target = out / fmt / table / f"{part.parent.name}.{fmt}"
                target.parent.mkdir(parents=True, exist_ok=True)
                select = f"select *{as_json if fmt == 'csv' else ''} from {source}"
                con.sql(f"copy ({select}) to '{target}' {options}")
                files.setdefault(f"{fmt}/{table}", []).append(str(target))
    return {"files": files}


def bench_ingest(logs: Path, lake_root: Path, text: dict[str, list[str]], now: dt.datetime) -> dict:
    """Ingest every event file into a fresh lake, then again (all duplicates); text formats into their own lakes."""
    import pyarrow.parquet as pq

    from homefeed.data.ingest import ingest
    from homefeed.data.lake import Lake

    rows: list[dict] = []

    def run(lake: Lake, files: dict[str, list[str]], fmt: str, label: str) -> None:
        for table in EVENT_TABLES:
            events = written = duplicates = quarantined = 0
            start = time.perf_counter()
            for path in files.get(table, []):
                report = ingest(path, table, fmt, lake, lake.root.parent / f"quarantine-{fmt}", now)  # type: ignore[arg-type]
                events += report.rows_in
                written, duplicates = written + report.written, duplicates + report.duplicates
                quarantined += report.quarantined
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "run": label, "table": table, "format": fmt, "files": len(files.get(table, [])), "events": events,
                    "written": written, "duplicates": duplicates, "quarantined": quarantined, "seconds": seconds,
                }
            )  # fmt: skip

    parquet = {table: [str(p) for p in sorted((logs / table).glob("*/*.parquet"))] for table in EVENT_TABLES}
    warm_up = {table: [f"{lake_root}/warm-up-{table}.parquet"] for table in EVENT_TABLES}
    for table in EVENT_TABLES:  # imports, pandera's check registry, Polars' thread pool: not ingestion
        pq.write_table(pq.read_table(parquet[table][0]).slice(0, 1_000), warm_up[table][0])
    run(Lake(lake_root / "warm-up"), warm_up, "parquet", "warm-up")
    rows.clear()
    lake = Lake(lake_root / "parquet")
    run(lake, parquet, "parquet", "ingest")
    run(lake, parquet, "parquet", "re-ingest")
    for fmt in ("csv", "jsonl"):
        files = {table: text.get(f"{fmt}/{table}", []) for table in EVENT_TABLES}
        if any(files.values()):
            run(Lake(lake_root / fmt), files, fmt, "ingest")
    lake_bytes = sum(p.stat().st_size for p in (lake_root / "parquet").rglob("*.parquet"))
    return {"rows": rows, "lake_bytes": lake_bytes}


def print_ingest(result: dict) -> None:
    header = f"{'ingest':<10}{'table':<13}{'format':<8}{'files':>6}{'events':>13}{'seconds':>9}{'events/s':>13}"
    print(f"\n{header}  outcome")
    totals: dict[tuple[str, str], list[float]] = {}
    for r in result["rows"]:
        rate = r["events"] / r["seconds"] if r["seconds"] else 0.0
        outcome = f"{r['written']:,} written, {r['duplicates']:,} duplicates, {r['quarantined']:,} quarantined"
        print(
            f"{r['run']:<10}{r['table']:<13}{r['format']:<8}{r['files']:>6}{r['events']:>13,}"
            f"{r['seconds']:>9.2f}{rate:>13,.0f}  {outcome}"
        )
        total = totals.setdefault((r["run"], r["format"]), [0, 0.0])
        total[0] += r["events"]
        total[1] += r["seconds"]
    for (run, fmt), (events, seconds) in totals.items():
        rate = events / seconds
        verdict = f"  {rate / TARGET_EVENTS_PER_S:.1f}x target {'ok' if rate >= TARGET_EVENTS_PER_S else 'BELOW'}"
        print(f"{run:<10}{'all':<13}{fmt:<8}{'':>6}{events:>13,}{seconds:>9.2f}{rate:>13,.0f}{verdict}")
    print(f"lake: {result['lake_bytes'] / 1e6:,.0f} MB of Parquet; peak memory of the ingest process: "
          f"{result['peak_rss'] / 2**30:.2f} GiB (target <= 4 GB)")  # fmt: skip


ITEM_STATS_PATH = ("imp", "eng", "position_curve", "item_daily", "item_creator", "prior", "item_stats")


def bench_etl(logs: Path, lake_root: Path, out: Path, backfill: bool) -> dict:
    """The daily run (last day, 28-day window), then optionally a snapshot for every day, on DuckDB."""
    import pyarrow.dataset as ds

    from homefeed.config import EtlSettings
    from homefeed.data.etl import DuckDBEngine, Params, run_etl
    from homefeed.data.lake import Lake
    from homefeed.schema import TABLES

    lake = Lake(lake_root)
    for table in ("users", "items"):  # dimensions the ETL joins; their loading is not what is measured
        if not lake.dates(table):
            rows = ds.dataset(str(logs / table), schema=TABLES[table], format="parquet").to_table()
            lake.append(table, rows, [str(logs / table)])
    days = lake.dates("impressions")
    etl = EtlSettings()  # memory_limit 3GB: DuckDB spills past it

    def engine() -> DuckDBEngine:
        return DuckDBEngine(memory_limit=etl.memory_limit, spill=out / ".spill")

    daily = run_etl(lake, Lake(out / "daily"), Params.from_settings(etl, days[-1], days[-1]), engine())
    result = {"daily": daily, "days": len(days), "window_days": etl.windows[-1]}
    result["daily_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if backfill:
        params = Params.from_settings(etl, days[0], days[-1])
        result["backfill"] = run_etl(lake, Lake(out / "backfill"), params, engine())
    return result


def pandas_item_stats(lake_root: Path, windows: tuple[int, ...] = (1, 7, 28), strength: float = 100.0) -> dict:
    """``item_stats`` for the last day as a pandas user would write it: read, filter, merge, group by per window."""
    import pandas as pd

    from homefeed.data.lake import Lake

    lake = Lake(lake_root)
    day = lake.dates("impressions")[-1]
    start = time.perf_counter()
    first = day - dt.timedelta(days=max(windows) - 1)
    imp = pd.concat(
        pd.read_parquet(f, columns=["request_id", "ts", "item_id", "surface", "position"])
        for f in lake.files("impressions", first, day)
    )
    eng = pd.concat(
        pd.read_parquet(f, columns=["request_id", "ts", "item_id", "action"])
        for f in lake.files("engagements", first, day)
    )
    imp["day"], eng["day"] = imp["ts"].dt.date, eng["ts"].dt.date
    closeups = eng.loc[eng["action"] == "closeup", ["request_id", "item_id"]].drop_duplicates().assign(closed=1)
    imp = imp.merge(closeups, on=["request_id", "item_id"], how="left").fillna({"closed": 0})
    slot = imp.groupby(["surface", "position"]).agg(n=("closed", "size"), c=("closed", "sum")).reset_index()
    first_slot = slot[slot["position"] == 1].set_index("surface")
    slot["top"] = slot["surface"].map(first_slot["c"] / first_slot["n"])
    slot["examination"] = ((slot["c"] + strength * slot["top"]) / (slot["n"] + strength) / slot["top"]).clip(0.05, 1)
    imp = imp.merge(slot[["surface", "position", "examination"]], on=["surface", "position"])
    frames = []
    for w in windows:
        since = day - dt.timedelta(days=w - 1)
        wi, we = imp[imp["day"] >= since], eng[eng["day"] >= since]
        stats = wi.groupby("item_id").agg(
            **{f"impressions_{w}d": ("request_id", "size"), f"exposure_{w}d": ("examination", "sum")}
        )
        actions = we.pivot_table(index="item_id", columns="action", values="ts", aggfunc="count", fill_value=0)
        stats = stats.join(actions.add_suffix(f"_{w}d"), how="outer").fillna(0)
        for a in ("closeup", "click", "save", "hide", "report"):
            count = stats.get(f"{a}_{w}d", 0)
            prior = stats[f"{a}_{w}d"].sum() / stats[f"exposure_{w}d"].sum() if f"{a}_{w}d" in stats else 0.0
            stats[f"{a}_rate_{w}d"] = (count + strength * prior) / (stats[f"exposure_{w}d"] + strength)
        frames.append(stats)
    result = pd.concat(frames, axis=1).fillna(0)
    return {"seconds": time.perf_counter() - start, "rows": len(result)}


def print_etl(etl: dict, pandas: dict) -> None:
    daily = etl["daily"]
    ours_item_stats = sum(daily.step_seconds[s] for s in ITEM_STATS_PATH)
    print(f"\netl (DuckDB): daily run for the last day, {etl['window_days']}-day window over all {etl['days']} days")
    for name, rows in daily.rows.items():
        print(f"  {name:<16}{rows:>12,} rows")
    print(f"  all outputs: {daily.seconds:.1f} s (target <= 60 s); peak memory {etl['daily_peak_rss'] / 2**30:.2f} GiB "
          f"(target <= 4 GB)")  # fmt: skip
    print(f"  item_stats alone (its steps): {ours_item_stats:.1f} s")
    print(f"pandas item_stats, same day and windows: {pandas['seconds']:.1f} s ({pandas['rows']:,} items); "
          f"ours is {pandas['seconds'] / ours_item_stats:.1f}x faster on item_stats, "
          f"{pandas['seconds'] / daily.seconds:.1f}x counting all our outputs (target >= 10x); "
          f"pandas peak memory {pandas['peak_rss'] / 2**30:.2f} GiB")  # fmt: skip
    if "backfill" in etl:
        backfill = etl["backfill"]
        print(f"etl backfill, a snapshot for each of {len(backfill.computed)} days: {backfill.seconds:.1f} s, "
              f"{sum(backfill.rows.values()):,} rows; peak memory {etl['peak_rss'] / 2**30:.2f} GiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=16, help="days simulated (16 x 100k users: ~10.6M events)")
    parser.add_argument("--items-per-day", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--formats", default="parquet", help="parquet, plus csv and/or jsonl for a few days")
    parser.add_argument("--text-days", type=int, default=2, help="days of logs also written as CSV / JSON Lines")
    parser.add_argument("--no-backfill", action="store_true", help="skip the ETL backfill of every day")
    parser.add_argument("--quick", action="store_true", help="a small world (10k users, 7 days) to try the script")
    parser.add_argument("--workdir", type=Path, help="keep logs and lake here (default: a temporary directory)")
    args = parser.parse_args()
    if args.quick:
        args.users, args.days, args.items_per_day = 10_000, 7, 2_000
    pin(args.cores)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="homefeed-bench-"))
    try:
        logs = work / "logs"
        if logs.exists():
            shutil.rmtree(logs)
        shutil.rmtree(work / "lake", ignore_errors=True)
        (work / "lake").mkdir(parents=True)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, pinned to {cores}; "
              f"python {platform.python_version()}; load average {load}")  # fmt: skip
        print(f"world: {args.users:,} users, {args.items_per_day:,} new items/day, {args.days} days, random policy")
        sim = isolated(simulate, logs, args.users, args.days, args.items_per_day, args.seed)
        print(f"simulated in {sim['seconds']:.1f} s (set-up, not measured below)")
        formats = {f.strip() for f in args.formats.split(",")}
        text_formats = formats & {"csv", "jsonl"}
        text = isolated(to_text, logs, work / "text", args.text_days)["files"] if text_formats else {}
        text = {k: v for k, v in text.items() if k.split("/")[0] in text_formats}
        # "now" for the contract's timestamp check: the day after the simulated days, whatever the wall clock says.
        now = dt.datetime.combine(SimSettings().start_date + dt.timedelta(days=args.days), dt.time(), dt.UTC)
        print_ingest(isolated(bench_ingest, logs, work / "lake", text, now))
        lake = work / "lake" / "parquet"
        etl = isolated(bench_etl, logs, lake, work / "etl", not args.no_backfill)
        print_etl(etl, isolated(pandas_item_stats, lake))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
