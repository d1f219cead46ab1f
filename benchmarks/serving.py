"""The ranking service under load: one uvicorn worker, 100 requests/s from a second process on loopback.

Set-up (not timed): a simulated world's logs → lake → ETL → dataset → a GBDT of exactly 300 trees per head
(early stopping off), registered as ``production``; the latest snapshot materialized into the online store;
surfaces' quotas set so a request has about 500 candidates after deduplication and filters.

Then ``homefeed serve`` starts (one worker, its own process) and this process sends an open-loop load: requests
are scheduled every 10 ms whatever the answers do, over keep-alive connections, and each latency is measured
from the moment the request is sent, before it waits for a free connection (so a stall is counted against every
request it delays, not hidden), and also from its scheduled time (the generator's own timer lateness included).
After the run the same model's bare ``predict`` is timed on the same kind of rows — the hydrated candidates of
real requests, taken from the pipeline in this process — so the service's overhead over the model is read in one
run.

The service compiles the model's trees (lleaves) after loading it; the load starts once ``/readyz`` says every head
is compiled (or why it cannot be).  The bare predict is timed both as served (compiled) and by LightGBM itself.

Then, for ``--floor-seconds``, the same generator sends ``GET /healthz`` to the same server at the same rate: the
latency of HTTP, the event loop and the generator alone, under which no feed can be served.

Targets (issue 13): p99 ≤ 10 ms, p50 ≤ 1.5 x bare predict p50 + 1 ms, zero errors; stretch p99 ≤ 5 ms.

    python benchmarks/serving.py                 # 60 s at 100 requests/s
    python benchmarks/serving.py --quick         # a small world, 15 s
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from homefeed.config import Settings
from homefeed.data.lake import Lake
from homefeed.features.definitions import feature_set
from homefeed.features.materialize import materialize
from homefeed.features.online import make_store
from homefeed.features.redis_store import free_port
from homefeed.pipeline.demo import train_on_logs
from homefeed.sim import Simulation, make_baseline
from homefeed.train import DatasetStore
from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import TrainingData
from homefeed.train.registry import Registry

SOURCES = {"affinity": 260, "creators": 60, "popular": 200, "fresh": 80, "explore": 30}


def project(root: Path, users: int, days: int) -> tuple[Path, Settings]:
    config = root / "homefeed.toml"
    config.write_text(
        f"""
