"""Prometheus metrics of the service: requests, latency per stage, fallbacks, failures, logging, the model.

Each service owns its own registry (tests start several in one process).  Stage timings are noted by the request
and moved into their histograms off the request's path, on every refresh and on every scrape of ``/metrics``.
With several uvicorn workers, each worker counts its own requests; set ``PROMETHEUS_MULTIPROC_DIR`` to a shared
empty folder before starting and ``/metrics`` aggregates every worker (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from homefeed.serve.stages import StageRun

#: Stage times held per stage between flushes at most (should flushes stop).
PENDING_LIMIT = 1_000_000
#: Latency buckets in seconds: the service's budget is milliseconds.
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "homefeed_requests", "Feed requests answered, by surface and outcome", ["surface", "outcome"], registry=r
        )
        self.latency = Histogram(
            "homefeed_request_seconds", "End-to-end time of a feed request", ["surface"], buckets=BUCKETS, registry=r
        )
        self.stage_latency = Histogram(
            "homefeed_stage_seconds", "Time of each pipeline stage", ["stage"], buckets=BUCKETS, registry=r
        )
        self.stage_failures = Counter(
            "homefeed_stage_failures", "Stage runs that failed or ran over their budget", ["stage"], registry=r
        )
        self.fallbacks = Counter(
            "homefeed_fallbacks", "Requests ranked by the popularity fallback", ["surface"], registry=r
        )
        self.errors = Counter("homefeed_request_errors", "Requests refused, by HTTP status", ["status"], registry=r)
        self.events = Counter("homefeed_events", "Engagement events accepted", registry=r)
        self.logged = Gauge("homefeed_log_rows", "Rows of each table written to the lake", ["table"], registry=r)
        self.shed = Gauge(
            "homefeed_log_shed_rows", "Rows not logged because the log queue was full", ["table"], registry=r
        )
        self.lost = Gauge(
            "homefeed_log_lost_rows", "Rows of log writes that failed (never in the lake)", ["table"], registry=r
        )
        self.log_restarts = Gauge(
            "homefeed_log_child_restarts", "Log child processes that died and were replaced", registry=r
        )
        self.model = Gauge("homefeed_model_info", "The model serving (1) by version", ["version"], registry=r)
        self.compiled = Gauge(
            "homefeed_model_compiled", "1 while every head of the serving model runs as compiled trees", registry=r
        )
        self.reload_failures = Gauge("homefeed_model_reload_failures", "Model loads refused since start", registry=r)
        self.store_up = Gauge("homefeed_online_store_up", "1 while the online store answers", registry=r)
        self.gc_pauses = Histogram(
            "homefeed_gc_pause_seconds",
            "Pauses of the garbage collector in this process (every thread waits), by generation",
            ["generation"],
            buckets=BUCKETS,
            registry=r,
        )
        self._gc_began = 0.0
        self._gc_pending: dict[int, list[float]] = {0: [], 1: [], 2: []}  # the callback only appends floats
        self._stage_timers: dict[str, Histogram] = {}
        # appended by requests, taken by `flush`: per stage a list of floats (no object the collector tracks)
        self._pending: dict[str, list[float]] = {}
        self._failed: list[str] = []
        self._flushing = threading.Lock()

    def stage(self, run: StageRun) -> None:
        """Note a stage's run; it reaches the histograms at the next `flush`.

        Observed on the spot, a request's 14 stage times cost it ~0.15 ms; queued as `StageRun` objects, they were
        most of what the garbage collector's young generations held (gen-1 passes of 1.5-2.4 ms every ~300
        requests), so a request appends two floats' worth to a list and nothing it allocates outlives it.
        """
        times = self._pending.get(run.stage.name)
        if times is None:
            times = self._pending.setdefault(run.stage.name, [])
        if len(times) < PENDING_LIMIT:  # bounded should flushes stop
            times.append(run.ms)
        if run.error is not None:
            self._failed.append(run.stage.name)

    def watch_gc(self) -> None:
        """Time every collection of the garbage collector while serving (until `unwatch_gc`).

        A collection stops every thread, so its pauses are part of the latency; the callback only notes the time
        (observing there could wait on a lock the interrupted thread holds) and `flush` moves them.
        """
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        elif len(pending := self._gc_pending[min(int(info["generation"]), 2)]) < PENDING_LIMIT:
            pending.append(time.perf_counter() - self._gc_began)

    def flush(self) -> None:
        """Move the stage runs noted since the last flush into the histograms (on /metrics and every refresh).

        Each stage's times go into its histogram at once (`observe_many`): observed one by one, a refresh's 3,000
        held the GIL for 3-5 ms, and the requests that overlapped it waited.
        """
        with self._flushing:  # the refresh thread and a scrape may flush at once; requests only append
            for name, times in list(self._pending.items()):
                ms = _take(times)
                if not ms:
                    continue
                timer = self._stage_timers.get(name)
                if timer is None:  # one labelled child per stage, kept: ``labels`` costs as much as ``observe``
                    timer = self._stage_timers[name] = self.stage_latency.labels(name)
                observe_many(timer, np.array(ms) / 1000)
            for generation, pauses in self._gc_pending.items():
                if seconds := _take(pauses):
                    observe_many(self.gc_pauses.labels(str(generation)), np.array(seconds))
            for name in _take(self._failed):
                self.stage_failures.labels(name).inc()

    def render(self) -> bytes:
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)


def _take(items: list) -> list:
    """What ``items`` holds now, removed from it; what another thread appends meanwhile stays (both steps are one
    operation each under the GIL)."""
    n = len(items)
    taken = items[:n]
    del items[:n]
    return taken


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe`` of each of ``values``, counted per bucket in NumPy: one increment per bucket touched.

    prometheus-client has no batch observe; this adds to the same bucket and sum values ``observe`` does (its
    ``_buckets`` and ``_sum``, stable since 0.4), so the exposition, multiprocess mode included, is unchanged.
    """
    if not len(values):
        return
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for i in np.flatnonzero(counts):
        histogram._buckets[i].inc(int(counts[i]))
