"""The LightGBM ranker: one booster per head, binary or lambdarank, early stopping on the validation split.

Why LightGBM's own formats: a booster is saved as its **text** model (``<head>.txt``) — readable, diffable and
safe to load, unlike a pickle — and every file's SHA-256 is recorded in ``model.json`` by ``Ranker.save``, so a
tampered or truncated file is refused on load instead of silently scoring with a different model.

Why a calibration for lambdarank: a ranking objective's raw scores only order a request's items; the ranking
score ``p(positive) − λ·p(negative)`` subtracts a probability from them, so they must be probabilities too.  A
one-feature logistic fit of the label on the raw score, on the validation split, maps them back (Platt scaling).

Why a vocabulary for categories: LightGBM splits a categorical feature on sets of non-negative integer codes, so a
category column (strings, :mod:`homefeed.train.categories`) is coded by a vocabulary fitted on the train split:
values seen at least ``min_category_count`` times get 1..K, every rarer, unseen or missing value the shared code
0, which the trees learn like any category, so an unseen value at serving is scored, never refused.  The
vocabulary is saved beside the boosters (``categories.json``, checksummed with them): the same string gets the
same code in every process that loads the model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import lightgbm as lgb
import numpy as np
import pyarrow as pa
from pydantic import Field, NonNegativeInt, PositiveInt
from sklearn.linear_model import LogisticRegression

from homefeed.features.vectors import Hydrated
from homefeed.train.categories import Vocabulary, categorical_columns
from homefeed.train.compiled import Predict, compile_forest
from homefeed.train.model import (
    BASELINE,
    VALIDATION_METRICS,
    ModelError,
    PositiveFinite,
    Ranker,
    Slot,
    TrainingData,
    checked_params,
    hydrated_inputs,
    inputs,
    row_weights,
    validation_metrics,
)

ObjectiveKind = Literal["binary", "lambdarank"]
CALIBRATION_FILE = "calibration.json"
CATEGORIES_FILE = "categories.json"  # the vocabulary of each category column: serving codes values as training did
#: Below this many rows a prediction runs on one thread: starting threads costs more than it saves (serving batches).
SINGLE_THREAD_ROWS = 10_000


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _groups(request_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order that puts each request's rows together, and the size of each request's group in it."""
    order = np.argsort(request_id, kind="stable")
    _, sizes = np.unique(request_id[order], return_counts=True)
    return order, sizes


