"""Your own logs (issue 20): ingesting a big Open Bandit-shaped log in bounded memory, and what a ranker learns from it.

**streaming**: the bundled ``random/men`` sample (10,000 rows, 34 user-item affinities a row) tiled into one
campaign log of ``--rows`` rows (row indices renumbered, so every row is a distinct impression; about 330
bytes a row as CSV), then ingested by ``homefeed ingest --format open-bandit``'s code path in a fresh process
(:func:`common.isolated`), so its peak resident memory is the ingest's own.  Each size is measured, so a peak
that does not grow with the rows shows the memory is bounded by the chunk, not the file.  Target: 5 million
rows under 2 GB.

**cv**: on each bundled sample file, a 5-fold cross-validated AUC of the product's ranker beside a plain LightGBM
fitted directly on the CSV, on the same folds.  Which parts are the product's:

- *product*: the sample is ingested (:func:`ingest_open_bandit`), the ETL computes the week's snapshots
  (:func:`run_etl`), and the dataset builder (:func:`build_dataset`) joins every impression with the feature set
  `PRODUCT_FEATURES`: built-in item and user aggregations (point in time) and the features `DECLARED` in the
  project's ``[[features.declared]]`` (the count of non-zero affinities, their max and sum, from
  ``impressions.served_features``).  The dataset is built once; its time-based train/validation/test split is
  ignored and its rows pooled, because five folds of one week cannot each be "later" than the others.  For each
  fold the product's ``GBDTRanker`` is built exactly as ``homefeed train --model gbdt --drop-empty-heads`` builds
  it (its default parameters: position as a monotone additive feature, early stopping on the validation split),
  fitted on a ``TrainingData`` whose splits are the fold's rows, registered in a throwaway registry, loaded back
  from it (checksums checked), and the loaded model's ``predict(slot="logged")`` scores the held-out fold.  The
  only benchmark-made parts are the fold assignment and the choice of rows per split.
- *plain*: ``lightgbm.train`` on the CSV's own columns read with pandas: ``position``, ``user_feature_0..3`` and
  ``item_feature_1..3`` as categoricals, ``item_feature_0``, and the count of non-zero affinities; early-stopped
  on the same validation fold.  Two settings: ``plain`` takes the product's booster settings (learning rate,
  leaves, leaf size, rounds, patience, read from ``GBDTRanker``), so product − plain is the pipeline's doing
  (features, position handling), not the tuning's; ``plain, LightGBM defaults`` is what a first try looks like.

Folds: stratified by click, seeded: the rows of each class are ordered by a stable hash of (seed, request_id)
(:func:`homefeed.hashing.stable_hash`) and dealt to the folds in turn, so each fold holds a fifth of the clicks.
Fold k is held out, fold k+1 (mod 5) is the validation split (early stopping) and the other three train; every
row is scored once, by a model that never saw it.  AUCs are of the pooled out-of-fold scores; 95% intervals are
the evaluation stage's bootstrap (Poisson(1) weights over rows, DeLong-linearized AUC; the same weights for every
model, so a difference's interval is paired).  The bootstrap holds the fitted models fixed, so it misses how much
the fold assignment itself moves a figure; with 9 clicks a fold that is as much again, so the whole comparison is
repeated over ``--repeats`` fold assignments (seeds) and the spread printed.  ``count alone`` ranks by the count of
non-zero affinities, no model: what both models should at least reach.

Figures are printed, never asserted.

    python benchmarks/own_logs.py [--part streaming,cv] [--rows 1000000,5000000] [--chunk-mib 32]
        [--samples random/men,random/women,random/all] [--folds 5] [--repeats 10] [--replicates 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from common import isolated, pin

if TYPE_CHECKING:  # pandas only for the cv part: the streaming part's child process measures its own memory
    import pandas as pd

    from homefeed.config import Settings
    from homefeed.evaluate.bootstrap import Estimate

TARGET_PEAK_BYTES = 2 * 1024**3
SAMPLE_ROWS = 10_000
PARTS = ("streaming", "cv")
#: The sample's week (UTC): the ETL's snapshots and the dataset's impressions.
OBD_FIRST, OBD_LAST = dt.date(2019, 11, 24), dt.date(2019, 11, 30)
MAP = "impressions.served_features"
#: The project's ``[[features.declared]]``: what the sample's affinities say about the row's user.
DECLARED = [
    {"name": "context_affinity_nonzero", "source": MAP, "transformation": "count_nonzero"},
    {"name": "context_affinity_max", "source": MAP, "transformation": "max"},
    {"name": "context_affinity_sum", "source": MAP, "transformation": "sum"},
]
#: The product's feature set: built-in aggregations OBD's logs can feed (items, user segments), the hour, the declared.
PRODUCT_FEATURES = [
    "item_impressions_7d",
    "item_click_rate_7d",
    "user_impressions_7d",
    "user_click_7d",
    "context_hour_of_day",
    *(d["name"] for d in DECLARED),
]
#: The plain model's columns, as the CSV has them (``affinity_nonzero`` counted from the affinity columns).
PLAIN_COLUMNS = ["position", *(f"user_feature_{k}" for k in range(4)), *(f"item_feature_{k}" for k in range(4))]
PLAIN_COLUMNS.append("affinity_nonzero")
#: Hashed categories (``item_feature_0`` is a number, price-like).
PLAIN_CATEGORICAL = [*(f"user_feature_{k}" for k in range(4)), *(f"item_feature_{k}" for k in range(1, 4))]
PLAIN_VARIANTS = ("plain", "plain, LightGBM defaults")
#: The acceptance's "matches": the paired interval of product − plain holds 0 and its point estimate is this close.
MATCH_WITHIN = 0.03


def generate(folder: Path, rows: int) -> dict:
    """``<folder>/random/men/men.csv`` of ``rows`` rows, the sample tiled with each row's index its own."""
    from homefeed.datasets import open_bandit_sample

    sample = open_bandit_sample("random/men")
    campaign = folder / "random" / "men"
    campaign.mkdir(parents=True)
    with gzip.open(sample / "item_context.csv.gz", "rb") as src, (campaign / "item_context.csv").open("wb") as out:
        shutil.copyfileobj(src, out)
    text = gzip.decompress((sample / "men.csv.gz").read_bytes()).decode("utf-8").splitlines()
    header, body = text[0], [line.split(",", 1)[1] for line in text[1:]]
    start = time.perf_counter()
    with (campaign / "men.csv").open("w", encoding="utf-8", newline="") as out:
        out.write(header + "\n")
        for base in range(0, rows, len(body)):
            n = min(len(body), rows - base)
            out.write("".join(f"{base + i},{body[i]}\n" for i in range(n)))
    path = campaign / "men.csv"
    return {"rows": rows, "bytes": path.stat().st_size, "seconds": time.perf_counter() - start}