[paths]
root = "{root / ".homefeed"}"
[sim]
users = {users}
[serve]
log_flush_seconds = 1.0
[serve.surfaces.home.sources]
{chr(10).join(f"{k} = {v}" for k, v in SOURCES.items())}
""",
        encoding="utf-8",
    )
    from homefeed import config as config_mod

    settings = config_mod.load(config)
    logs = settings.resolved_paths.sim_logs / "random"
    s = settings.sim
    Simulation(s).run(make_baseline("random", seed=s.seed, max_age_days=s.item_lifetime_days), days, logs)
    trained = train_on_logs(settings, logs, kinds=())
    data = TrainingData.load(DatasetStore(settings.resolved_paths.datasets), trained.dataset_id)
    model = GBDTRanker(position="feature", n_estimators=300, early_stopping_rounds=1_000_000, seed=1).fit(data)
    registry = Registry.of(settings)
    version = registry.register(model, data).version
    registry.alias("production", version, "benchmark: 300 trees per head")
    fs = feature_set(settings.features.set, settings.etl, settings.features)
    with make_store(settings) as store:
        materialize(fs, Lake(settings.resolved_paths.etl), store)
    return config, settings


def serve_time(settings: Settings) -> str:
    """Requests happen the afternoon after the last logged day (the world's clock, not the wall's)."""
    last = Lake(settings.resolved_paths.lake).dates("impressions")[-1]
    return f"{last + dt.timedelta(days=1):%Y-%m-%d}T15:00:00Z"


#: The HTTP floor's request: an endpoint that does nothing, through the same server, loop and load generator.
PROBE = b"GET /healthz HTTP/1.1\r\nhost: bench\r\n\r\n"


async def _one(reader, writer, body: bytes | None) -> tuple[int, bytes]:
    """One request on a keep-alive connection: a feed request with ``body``, or the floor's probe (None)."""
    writer.write(
        PROBE
        if body is None
        else b"POST /v1/feed HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, await reader.readexactly(length)


async def load(
    port: int, users: np.ndarray, when: str, rate: float, seconds: float, connections: int = 16, probe: bool = False
) -> dict:
    """Open-loop load: a request every 1/rate s, each on a free keep-alive connection, whatever the answers do.

    Each request is timed from when the load generator sends it (before waiting for a free connection, so a
    stalled server is counted against every request it delays) and from when it was scheduled: the difference is
    the generator's own lateness (asyncio wakes timers up to about a millisecond late), reported apart.
    """
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    sent, scheduled, late, statuses, degraded, fallback = [], [], [], [], 0, 0
    rng = np.random.default_rng(0)
    start = time.perf_counter() + 0.1
    n = int(rate * seconds)
    tasks = []

    async def fire(at: float) -> None:
        nonlocal degraded, fallback
        began = time.perf_counter()
        conn = await pool.get()
        user = int(users[rng.integers(len(users))])
        body = None if probe else json.dumps({"user_id": user, "slate_size": 20, "context": {"ts": when}}).encode()
        try:
            status, payload = await _one(*conn, body)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status, payload = 599, b"{}"
            conn = await asyncio.open_connection("127.0.0.1", port)
        done = time.perf_counter()
        sent.append(done - began)
        scheduled.append(done - at)
        late.append(began - at)
        statuses.append(status)
        if status == 200 and not probe:
            answer = json.loads(payload)
            degraded += bool(answer["degraded"])
            fallback += answer["fallback"] is not None
        pool.put_nowait(conn)

    for i in range(n):  # each request starts at its time: none is created ahead (3,000 at once delayed the first)
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        tasks.append(asyncio.create_task(fire(at)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        _, w = pool.get_nowait()
        w.close()
    ms, from_schedule, lateness = (np.array(v) * 1000 for v in (sent, scheduled, late))
    return {
        "requests": n,
        "errors": int(sum(s != 200 for s in statuses)),
        "degraded": degraded,
        "fallback": fallback,
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "p99.9": float(np.percentile(ms, 99.9)),
        "max": float(ms.max()),
        "scheduled": [float(np.percentile(from_schedule, q)) for q in (50, 99, 99.9)],
        "late": [float(np.percentile(lateness, q)) for q in (50, 99)],
        "achieved_rate": n / (time.perf_counter() - start),
    }


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the server process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> str:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def samples(metrics: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The server's ``/metrics`` text as ``{sample name: [(labels, value), ...]}`` (prometheus-client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def server_histogram(metrics: dict) -> dict[float, float]:
    """The cumulative buckets of the service's own request-latency histogram (upper bound in ms -> count)."""
    return {float(labels["le"]) * 1000: value for labels, value in metrics.get("homefeed_request_seconds_bucket", [])}


def gc_pauses(metrics: dict) -> dict[str, float]:
    """The server's garbage-collector pauses so far: ``gen0_count``, ``gen0_sum`` (s) and so on per generation."""
    return {
        f"gen{labels['generation']}_{kind}": value
        for kind in ("count", "sum")
        for labels, value in metrics.get(f"homefeed_gc_pause_seconds_{kind}", [])
    }


def steal_ms() -> float:
    """CPU time the hypervisor gave to others while this VM wanted it (all CPUs, /proc/stat), in ms so far."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def quantile(cumulative: dict[float, float], q: float) -> float:
    """The smallest bucket bound under which a share ``q`` of the counted requests fell."""
    total = cumulative.get(float("inf"), 0.0)
    return next((le for le, n in sorted(cumulative.items()) if total and n >= q * total), float("inf"))


def hydrated_rows(settings: Settings, users: np.ndarray, when: str, samples: int) -> tuple[list[pa.Table], dict]:
    """The model's input rows of ``samples`` real requests, built by the service's own pipeline in this process."""
    from homefeed.feed import RequestBatch
    from homefeed.serve.service import Service

    service = Service(settings)
    service.refresh()
    model = service.models.current
    ts = int(dt.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() * 1_000_000)
    tables, counts = [], []
    for i in range(samples):
        requests = RequestBatch(
            request_id=pa.array([f"bench-{i}"]),
            user_id=np.array([users[i % len(users)]], np.int64),
            ts=np.array([ts], np.int64),
            slate_size=np.array([20], np.int32),
            country=pa.array(["US"]),
        )
        served = service.pipeline.serve(requests)
        if served.matrix is None:
            continue
        counts.append(len(served.matrix))
        cols = model.features.columns
        tables.append(pa.Table.from_arrays([pa.array(served.matrix[:, j]) for j in range(len(cols))], names=cols))
    service.writer.close()
    return tables, {"model": model, "candidates": counts}


def wait_compiled(port: int, deadline: float) -> dict:
    """Wait until the service's model runs as compiled trees (or says why it cannot); its scorer per head."""
    import httpx

    while True:
        scorer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json().get("scorer", {})
        if (scorer and all(v != "compiling" for v in scorer.values())) or time.monotonic() > deadline:
            return scorer
        time.sleep(0.5)


def bare_predict(ranker, tables: list[pa.Table]) -> tuple[float, float]:
    """p50 and p99 in ms of the ranker's predict on each table, three passes after one warm-up."""
    ranker.predict(tables[0])
    times = []
    for _ in range(3):
        for t in tables:
            t0 = time.perf_counter()
            ranker.predict(t)
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small world and a 15 s run")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--floor-seconds", type=float, default=15.0, help="the HTTP floor's run (GET /healthz)")
    parser.add_argument("--keep", type=Path, default=None, help="build (or reuse) the project here")
    args = parser.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    users, days = (4_000, 8) if args.quick else (20_000, 10)
    root = args.keep or Path(tempfile.mkdtemp(prefix="homefeed-serving-"))
    root.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    config = root / "homefeed.toml"
    if args.keep and config.exists():
        from homefeed import config as config_mod

        settings = config_mod.load(config)
    else:
        config, settings = project(root, users, days)
    print(f"set-up: {users:,} users, {days} days, 300-tree GBDT in {time.perf_counter() - began:.0f} s ({root})")
    when = serve_time(settings)
    lake = Lake(settings.resolved_paths.lake)
    active = np.unique(lake.read("impressions", lake.dates("impressions")[-2])["user_id"].to_numpy())

    tables, info = hydrated_rows(settings, active, when, 300)
    model = info["model"]
    candidates = np.array(info["candidates"])
    print(
        f"candidates per request after filters: mean {candidates.mean():.0f}, "
        f"min {candidates.min()}, max {candidates.max()}"
    )

    port = free_port()
    env = {**os.environ, "HOMEFEED_CONFIG": str(config)}
    cmd = [sys.executable, "-m", "homefeed.cli", "serve", "--port", str(port), "--workers", "1", "-c", str(config)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        scorer = wait_compiled(port, deadline=time.monotonic() + 600)
        print(f"scorer per head: {scorer}")
        # the load generator's own pauses would count against the service: this process holds a whole project
        # (the hydrated rows, the model, the lake's tables), and a full collection of it stalled sending for 0.1 s
        gc.collect()
        gc.freeze()
        gc.disable()
        asyncio.run(load(port, active, when, args.rate, 3.0))  # warm-up, not counted
        load_before = os.getloadavg()
        cpu_before, metrics_before, steal_before = server_cpu(server.pid), samples(scrape(port)), steal_ms()
        result = asyncio.run(load(port, active, when, args.rate, seconds))
        cpu_after, metrics_after, steal_after = server_cpu(server.pid), samples(scrape(port)), steal_ms()
        # the floor under any feed: the same generator, server and loop answering GET /healthz, nothing else
        floor = asyncio.run(load(port, active, when, args.rate, args.floor_seconds, probe=True))
        load_after = os.getloadavg()
    finally:
        gc.enable()
        server.terminate()
        server.wait(timeout=30)

    # the bare model on the same kind of rows, in this process, after the load (the server is gone): as the
    # service scores them (compiled trees where they could be compiled), and by LightGBM itself
    ranker = model.ranker
    status = ranker.compile(settings.resolved_paths.compiled) if hasattr(ranker, "compile") else {}
    bare50, bare99 = bare_predict(ranker, tables)
    compiled, ranker.compiled = dict(getattr(ranker, "compiled", {})), {}
    lgb50, lgb99 = bare_predict(ranker, tables)
    ranker.compiled = compiled

    print(
        f"\nload: {result['requests']:,} requests at {args.rate:.0f}/s for {seconds:.0f} s "
        f"(achieved {result['achieved_rate']:.1f}/s), one worker, loopback; load average {load_before[0]:.2f} "
        f"before, {load_after[0]:.2f} after (1 min)"
    )
    print(
        f"errors (non-200): {result['errors']}; degraded answers: {result['degraded']}; fallback: {result['fallback']}"
    )
    hist_before, hist_after = server_histogram(metrics_before), server_histogram(metrics_after)
    inside = {le: hist_after[le] - hist_before.get(le, 0.0) for le in hist_after}
    gc_before, gc_after = gc_pauses(metrics_before), gc_pauses(metrics_after)
    gc_delta = {k: v - gc_before.get(k, 0.0) for k, v in gc_after.items()}
    print(
        f"in the server (its /metrics, the time from request to answer, buckets' upper bounds): "
        f"p50 <= {quantile(inside, 0.5)} ms, p99 <= {quantile(inside, 0.99)} ms; its CPU: "
        f"{(cpu_after - cpu_before) / result['requests'] * 1000:.2f} ms per request (log writer child excluded)"
    )
    print(
        "its garbage collector: "
        + ", ".join(
            f"gen {g}: {gc_delta.get(f'gen{g}_count', 0):.0f} pauses, {gc_delta.get(f'gen{g}_sum', 0) * 1000:.1f} ms"
            for g in (0, 1, 2)
        )
        + f"; the hypervisor took {steal_after - steal_before:.0f} ms of CPU from this VM during the load (steal)"
    )
    print(
        f"end-to-end latency ms (from send): p50 {result['p50']:.2f}, p90 {result['p90']:.2f}, "
        f"p99 {result['p99']:.2f}, p99.9 {result['p99.9']:.2f}, max {result['max']:.2f}"
    )
    print(
        f"the HTTP floor (GET /healthz at {args.rate:.0f}/s for {args.floor_seconds:.0f} s, same generator, server): "
        f"p50 {floor['p50']:.2f}, p90 {floor['p90']:.2f}, p99 {floor['p99']:.2f}, p99.9 {floor['p99.9']:.2f} ms; "
        f"errors {floor['errors']}"
    )
    print(
        "from the schedule (the load generator's own lateness included: p50 {:.2f}, p99 {:.2f} ms): "
        "p50 {:.2f}, p99 {:.2f}, p99.9 {:.2f} ms".format(*result["late"], *result["scheduled"])
    )
    scored_by = "compiled trees" if status and all(v == "compiled" for v in status.values()) else "LightGBM"
    print(
        f"bare predict of the same rows ({candidates.mean():.0f} per request, 2 heads x 300 trees), as served "
        f"({scored_by}): p50 {bare50:.2f} ms, p99 {bare99:.2f} ms; by LightGBM: p50 {lgb50:.2f} ms, p99 {lgb99:.2f} ms"
    )
    target50 = 1.5 * bare50 + 1.0
    checks = [
        ("p99 <= 10 ms", result["p99"] <= 10.0),
        (f"p50 <= 1.5 x bare p50 + 1 ms = {target50:.2f} ms", result["p50"] <= target50),
        ("zero errors", result["errors"] == 0),
        ("stretch: p99 <= 5 ms", result["p99"] <= 5.0),
    ]
    for name, ok in checks:
        print(f"  {'met' if ok else 'NOT met'}: {name}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
