"""Simulated impressions per second for a 100k-user world, on one core.

Each baseline policy runs the whole closed loop (visits, ranking, behaviour,
fatigue, satisfaction, Arrow logs): first in memory, then again writing the
Parquet logs.  Target: >= 500,000 impressions/s on one core.

    python benchmarks/sim_throughput.py [--users 100000] [--days 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

# One core: pin the process and keep every library to one thread before they load.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import pyarrow as pa  # noqa: E402

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

from homefeed.config import SimSettings  # noqa: E402
from homefeed.sim import BASELINES, Simulation, make_baseline  # noqa: E402

TARGET = 500_000


def measure(settings: SimSettings, policy: str, days: int, write: bool) -> tuple[int, float]:
    sim = Simulation(settings)  # world generation is set-up, not simulation
    feed = make_baseline(policy, seed=settings.seed, max_age_days=settings.item_lifetime_days)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = sim.run(feed, days, out if write else None)
        elapsed = time.perf_counter() - start
    return sum(d.impressions for d in result.days), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--items-per-day", type=int, default=10_000)
    args = parser.parse_args()
    settings = SimSettings(users=args.users, items_per_day=args.items_per_day)
    measure(SimSettings(users=2_000, items_per_day=500), "random", 1, True)  # warm up imports and caches

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, pinned to 1; python {platform.python_version()}")
    print(f"world: {args.users:,} users, {args.items_per_day:,} new items/day, {args.days} days")
    print(f"{'policy':<15}{'mode':<10}{'impressions':>13}{'seconds':>10}{'impressions/s':>16}  vs target")
    for policy in BASELINES:
        for write in (False, True):
            n, seconds = measure(settings, policy, args.days, write)
            rate = n / seconds
            mode = "+parquet" if write else "memory"
            verdict = "ok" if rate >= TARGET else "BELOW"
            print(f"{policy:<15}{mode:<10}{n:>13,}{seconds:>10.2f}{rate:>16,.0f}  {rate / TARGET:.1f}x {verdict}")


if __name__ == "__main__":
    main()