def bench_ingest(folder: Path, lake_root: Path, chunk_bytes: int) -> dict:
    """One campaign log of the generated size into a fresh lake; the books of every table."""
    from homefeed.data.lake import Lake
    from homefeed.data.open_bandit import ingest_open_bandit

    start = time.perf_counter()
    reports = ingest_open_bandit(
        folder, Lake(lake_root / "lake"), lake_root / "q", dt.datetime.now(dt.UTC), chunk_bytes=chunk_bytes
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "tables": {r.table: (r.rows_in, r.written, r.duplicates, r.quarantined) for r in reports},
        "balanced": all(r.balanced for r in reports),
    }


def run_streaming(rows_list: list[int], chunk_mib: int) -> None:
    for rows in rows_list:
        with tempfile.TemporaryDirectory(prefix="own-logs-") as tmp:
            made = generate(Path(tmp) / "obd", rows)
            load = os.getloadavg()[0]
            got = isolated(bench_ingest, Path(tmp) / "obd", Path(tmp) / "out", chunk_mib << 20)
            impressions = got["tables"]["impressions"]
            peak = got["peak_rss"]
            print(
                f"streaming ingest, {rows:,} rows ({made['bytes'] / 1024**2:,.0f} MiB of CSV, generated in "
                f"{made['seconds']:.1f} s), chunks of {chunk_mib} MiB, load average {load:.1f} at the start"
            )
            print(
                f"  {got['seconds']:.1f} s ({impressions[1] / got['seconds']:,.0f} impressions/s); "
                f"peak resident memory {peak / 1024**3:.2f} GiB (target < {TARGET_PEAK_BYTES / 1024**3:.0f} GiB: "
                f"{'met' if peak < TARGET_PEAK_BYTES else 'NOT met'})"
            )
            for table, (rows_in, written, duplicates, quarantined) in got["tables"].items():
                books = f"in {rows_in:>10,}  written {written:>10,}  dup {duplicates:>9,}  q {quarantined:,}"
                print(f"  {table:<12} {books}")
            print(f"  books balance (rows in = written + duplicates + quarantined): {got['balanced']}")


