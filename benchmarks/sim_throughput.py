"""Simulated impressions per second on one core, with every mechanism of the world on; memory at 1M users.

Each baseline policy runs the whole closed loop for a 100k-user world (visits, ranking a 60-slot list per request,
the walk down it with patience, time, boredom, memory, satiation and examination, the explore surface, creators,
churn, the truth table, Arrow logs): first in memory, then again writing the Parquet logs.  Target: >= 500,000
impressions/s on one core.  Rates are per second of the process's CPU time (what the core spent; wall time is
printed beside it and is longer on a busy machine); the load average is printed with them.

Then, in a fresh process, a world of 1,000,000 users and a 100,000-item catalogue is generated and simulated for
``--memory-days`` days under the random policy: its peak resident memory, and what the world and the state hold.

    python benchmarks/sim_throughput.py [--users 100000] [--days 7] [--skip-memory]
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

from common import isolated  # noqa: E402

from homefeed.config import SimSettings  # noqa: E402
from homefeed.sim import BASELINES, Simulation, make_baseline  # noqa: E402

TARGET = 500_000


def measure(settings: SimSettings, policy: str, days: int, write: bool) -> tuple[int, float, float]:
    sim = Simulation(settings)  # world generation is set-up, not simulation
    feed = make_baseline(policy, seed=settings.seed, max_age_days=settings.item_lifetime_days)
    with tempfile.TemporaryDirectory() as out:
        cpu, wall = time.process_time(), time.perf_counter()
        result = sim.run(feed, days, out if write else None)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return sum(d.impressions for d in result.days), cpu, wall


def memory(users: int, catalogue: int, days: int) -> dict:
    """A world of ``users`` users and about ``catalogue`` live items, simulated ``days`` days (in a fresh process)."""
    lifetime = 30
    settings = SimSettings(users=users, items_per_day=catalogue // lifetime, item_lifetime_days=lifetime)
    began = time.perf_counter()
    sim = Simulation(settings)
    generated = time.perf_counter() - began
    world = sim.world
    world_bytes = sum(v.nbytes for v in vars(world).values() if hasattr(v, "nbytes"))
    result = sim.run(make_baseline("random", seed=settings.seed, max_age_days=lifetime), days)
    state = sim.state
    state_bytes = state.items.nbytes() + state.satiation.nbytes + state.recent_creators.nbytes
    return {
        "generate_s": generated,
        "world_bytes": world_bytes,
        "state_bytes": state_bytes,
        "pairs": len(state.items),
        "impressions": sum(d.impressions for d in result.days),
        "items": world.n_items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--items-per-day", type=int, default=10_000)
    parser.add_argument("--memory-users", type=int, default=1_000_000)
    parser.add_argument("--memory-items", type=int, default=100_000)
    parser.add_argument("--memory-days", type=int, default=1)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    settings = SimSettings(users=args.users, items_per_day=args.items_per_day)
    measure(SimSettings(users=2_000, items_per_day=500), "random", 1, True)  # warm up imports and caches

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, pinned to 1; python {platform.python_version()}")
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"world: {args.users:,} users, {args.items_per_day:,} new items/day, {args.days} days, every mechanism on")
    print(f"{'policy':<15}{'mode':<10}{'impressions':>13}{'cpu s':>8}{'wall s':>8}{'impressions/s':>16}  vs target")
    for policy in BASELINES:
        for write in (False, True):
            n, cpu, wall = measure(settings, policy, args.days, write)
            rate = n / cpu
            mode = "+parquet" if write else "memory"
            verdict = "ok" if rate >= TARGET else "BELOW"
            print(
                f"{policy:<15}{mode:<10}{n:>13,}{cpu:>8.2f}{wall:>8.2f}{rate:>16,.0f}  {rate / TARGET:.2f}x {verdict}"
            )
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.skip_memory:
        return
    m = isolated(memory, args.memory_users, args.memory_items, args.memory_days)
    gib = 1 << 30
    print(
        f"memory: {args.memory_users:,} users, {m['items']:,} items generated ({args.memory_items:,} live), "
        f"{args.memory_days} day(s) simulated ({m['impressions']:,} impressions): "
        f"peak RSS {m['peak_rss'] / gib:.2f} GiB; world arrays {m['world_bytes'] / gib:.2f} GiB, "
        f"user state {m['state_bytes'] / gib:.2f} GiB ({m['pairs']:,} remembered user-item pairs); "
        f"world generated in {m['generate_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
