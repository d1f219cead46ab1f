"""Neural-ranker figures: training time on 1 million rows × 50 features, and batch predict latency for 500 rows.

The data are synthetic with a known signal and two labels, so the figure is
about the trainer, not about a simulation: 45 numeric columns (counts with a
long tail, Gaussian values, a few ``*_missing`` flags with NaN where they are
set) and 5 id/categorical columns (``user_id``, ``item_id``, ``country``,
``topic``, ``surface``).  ``engaged`` depends on six numeric columns, a user
and an item effect and the topic; ``negative`` on three other columns and the
surface.  Training runs on 2 cores (``pin(2)``, ``threads=2``); prediction on
one thread, 500 rows per call (one request's candidates), timed end to end
from an Arrow table (normalization, hashing, forward pass).  Targets: training
<= 5 min; no target for the NN's predict latency (the GBDT's is p99 <= 4 ms).

    python benchmarks/training_nn.py [--rows 1000000] [--features 50] [--calls 1000] [--max-epochs 5]
                                     [--batch-size 4096] [--learning-rate 0.002]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pyarrow as pa
from common import pin
from sklearn.metrics import roc_auc_score

from homefeed.train.model import TrainingData
from homefeed.train.nn import NNRanker

CATEGORICAL = 5  # user_id, item_id, country, topic, surface


def synthetic(rows: int, features: int, seed: int = 0) -> tuple[pa.Table, list[str]]:
    """``rows`` rows of ``features`` model columns (``features - 5`` numeric + 5 ids/categoricals) and two labels."""
    rng = np.random.default_rng(seed)
    numeric = features - CATEGORICAL
    flags = min(3, numeric // 10)
    counts = numeric // 2
    columns: dict[str, np.ndarray] = {}
    for j in range(counts):
        columns[f"count_{j}"] = rng.poisson(rng.gamma(1.0, 20.0, rows)).astype(np.float32)
    for j in range(numeric - counts - flags):
        columns[f"value_{j}"] = rng.normal(0, 1, rows).astype(np.float32)
    for j in range(flags):
        missing = rng.random(rows) < 0.1
        columns[f"source{j}_missing"] = missing.astype(np.float32)
        columns[f"count_{j}"][missing] = np.nan
    names = list(columns)
    user, item = rng.integers(0, 100_000, rows), rng.integers(0, 200_000, rows)
    topic, surface = rng.integers(0, 30, rows), rng.integers(0, 3, rows)
    u_effect, i_effect, t_effect = rng.normal(0, 0.5, 100_000), rng.normal(0, 0.5, 200_000), rng.normal(0, 0.5, 30)
    x = lambda name: np.nan_to_num(columns[name])  # noqa: E731
    logit = (
        -2.5
        + 0.6 * np.log1p(x("count_0"))
        - 0.3 * np.log1p(x("count_1"))
        + 0.5 * x("value_0")
        - 0.4 * x("value_1")
        + 0.3 * x("value_2") * x("value_3")
        + u_effect[user]
        + i_effect[item]
        + t_effect[topic]
    )
    neg_logit = -4.0 + 0.5 * x("value_4") + 0.3 * np.log1p(x("count_2")) + 0.4 * (surface == 2) - 0.3 * x("value_0")
    columns["true_engaged"] = 1 / (1 + np.exp(-logit))  # not a feature: the oracle that the test AUC is held against
    columns["engaged"] = (rng.random(rows) < columns["true_engaged"]).astype(np.int8)
    columns["negative"] = (rng.random(rows) < 1 / (1 + np.exp(-neg_logit))).astype(np.int8)
    table = pa.table(
        {
            "request_id": pa.array((np.arange(rows) // 500).astype(str)),
            "user_id": user.astype(np.int64),
            "item_id": item.astype(np.int64),
            "country": pa.array(np.array(["US", "BR", "DE", "JP", "IN", "FR", "GB", "MX", "CA", "ES"])[user % 10]),
            "topic": pa.array(np.char.add("topic_", topic.astype(str))),
            "surface": pa.array(np.array(["home", "search", "related"])[surface]),
            "weight": np.ones(rows),
            **columns,
        }
    )
    return table, names


def bench_nn(rows: int = 1_000_000, features: int = 50, calls: int = 1_000, max_epochs: int = 5, **params) -> dict:
    """Fit an NNRanker on ``rows`` synthetic rows (+10% validation) on 2 threads; time 500-row predicts on 1 thread."""
    train, names = synthetic(rows, features, seed=0)
    valid, _ = synthetic(max(rows // 10, 1_000), features, seed=1)
    test, _ = synthetic(20_000, features, seed=2)
    data = TrainingData("synthetic", names, {"train": train, "validation": valid, "test": test})
    model = NNRanker(max_epochs=max_epochs, threads=2, seed=0, **params)
    start = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - start
    y = test["engaged"].to_numpy()
    auc = roc_auc_score(y, model.predict(test)["engaged"])
    oracle = roc_auc_score(y, test["true_engaged"].to_numpy())
    model.threads = 1
    batch = test.slice(0, 500)
    for _ in range(20):
        model.predict(batch)
    times = np.empty(calls)
    for k in range(calls):
        t0 = time.perf_counter()
        model.predict(batch)
        times[k] = time.perf_counter() - t0
    return {
        "rows": rows,
        "features": features,
        "fit_s": fit_s,
        "epochs": model.training["epochs"],
        "best_epoch": model.training["best_epoch"],
        "s_per_epoch": fit_s / model.training["epochs"],
        "test_auc": float(auc),
        "oracle_auc": float(oracle),
        "params": model.params(),
        "predict_p50_ms": float(np.percentile(times, 50) * 1e3),
        "predict_p99_ms": float(np.percentile(times, 99) * 1e3),
        "calls": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    args = parser.parse_args()
    pin(2)
    print(f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, load {os.getloadavg()}")
    r = bench_nn(
        args.rows,
        args.features,
        args.calls,
        args.max_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
    print(
        f"NN training: {r['rows']:,} rows × {r['features']} features: {r['fit_s']:.1f} s "
        f"({r['epochs']} epochs, best {r['best_epoch']}, {r['s_per_epoch']:.1f} s/epoch; target <= 300 s); "
        f"test AUC {r['test_auc']:.3f} (oracle {r['oracle_auc']:.3f})"
    )
    print(
        f"NN predict, 500 rows, 1 thread, {r['calls']:,} calls: p50 {r['predict_p50_ms']:.2f} ms, "
        f"p99 {r['predict_p99_ms']:.2f} ms"
    )
    print(f"params: {r['params']}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