# --- cv ------------------------------------------------------------------------------------------------------------


def read_sample(sample: str) -> pd.DataFrame:
    """The campaign log as obp ships it, one row per impression (index: OBD's row index), item columns joined."""
    import pandas as pd

    from homefeed.datasets import open_bandit_sample

    folder = open_bandit_sample(sample)
    campaign = sample.rsplit("/", 1)[-1]
    log = pd.read_csv(folder / f"{campaign}.csv.gz", index_col=0)
    items = pd.read_csv(folder / "item_context.csv.gz", index_col=0)
    affinity = log[[c for c in log.columns if c.startswith("user-item_affinity_")]].to_numpy()
    out = log[["item_id", "position", "click", *(f"user_feature_{k}" for k in range(4))]].copy()
    out["affinity_nonzero"] = (affinity != 0).sum(axis=1)
    out["affinity_shown"] = affinity[np.arange(len(log)), log["item_id"].to_numpy()]
    out = out.join(items.set_index("item_id"), on="item_id")
    for column in PLAIN_CATEGORICAL:
        out[column] = out[column].astype("category")
    return out


def stratified_folds(request_ids: np.ndarray, label: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's fold: within each class, rows ordered by a stable hash of (seed, request id), dealt in turn."""
    from homefeed.hashing import stable_hash

    keyed = np.char.add(f"{seed}:", request_ids.astype(str))
    order = np.lexsort((stable_hash(keyed), label))  # by class, then by hash
    fold = np.empty(len(label), np.int64)
    sorted_label = label[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_label)) + 1]
    within = np.arange(len(label)) - np.repeat(starts, np.diff(np.r_[starts, len(label)]))
    fold[order] = within % folds
    return fold


def product_dataset(sample: str, root: Path) -> tuple[pa.Table, list[str], dict, Settings]:
    """Ingest, ETL, dataset build through the product: every row of the sample with the product's features."""
    from homefeed.config import DatasetSettings, EtlSettings, FeatureSettings, Paths, Settings
    from homefeed.data.etl import DuckDBEngine, Params, run_etl, snapshot_lake
    from homefeed.data.lake import Lake
    from homefeed.data.open_bandit import ingest_open_bandit
    from homefeed.datasets import open_bandit_sample
    from homefeed.train import DatasetSpec, DatasetStore, build_dataset
    from homefeed.train.model import TrainingData

    features = FeatureSettings(sets={"own": PRODUCT_FEATURES}, declared=DECLARED)
    settings = Settings(paths=Paths(root=root), etl=EtlSettings(windows=[1, 7]), features=features)
    paths = settings.resolved_paths
    lake = Lake(paths.lake)
    ingest_open_bandit(open_bandit_sample(sample), lake, paths.quarantine)
    params = Params.from_settings(settings.etl, OBD_FIRST, OBD_LAST)
    run_etl(lake, snapshot_lake(paths.etl), params, DuckDBEngine())
    spec = DatasetSpec(**{**DatasetSettings().model_dump(), "start": OBD_FIRST, "end": OBD_LAST, "feature_set": "own"})
    built = build_dataset(spec, settings)
    data = TrainingData.load(DatasetStore(paths.datasets), built.id)
    rows = pa.concat_tables([data.splits[s] for s in ("train", "validation", "test") if data.splits[s] is not None])
    return rows, data.features, data.manifest, settings


