"""The service's metrics: stage times reach Prometheus in bulk exactly as one `observe` each would put them."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from homefeed.serve.metrics import BUCKETS, Metrics, observe_many
from homefeed.serve.pipeline import STAGES
from homefeed.serve.stages import StageRun


def _samples(registry: CollectorRegistry) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_counts_each_bucket_and_the_sum_as_observe_does():
    rng = np.random.default_rng(3)
    # times on the buckets' bounds too: a bound is inclusive (le)
    values = np.concatenate([rng.exponential(0.004, 5000), np.array(BUCKETS), [0.0, 2.0, 7.5]])
    one, bulk = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("t_seconds", "t", ["stage"], buckets=BUCKETS, registry=one).labels("score")
    for v in values:
        by_one.observe(float(v))
    observe_many(Histogram("t_seconds", "t", ["stage"], buckets=BUCKETS, registry=bulk).labels("score"), values)
    expected, got = _samples(one), _samples(bulk)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_flush_moves_noted_stage_runs_and_failures_into_the_exposition():
    metrics = Metrics()
    for ms in (0.4, 3.0, 12.0):
        metrics.stage(StageRun(STAGES["score"], ms, None))
    metrics.stage(StageRun(STAGES["user"], 80.0, "over its budget (80.0 ms > 50 ms)"))
    text = metrics.render().decode()  # a scrape flushes first
    assert 'homefeed_stage_seconds_count{stage="score"} 3.0' in text
    assert 'homefeed_stage_seconds_bucket{le="0.005",stage="score"} 2.0' in text
    assert 'homefeed_stage_failures_total{stage="user"} 1.0' in text
    metrics.flush()  # nothing noted since: counts unchanged
    assert generate_latest(metrics.registry).decode().count('homefeed_stage_seconds_count{stage="score"} 3.0') == 1


def test_garbage_collector_pauses_are_timed_while_watched_and_only_then():
    metrics = Metrics()
    metrics.watch_gc()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        metrics.unwatch_gc()
    assert metrics._on_gc not in gc.callbacks
    gc.collect(0)  # not counted: no longer watched
    text = metrics.render().decode()
    assert 'homefeed_gc_pause_seconds_count{generation="0"} 1.0' in text
    assert 'homefeed_gc_pause_seconds_count{generation="2"} 1.0' in text