class GBDTRanker(Ranker):
    """Gradient-boosted trees (LightGBM) with a positive-engagement head and a negative-action head."""

    kind = "gbdt"

    @checked_params
    def __init__(
        self,
        objective_kind: ObjectiveKind = "binary",
        num_leaves: Annotated[int, Field(ge=2, le=131_072)] = 31,  # LightGBM's bounds
        learning_rate: PositiveFinite = 0.05,
        n_estimators: PositiveInt = 500,
        early_stopping_rounds: PositiveInt = 30,
        min_child_samples: NonNegativeInt = 50,
        threads: PositiveInt = 2,
        min_category_count: PositiveInt = 10,
        **base: object,
    ):
        super().__init__(**base)  # objective, position, weights, seed: the base class's, as for the NN
        self.objective_kind = objective_kind
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.min_child_samples = min_child_samples
        self.threads = threads
        self.min_category_count = min_category_count  # rarer values share the vocabulary's bucket 0
        self.categories = Vocabulary({}, min_category_count)  # fitted on the train split, saved with the boosters
        self.boosters: dict[str, lgb.Booster] = {}
        self.calibration: dict[str, dict[str, float]] = {}  # head -> {"slope", "intercept"} on the raw score
        self.compiled: dict[str, Predict] = {}  # head -> its trees as native code (`compile`; serving only)

    def _head_kind(self, head: str) -> ObjectiveKind:
        """Lambdarank only for the positive head: hides are too rare per request to rank by; they stay binary."""
        return "lambdarank" if self.objective_kind == "lambdarank" and head == self.objective.positive else "binary"

    def _lgb_params(self, kind: ObjectiveKind) -> dict:
        """Deterministic for a seed: fixed threads, row-wise histograms, every random stream seeded."""
        metric = {"binary": ["binary_logloss"], "lambdarank": ["ndcg"]}[kind]
        return {
            "objective": kind,
            "metric": metric,
            "eval_at": [10],
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_child_samples": self.min_child_samples,
            "num_threads": self.threads,
            "deterministic": True,
            "force_row_wise": True,
            "seed": self.seed,
            "verbosity": -1,
            "use_missing": True,
            **self._position_constraints(),
        }

    def _position_constraints(self) -> dict:
        """With the slot as a feature, keep its effect additive (in log-odds) and non-increasing down the feed.

        A tree that splits on the slot and then on item features learns, for slot 1, only the items the old
        ranker put there; everything else is an extrapolation.  An additive slot term (the "shallow tower" of
        position-debiased rankers) shifts every item's score alike, so the item ranking comes from the other
        features, learned with the slot's share of the engagement taken out.
        """
        if self.position != "feature":
            return {}
        n = len(self.features)
        return {
            "interaction_constraints": [list(range(n)), [n]],
            "monotone_constraints": [0] * n + [-1],
        }

    def _dataset(self, data: TrainingData, split: str, head: str, kind: ObjectiveKind) -> tuple:
        """A split as (matrix, label, weight, group sizes or None), rows regrouped by request for lambdarank."""
        rows = data.splits[split]
        x = inputs(rows, data.features, self.position, slot="logged", categories=self.categories)
        y = rows[head].to_numpy(zero_copy_only=False).astype(np.float64)
        w = row_weights(rows, self.weights)
        if kind != "lambdarank":
            return x, y, w, None
        order, sizes = _groups(rows["request_id"].to_numpy(zero_copy_only=False))
        return x[order], y[order], w[order], sizes

    def fit(self, data: TrainingData) -> GBDTRanker:
        for split in ("train", "validation"):
            if data.splits.get(split) is None or data.splits[split].num_rows == 0:
                raise ModelError(f"dataset {data.dataset_id} has no {split} rows to fit on")
        start = time.perf_counter()
        self.features, self.dataset_id = list(data.features), data.dataset_id
        names = self.features + (["position"] if self.position == "feature" else [])
        train_rows = data.splits["train"]
        self.categories = Vocabulary.fit(
            train_rows, categorical_columns(train_rows, self.features), self.min_category_count
        )
        self.boosters, self.calibration, self.compiled = {}, {}, {}
        self.training = {"dropped_heads": self.empty_heads(data)}
        heads: dict[str, dict] = {}
        for head in self.heads:
            kind = self._head_kind(head)
            xt, yt, wt, gt = self._dataset(data, "train", head, kind)
            xv, yv, wv, gv = self._dataset(data, "validation", head, kind)
            train = lgb.Dataset(
                xt,
                yt,
                weight=wt,
                group=gt,
                feature_name=names,
                categorical_feature=list(self.categories.values) or "auto",
                free_raw_data=True,
            )
            valid = lgb.Dataset(xv, yv, weight=wv, group=gv, reference=train)
            booster = lgb.train(
                self._lgb_params(kind),
                train,
                num_boost_round=self.n_estimators,
                valid_sets=[valid],
                valid_names=["validation"],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True, verbose=False)],
            )
            best = booster.best_iteration or booster.current_iteration()
            self.boosters[head] = booster
            raw = booster.predict(xv, num_iteration=best, raw_score=True, num_threads=self.threads)
            if kind == "lambdarank":
                self.calibration[head] = _platt(raw, yv, wv)
            heads[head] = {"objective": kind, "best_iteration": int(best)}
        for head, metrics in validation_metrics(self, data.splits["validation"]).items():
            heads[head].update(metrics)
        self.training = {
            "heads": heads,
            "dropped_heads": self.training["dropped_heads"],
            "validation_metrics": VALIDATION_METRICS,
            "fit_seconds": round(time.perf_counter() - start, 3),
            "rows": {s: data.splits[s].num_rows for s in ("train", "validation")},
        }
        return self

    def _probability(self, head: str, raw: np.ndarray) -> np.ndarray:
        cal = self.calibration.get(head)
        if cal is None:
            return _sigmoid(raw)  # a binary booster's raw score is a log-odds
        return _sigmoid(cal["slope"] * raw + cal["intercept"])

    def predict(self, rows: pa.Table, slot: Slot = "serving") -> dict[str, np.ndarray]:
        if not self.boosters:
            raise ModelError("the model is not fitted")
        return self._predict(inputs(rows, self.features, self.position, slot, self.categories))

    def predict_hydrated(self, rows: Hydrated) -> dict[str, np.ndarray]:
        if not self.boosters:
            raise ModelError("the model is not fitted")
        return self._predict(hydrated_inputs(rows, self.features, self.position, self.categories))

    def _predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        threads = 1 if len(x) < SINGLE_THREAD_ROWS else self.threads
        out = {}
        wide = None  # compiled trees read float64 rows: converted once for every head
        for head, booster in self.boosters.items():
            fast = self.compiled.get(head) if threads == 1 else None
            if fast is not None:
                if wide is None:
                    wide = np.ascontiguousarray(x, np.float64)
                raw = fast(wide)
            else:
                raw = booster.predict(
                    x, num_iteration=booster.best_iteration or None, raw_score=True, num_threads=threads
                )
            out[head] = self._probability(head, raw)
        return out

    def compile(self, cache: Path | None = None) -> dict[str, str]:
        """Compile each head's trees to native code for serving's small batches (:mod:`.compiled`).

        Per head, "compiled" or why LightGBM keeps predicting it; safe to run in a background thread while the
        model serves (a head switches when its code is ready; the scores are the same).
        """
        status = {}
        for head, booster in self.boosters.items():
            out = compile_forest(booster.model_to_string(num_iteration=booster.best_iteration or None), cache)
            if isinstance(out, str):
                status[head] = out
            else:
                self.compiled[head] = out
                status[head] = "compiled"
        return status

    def contributions(self, rows: pa.Table) -> tuple[np.ndarray, list[str]]:
        """LightGBM's exact per-feature contributions (TreeSHAP, ``pred_contrib=True``) to the positive head.

        LightGBM puts the expected raw score (its bias) in the last column; we name it `BASELINE`.  A
        lambdarank head's raw score only orders items, so its contributions are mapped through the head's
        Platt calibration (``slope·contribution``; baseline ``slope·bias + intercept``): every row then sums
        to the log-odds of the probability `predict` gives, for a binary head the raw score itself.
        """
        if not self.boosters:
            raise ModelError("the model is not fitted")
        head = self.objective.positive
        booster = self.boosters[head]
        x = inputs(rows, self.features, self.position, slot="serving", categories=self.categories)
        threads = 1 if rows.num_rows < SINGLE_THREAD_ROWS else self.threads
        contrib = booster.predict(
            x, num_iteration=booster.best_iteration or None, pred_contrib=True, num_threads=threads
        ).astype(np.float64)
        cal = self.calibration.get(head)
        if cal is not None:
            contrib *= cal["slope"]
            contrib[:, -1] += cal["intercept"]
        names = self.features + (["position"] if self.position == "feature" else [])
        return contrib, [*names, BASELINE]

    def _save_weights(self, directory: Path) -> None:
        for head, booster in self.boosters.items():
            text = booster.model_to_string(num_iteration=booster.best_iteration or None)
            (directory / f"{head}.txt").write_text(text, encoding="utf-8")
        (directory / CALIBRATION_FILE).write_text(json.dumps(self.calibration, sort_keys=True), encoding="utf-8")
        text = json.dumps(self.categories.to_json())
        (directory / CATEGORIES_FILE).write_text(text, encoding="utf-8")

    def _load_weights(self, directory: Path) -> None:
        self.boosters, self.compiled = {}, {}
        for head in self.heads:
            path = directory / f"{head}.txt"
            try:
                self.boosters[head] = lgb.Booster(model_str=path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
                raise ModelError(f"{path}: not a readable LightGBM text model ({exc})") from None
        path = directory / CALIBRATION_FILE
        try:
            self.calibration = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: not a readable calibration ({exc})") from None
        path = directory / CATEGORIES_FILE
        if not path.exists():  # a model saved before categories: it read numbers only
            self.categories = Vocabulary({}, self.min_category_count)
            return
        try:
            self.categories = Vocabulary.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path}: not a readable vocabulary ({exc})") from None


def _platt(raw: np.ndarray, label: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """A logistic fit of the label on the raw score (weighted like the training rows): raw score → probability."""
    if len(np.unique(label)) < 2:
        return {"slope": 1.0, "intercept": 0.0}
    fit = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), label, sample_weight=weight)
    return {"slope": float(fit.coef_[0, 0]), "intercept": float(fit.intercept_[0])}
