"""The serving log writer: what logging costs the serving process, and what a flush costs as the day grows.

Runs in-process on a project that ``python benchmarks/serving.py --keep DIR`` built (its lake, model, store), on a
private copy of its lake, store and quarantine (``--work``), so the project is left as it was.

Part 1, the serving process: the service's pipeline serves one request every 10 ms (100/s) for ``--seconds``,
each logged as the service logs it (`Service._log` → ``writer.put``), with the writer started as the service
starts it.  Measured: the CPU the serving process spends on logging — ``put`` on the request thread plus the
writer's own threads here — per request; the log child's CPU (when there is one); ``serve()``'s latency with
logging on (a writer holding the GIL shows up in its tail).

Part 2, a flush against a growing day: ``--flushes`` flushes of one second of traffic each (100 requests'
slates, fresh request ids) into one day's partition, each timed from ``flush()`` to its return, as the
partition grows by one file per flush.

    python benchmarks/serving_logs.py --project /tmp/sb --seconds 60 --flushes 600
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from homefeed import config as config_mod
from homefeed.data.lake import Lake
from homefeed.feed import RequestBatch
from homefeed.serve.service import Service

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(stat: Path) -> float:
    """User + system CPU seconds of a process or thread, from its /proc stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def private_copy(project: Path, work: Path) -> Path:
    """A copy of the project's settings pointing at ``work``, with its lake, store, registry and models."""
    settings = config_mod.load(project / "homefeed.toml")
    src = settings.resolved_paths.root
    if work.exists():
        shutil.rmtree(work)
    (work / ".homefeed").mkdir(parents=True)
    for name in ("lake", "models", "compiled", "online.sqlite", "registry.sqlite"):
        if (src / name).is_dir():
            shutil.copytree(src / name, work / ".homefeed" / name)
        elif (src / name).exists():
            shutil.copy2(src / name, work / ".homefeed" / name)
    text = (project / "homefeed.toml").read_text(encoding="utf-8").replace(str(src), str(work / ".homefeed"))
    (work / "homefeed.toml").write_text(text, encoding="utf-8")
    return work / "homefeed.toml"


def one_request(users: np.ndarray, i: int, ts_us: int, tag: str) -> RequestBatch:
    return RequestBatch(
        request_id=pa.array([f"{tag}-{i}"]),
        user_id=np.array([users[i % len(users)]], np.int64),
        ts=np.array([ts_us], np.int64),
        slate_size=np.array([20], np.int32),
        country=pa.array(["US"]),
    )


def serving_cost(svc: Service, users: np.ndarray, ts_us: int, seconds: float) -> dict:
    writer = svc.writer
    put_cpu = [0]
    put = writer.put

    def timed_put(*args, **kwargs):
        t0 = time.thread_time_ns()
        try:
            return put(*args, **kwargs)
        finally:
            put_cpu[0] += time.thread_time_ns() - t0

    writer.put = timed_put
    writer.start()
    latencies = []
    end = time.perf_counter() + seconds
    i = 0
    tag = f"bench-{time.time_ns()}"
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        svc.pipeline.serve(one_request(users, i, ts_us, tag))
        latencies.append(time.perf_counter() - t0)
        i += 1
        time.sleep(max(0.0, 0.01 - (time.perf_counter() - t0)))
    # the writer's threads in this process, read before close() ends them
    threads = [t for t in threading.enumerate() if t.name.startswith("homefeed-log")]
    thread_cpu = sum(_cpu_s(Path(f"/proc/self/task/{t.native_id}/stat")) for t in threads)
    child = getattr(writer, "child_pid", None)
    child_cpu = _cpu_s(Path(f"/proc/{child}/stat")) if child else None
    c0 = time.thread_time()
    writer.flush()
    final_cpu = time.thread_time() - c0
    lat = np.array(latencies) * 1000
    return {
        "requests": i,
        "put_us_per_request": put_cpu[0] / 1000 / i,
        "writer_threads_ms_per_request": (thread_cpu + final_cpu) * 1000 / i,
        "logging_cpu_ms_per_request": (put_cpu[0] / 1e9 + thread_cpu + final_cpu) * 1000 / i,
        "child_cpu_ms_per_request": None if child_cpu is None else child_cpu * 1000 / i,
        "serve_ms_p50": float(np.percentile(lat, 50)),
        "serve_ms_p99": float(np.percentile(lat, 99)),
        "serve_ms_max": float(lat.max()),
        "written": dict(writer.counts.written),
        "shed": dict(writer.counts.shed),
    }


def flush_growth(svc: Service, users: np.ndarray, ts_us: int, flushes: int) -> dict:
    """Flushes of 100 requests' slates each (fresh ids), timed, as one day's partition grows."""
    writer = svc.writer
    served = [(one_request(users, i, ts_us, "g"), None) for i in range(100)]
    served = [(r, svc.pipeline.rank(r)) for r, _ in served]
    times = []
    for f in range(flushes):
        for i, (requests, slates) in enumerate(served):
            again = dataclasses.replace(requests, request_id=pa.array([f"grow-{f}-{i}"]))
            svc._log(again, SimpleNamespace(slates=slates))
        t0 = time.perf_counter()
        writer.flush()
        times.append((time.perf_counter() - t0) * 1000)
    t = np.array(times)
    marks = sorted({0, 9, 59, *range(99, flushes, 100), flushes - 1} & set(range(flushes)))
    window = 10
    return {
        "flushes": flushes,
        "rows_per_flush": int(sum(len(s) for _, s in served)),
        "flush_ms_at": {m + 1: float(np.median(t[max(0, m - window + 1) : m + 1])) for m in marks},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a project built by serving.py --keep")
    parser.add_argument("--work", type=Path, default=Path("/tmp/homefeed-serving-logs"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--flushes", type=int, default=600)
    args = parser.parse_args()
    settings = config_mod.load(private_copy(args.project, args.work))
    lake = Lake(settings.resolved_paths.lake)
    last = lake.dates("impressions")[-1]
    users = np.unique(lake.read("impressions", last)["user_id"].to_numpy())
    day = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(15), dt.UTC)
    ts_us = int(day.timestamp() * 1_000_000)
    print(f"load average before: {os.getloadavg()}")
    svc = Service(settings)
    svc.refresh()
    for i in range(50):  # warm the pipeline's caches before measuring
        svc.pipeline.serve(one_request(users, i, ts_us, "warm"))
    print("part 1, serving at 100 requests/s:", serving_cost(svc, users, ts_us, args.seconds))
    print(f"load average: {os.getloadavg()}")
    svc.writer.close()
    if args.flushes:
        svc = Service(settings)
        svc.refresh()
        print("part 2, a flush as the day grows:", flush_growth(svc, users, ts_us + 3_600_000_000, args.flushes))
        svc.writer.close()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