def product_scores(
    rows: pa.Table, features: list[str], manifest: dict, settings: Settings, fold: np.ndarray, threads: int
) -> dict:
    """Out-of-fold probabilities of the product's GBDT, trained, registered and loaded back, fold by fold."""
    from homefeed.train.model import Objective, TrainingData
    from homefeed.train.registry import Registry, model_class

    registry = Registry.of(settings)
    scores, iterations = np.full(rows.num_rows, np.nan), []
    folds = int(fold.max()) + 1
    for k in range(folds):
        take = {"train": (fold != k) & (fold != (k + 1) % folds), "validation": fold == (k + 1) % folds}
        take["test"] = fold == k
        splits = {name: rows.filter(pa.array(mask)) for name, mask in take.items()}
        data = TrainingData(manifest["id"], list(features), splits, manifest)
        # as `homefeed train --model gbdt --drop-empty-heads` builds it: OBD logs no negative event
        ranker = model_class("gbdt")(
            objective=Objective(negative_weight=1.0),
            position="feature",
            weights="dataset",
            drop_empty_heads=True,
            threads=threads,  # `--param threads=N`
        )
        ranker.fit(data)
        version = registry.register(ranker, data, by="benchmarks/own_logs.py")
        loaded = registry.load(version.version)
        positive = loaded.objective.positive
        scores[take["test"]] = loaded.predict(splits["test"], slot="logged")[positive]
        iterations.append(version.metrics["heads"][positive]["best_iteration"])
    return {"scores": scores, "best_iterations": iterations}


def plain_params(variant: str, seed: int, threads: int) -> tuple[dict, int, int]:
    """LightGBM's parameters, rounds and early-stopping patience of a plain variant.

    ``plain``: the product's booster settings (learning rate, leaves, leaf size, rounds, patience, read from
    ``GBDTRanker``'s defaults), so a difference is the pipeline's (features, position handling), not the tuning;
    ``plain, LightGBM defaults``: what a first try looks like, with the same early stopping.
    """
    from homefeed.train.registry import model_class

    product = model_class("gbdt")()
    base = {"objective": "binary", "seed": seed, "num_threads": threads, "deterministic": True, "verbosity": -1}
    if variant == "plain, LightGBM defaults":
        return base, product.n_estimators, product.early_stopping_rounds
    tuned = {k: getattr(product, k) for k in ("learning_rate", "num_leaves", "min_child_samples")}
    return {**base, **tuned}, product.n_estimators, product.early_stopping_rounds


def plain_scores(frame: pd.DataFrame, fold: np.ndarray, variant: str, seed: int, threads: int) -> dict:
    """Out-of-fold probabilities of LightGBM fitted directly on the CSV's columns, on the same folds."""
    import lightgbm as lgb

    params, rounds, patience = plain_params(variant, seed, threads)
    x, y = frame[PLAIN_COLUMNS], frame["click"].to_numpy()
    scores, iterations = np.full(len(frame), np.nan), []
    folds = int(fold.max()) + 1
    for k in range(folds):
        train, valid, test = (fold != k) & (fold != (k + 1) % folds), fold == (k + 1) % folds, fold == k
        booster = lgb.train(
            params,
            lgb.Dataset(x[train], y[train]),
            num_boost_round=rounds,
            valid_sets=[lgb.Dataset(x[valid], y[valid])],
            callbacks=[lgb.early_stopping(patience, verbose=False)],
        )
        scores[test] = booster.predict(x[test], num_iteration=booster.best_iteration or None)
        iterations.append(booster.best_iteration)
    return {"scores": scores, "best_iterations": iterations}


def auc_estimates(label: np.ndarray, scores: dict[str, np.ndarray], replicates: int, seed: int) -> dict:
    """Each model's pooled out-of-fold AUC and the paired differences to the first, with the evaluation bootstrap."""
    from homefeed.evaluate.bootstrap import Bootstrap, Scored, interval
    from homefeed.evaluate.metrics import replicated

    boot = Bootstrap(replicates=replicates, seed=seed)
    got = {name: replicated("auc", Scored({"label": label, "score": s}), boot) for name, s in scores.items()}
    return {name: (interval(v, reps, boot.level), reps) for name, (v, reps) in got.items()}


