"""Evaluation figures on 2 cores: every metric over 10 million scored rows (issue 6).

Synthetic rows: about 1 million requests × 10 rows, each with a label, a
probability, a request id, topic, item, creator, item age, a negative action
and the funnel's actions.  Times, each in a fresh process pinned to the cores:

- **metrics, point estimates**: every registered metric (k = 5 for the ones
  that take k) — target <= 10 s;
- **metrics, bootstrap B=100**: the same with 100 replicates (no target);
- **side-by-side**: two models' rank-biased overlap, top-slot change rate and
  rank shift over every request, with B=100 intervals (no target);
- **slices**: the metrics per slice and a two-model comparison are many such
  runs on subsets, so they are not timed separately.

The table is built before the clock starts.  Figures are printed, never asserted.

    python benchmarks/evaluation.py [--requests 1000000] [--per-request 10] [--cores 2] [--replicates 100] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from common import isolated, pin

TARGET_S = 10.0
K = 5


def synthetic(requests: int, per: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Scored rows shaped like a feed's: 1 positive in ~8, a catalogue of requests/5 items, creators/items = 1/20."""
    rng = np.random.default_rng(seed)
    n = requests * per
    items = max(requests // 5, 10)
    item = rng.zipf(1.3, n) % items  # a few popular items, a long tail
    truth = rng.beta(1, 7, n)
    label = (rng.random(n) < truth).astype(np.int8)
    closeup = ((rng.random(n) < 0.5) | (label > 0)).astype(np.int8) * (rng.random(n) < 3 * truth)
    return {
        "request_id": np.repeat(np.arange(requests, dtype=np.int64), per),
        "label": label,
        "score": np.clip(truth + rng.normal(0, 0.05, n), 0, 1),
        "item_id": item.astype(np.int64),
        "creator_id": (item // 20).astype(np.int64),
        "topic": (item % 32).astype(np.int16),
        "item_age_hours": rng.exponential(72, n).astype(np.float32),
        "negative": (rng.random(n) < 0.02).astype(np.int8),
        "closeup": closeup.astype(np.int8),
        "click": (closeup * (rng.random(n) < 0.3)).astype(np.int8),
        "save": label,
    }


def names() -> list[str]:
    from homefeed.evaluate.metrics import METRICS

    return [m.replace("@k", f"@{K}") for m in METRICS]


def bench_metrics(requests: int, per: int, replicates: int) -> dict:
    """Every metric once (point estimates when ``replicates`` is 0), in this fresh process."""
    from homefeed.evaluate.bootstrap import Bootstrap, Scored
    from homefeed.evaluate.metrics import evaluate

    cols = synthetic(requests, per)
    start = time.perf_counter()
    rows = Scored(cols)
    results = {}
    timings = {}
    for name in names():  # one at a time so each metric's share shows; rows' sort is shared (cached)
        t = time.perf_counter()
        results[name] = evaluate(rows, [name], Bootstrap(replicates=replicates, seed=1))[name]
        timings[name] = time.perf_counter() - t
    return {"seconds": time.perf_counter() - start, "rows": len(rows), "results": results, "timings": timings}


def bench_side_by_side(requests: int, per: int, replicates: int) -> dict:
    """Two models' agreement over every request: rank-biased overlap, top-slot changes, rank shift, with CIs."""
    from homefeed.evaluate.bootstrap import Bootstrap, Scored
    from homefeed.evaluate.side_by_side import agreement

    cols = synthetic(requests, per)
    other = cols["score"] + np.random.default_rng(1).normal(0, 0.05, len(cols["score"]))
    start = time.perf_counter()
    result = agreement(Scored(cols), Scored({**cols, "score": other}), boot=Bootstrap(replicates=replicates, seed=1))
    return {"seconds": time.perf_counter() - start, "rows": len(cols["score"]), "result": result}


OPE_TARGET_S = 5.0


def bench_ope(rows: int, actions: int = 80, seed: int = 0) -> dict:
    """Every off-policy estimator over ``rows`` logged slots (uniform logging, a reward model), with CIs."""
    from homefeed.evaluate.ope import LoggedFeedback, estimate

    rng = np.random.default_rng(seed)
    shown = rng.integers(0, actions, rows)
    target = rng.dirichlet(np.ones(actions))
    truth = rng.uniform(0.01, 0.1, actions)
    reward = (rng.random(rows) < truth[shown]).astype(np.float64)
    q = truth * rng.uniform(0.8, 1.2, actions)
    fb = LoggedFeedback(reward, np.full(rows, 1.0 / actions), target[shown], q[shown], np.full(rows, q @ target))
    began = time.perf_counter()
    results = estimate(fb)
    return {"seconds": time.perf_counter() - began, "rows": rows, "results": results, "true": float(truth @ target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--per-request", type=int, default=10)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="100k requests, to try the script")
    args = parser.parse_args()
    if args.quick:
        args.requests = 100_000
    pin(args.cores)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, pinned to {cores}; "
          f"python {platform.python_version()}; load average {load}")  # fmt: skip
    for replicates in (0, args.replicates):
        r = isolated(bench_metrics, args.requests, args.per_request, replicates)
        label = "point estimates" if replicates == 0 else f"bootstrap B={replicates}"
        verdict = f" (target <= {TARGET_S:.0f} s)" if replicates == 0 else ""
        print(f"\n{len(names())} metrics, {label}, {r['rows']:,} rows: {r['seconds']:.2f} s{verdict}, "
              f"peak memory {r['peak_rss'] / 2**30:.2f} GiB")  # fmt: skip
        for name, est in r["results"].items():
            ci = f"[{est.low:.4f}, {est.high:.4f}]" if replicates else ""
            print(f"  {name:<20} {est.value:.4f} {ci:<20} {r['timings'][name]:6.2f} s")
    ope = isolated(bench_ope, args.requests * args.per_request)
    verdict = "ok" if ope["seconds"] <= OPE_TARGET_S else "OVER"
    print(f"\noff-policy evaluation, 5 estimators with CIs, {ope['rows']:,} logged rows: {ope['seconds']:.2f} s "
          f"(target <= {OPE_TARGET_S:.0f} s: {verdict}); true value {ope['true']:.5f}")  # fmt: skip
    for name, est in ope["results"].items():
        print(f"  {name:<6} {est.value:.5f} [{est.low:.5f}, {est.high:.5f}]")
    sbs = isolated(bench_side_by_side, args.requests, args.per_request, args.replicates)
    a = sbs["result"]
    print(f"\nside-by-side agreement of two models (B={args.replicates}), {sbs['rows']:,} rows, "
          f"{a.requests:,} requests: {sbs['seconds']:.2f} s; "
          f"RBO {a.rbo.value:.4f}, top slot changed {a.top_slot_changed.value:.1%}")  # fmt: skip
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
