"""What every benchmark script shares: pinning to a number of cores, and measuring a section in a fresh process."""

from __future__ import annotations

import multiprocessing
import os
import resource
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


def pin(cores: int) -> None:
    """Keep this process (and the children it spawns) to ``cores`` CPUs, and every library to as many threads."""
    os.environ["POLARS_MAX_THREADS"] = str(cores)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cores)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))


def isolated(fn: Callable[..., dict], *args: object) -> dict:
    """Run ``fn(*args)`` in a fresh process; its result plus that process's peak resident memory (bytes)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured, fn, *args).result()


def _measured(fn: Callable[..., dict], *args: object) -> dict:
    import pyarrow as pa

    pa.set_cpu_count(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    result = fn(*args)
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return result