def fold_aucs(label: np.ndarray, score: np.ndarray, fold: np.ndarray) -> list[float]:
    from sklearn.metrics import roc_auc_score

    return [float(roc_auc_score(label[fold == k], score[fold == k])) for k in range(int(fold.max()) + 1)]


def cv_file(sample: str, folds: int, seeds: list[int], replicates: int, threads: int) -> dict:
    """One sample file: per seed's folds, the product's and the plain models' out-of-fold scores, and their AUCs."""
    from homefeed.evaluate.bootstrap import interval

    frame = read_sample(sample)
    start = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="own-logs-cv-") as tmp:
        rows, features, manifest, settings = product_dataset(sample, Path(tmp))
        built_seconds = time.perf_counter() - start
        # the dataset's rows back to the CSV's: request_id is obd-<policy>-<campaign>-<row index>
        rid = rows["request_id"].to_numpy(zero_copy_only=False)
        index = np.array([int(r.rsplit("-", 1)[1]) for r in rid])
        if len(np.unique(index)) != len(frame) or not np.array_equal(np.sort(index), np.sort(frame.index)):
            raise RuntimeError(f"{sample}: the dataset holds {rows.num_rows:,} rows, not the CSV's {len(frame):,}")
        label = rows["engaged"].to_numpy(zero_copy_only=False).astype(np.int64)
        aligned = frame.loc[index].reset_index(drop=True)  # the CSV's rows in the dataset's order
        if not np.array_equal(label, aligned["click"].to_numpy()):
            raise RuntimeError(f"{sample}: the dataset's engaged label differs from the CSV's click")
        for seed in seeds:
            fold = stratified_folds(rid, label, folds, seed)  # one fold column for both models
            began = time.perf_counter()
            product = product_scores(rows, features, manifest, settings, fold, threads)
            fitted = {"product": product, **{v: plain_scores(aligned, fold, v, seed, threads) for v in PLAIN_VARIANTS}}
            scores = {name: got["scores"] for name, got in fitted.items()}
            scores["count alone"] = aligned["affinity_nonzero"].to_numpy(np.float64)
            est = auc_estimates(label, scores, replicates, seed)
            p, p_reps = est["product"]
            runs.append(
                {
                    "seed": seed,
                    "clicks_per_fold": [int(label[fold == k].sum()) for k in range(folds)],
                    "auc": {name: e for name, (e, _) in est.items()},
                    "difference": {v: interval(p.value - est[v][0].value, p_reps - est[v][1]) for v in PLAIN_VARIANTS},
                    "fold_auc": {name: fold_aucs(label, s, fold) for name, s in scores.items() if name in fitted},
                    "best_iterations": {name: got["best_iterations"] for name, got in fitted.items()},
                    "seconds": time.perf_counter() - began,
                }
            )
    return {
        "sample": sample,
        "rows": len(label),
        "clicks": int(label.sum()),
        "nonzero_rows": int((aligned["affinity_nonzero"] > 0).sum()),
        "nonzero_clicks": int(label[aligned["affinity_nonzero"].to_numpy() > 0].sum()),
        "shown_nonzero_rows": int((aligned["affinity_shown"] != 0).sum()),
        "features": features,
        "built_seconds": built_seconds,
        "runs": runs,
    }


def verdict(diff: Estimate) -> str:
    """The acceptance rule: the paired interval holds 0 and the point estimate is within 0.03."""
    if diff.low <= 0 <= diff.high and abs(diff.value) <= MATCH_WITHIN:
        return "matches"
    if diff.low > 0:
        return "product better"
    if diff.high < 0:
        return "product WORSE"
    return f"interval holds 0, but |difference| > {MATCH_WITHIN}"


def run_cv(samples: list[str], folds: int, seeds: list[int], replicates: int, threads: int) -> None:
    print(
        f"cross-validated AUC, {folds} folds stratified by click, {len(seeds)} fold assignment(s) (seeds "
        f"{seeds[0]}..{seeds[-1]}); intervals: {replicates:,} Poisson-bootstrap replicates over rows of the pooled "
        "out-of-fold scores (95%, percentile), the same replicates for every model (paired differences); "
        f"LightGBM on {threads} thread(s)"
    )
    print(f"  plain columns: {', '.join(PLAIN_COLUMNS)}")
    for sample in samples:
        load = os.getloadavg()[0]
        got = cv_file(sample, folds, seeds, replicates, threads)
        runs = got["runs"]
        print(f"{sample}: {got['rows']:,} rows, {got['clicks']} clicks; load average {load:.1f} at the start")
        print(
            f"  rows with any non-zero affinity: {got['nonzero_rows']:,}, holding {got['nonzero_clicks']} of the "
            f"clicks; rows with a non-zero affinity for the shown item: {got['shown_nonzero_rows']}"
        )
        print(f"  product features: {', '.join(got['features'])}")
        print(
            f"  {got['built_seconds']:.1f} s ingest + ETL + dataset build through the product; "
            f"{np.mean([r['seconds'] for r in runs]):.1f} s a fold assignment (all models' fits, registrations, scores)"
        )
        first = runs[0]
        print(f"  seed {first['seed']}: clicks per fold {first['clicks_per_fold']}")
        for name, e in first["auc"].items():
            extra = ""
            if name in first["fold_auc"]:
                per, its = first["fold_auc"][name], first["best_iterations"][name]
                extra = f"  per fold {min(per):.2f}-{max(per):.2f}, best iterations {its}"
            print(f"    AUC {name:<26} {e.value:.3f} [{e.low:.3f}, {e.high:.3f}]{extra}")
        for variant, diff in first["difference"].items():
            text = f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"
            print(f"    product - {variant:<24} {text}: {verdict(diff)}")
        if len(runs) > 1:
            print("  every fold assignment: AUC product, plain; product - plain [95%]: verdict")
            for run in runs:
                auc, diff = run["auc"], run["difference"]["plain"]
                print(
                    f"    seed {run['seed']}: {auc['product'].value:.3f}, {auc['plain'].value:.3f}; "
                    f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]: {verdict(diff)}"
                )
        for name in ("product", *PLAIN_VARIANTS):
            values = [run["auc"][name].value for run in runs]
            print(
                f"  AUC {name:<26} mean {np.mean(values):.3f} over the fold assignments "
                f"({min(values):.3f}-{max(values):.3f})"
            )
        for variant in PLAIN_VARIANTS:
            diffs = [run["difference"][variant] for run in runs]
            matched = sum(verdict(d) == "matches" for d in diffs)
            holds = sum(d.low <= 0 <= d.high for d in diffs)
            print(
                f"  product - {variant}: mean {np.mean([d.value for d in diffs]):+.3f} (from "
                f"{min(d.value for d in diffs):+.3f} to {max(d.value for d in diffs):+.3f}); interval holds 0 in "
                f"{holds} of {len(diffs)}, 'matches' in {matched}"
            )
        half = np.mean([(run["auc"]["plain"].high - run["auc"]["plain"].low) / 2 for run in runs])
        print(
            f"  with {got['clicks']} clicks an AUC is known to about +-{half:.2f}: a model at chance (0.50) and one at "
            f"{0.5 + half:.2f} cannot be told apart on this file alone"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default=",".join(PARTS), help=f"comma-separated parts to run: {', '.join(PARTS)}")
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated sizes of the generated log")
    parser.add_argument("--chunk-mib", type=int, default=32, help="bytes of CSV ingested at a time, in MiB")
    parser.add_argument("--samples", default="random/men,random/women,random/all", help="bundled sample files (cv)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="fold assignments (seeds 0..N-1) per file (cv)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="LightGBM threads (cv): on a shared machine two threads' OpenMP waits made a fit 20-40x slower",
    )
    parser.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates of the intervals (cv)")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    parts = args.part.split(",")
    if unknown := [p for p in parts if p not in PARTS]:
        parser.error(f"--part: unknown part(s) {', '.join(unknown)}; expected {', '.join(PARTS)}")
    pin(args.cores)
    print(f"machine: {platform.machine()}, {args.cores} cores, Python {platform.python_version()}")
    if "streaming" in parts:
        run_streaming([int(r) for r in args.rows.split(",")], args.chunk_mib)
    if "cv" in parts:
        run_cv(args.samples.split(","), args.folds, list(range(args.repeats)), args.replicates, args.threads)


if __name__ == "__main__":
    main()
