"""Scored rows and the shared bootstrap: every metric's value plus a vector of replicates, vectorized.

Each metric is written as sums over *units* (requests for per-request and slate
metrics, rows for row metrics), so one replicate is a matrix product of Poisson(1)
weights (B × units) with per-unit sums rather than a re-run over 10 million rows.
When there are more units than ``max_units`` they are hashed (seeded) into that
many buckets: a bucket of whole, randomly chosen units is itself an independent
cluster, so resampling buckets keeps the clustering honest and bounds the cost.
The same seed on the same rows gives the same weights, which is what makes two
models' replicates *paired* (`slices.compare`).  We write this ourselves because
SciPy's ``bootstrap`` re-evaluates the statistic per replicate on all rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from homefeed.errors import HomefeedError
from homefeed.train.model import Slot


class EvaluationError(HomefeedError, ValueError):
    """Bad input to an evaluation: missing predictions, an unknown metric, a missing column."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (bootstrap percentiles, or normal for OPE)."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are computed: B Poisson(1) replicates over at most ``max_units`` clusters, seeded."""

    replicates: int = 200
    seed: int = 0
    level: float = 0.95
    max_units: int = 20_000

    def __post_init__(self) -> None:
        """Refused here, not as a NumPy error deep in a metric: a negative count, a level outside (0, 1)."""
        if isinstance(self.replicates, bool) or not isinstance(self.replicates, int) or self.replicates < 0:
            raise EvaluationError(f"bootstrap replicates must be a whole number >= 0, got {self.replicates!r}")
        if not 0 < self.level < 1:
            raise EvaluationError(f"the confidence level must be between 0 and 1, got {self.level!r}")
        if self.max_units < 1:
            raise EvaluationError(f"max_units must be at least 1, got {self.max_units!r}")


@dataclass(frozen=True)
class Units:
    """Each row's unit (bucket) index and the replicate weights of the units."""

    codes: np.ndarray  # (n,) int64 in [0, count)
    count: int
    weights: np.ndarray  # (B, count) float64; (0, count) when B == 0
    of_request: np.ndarray | None = None  # unit of each request, when units are requests

    def request_ratio(self, num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray]:
        """Like `ratio`, with one value per request rather than per row."""
        return Units(self.of_request, self.count, self.weights).ratio(num, den)  # type: ignore[arg-type]

    def ratio(self, num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray]:
        """sum(num) / sum(den) and its replicates; the shape of a mean, a rate, a share."""
        if self.weights.shape[0] == 0:  # point estimate only: no per-unit sums
            total = float(np.sum(den))
            return (float(np.sum(num)) / total if total > 0 else float("nan")), np.empty(0)
        n = np.bincount(self.codes, num, minlength=self.count)
        d = np.bincount(self.codes, den, minlength=self.count)
        total = d.sum()
        value = float(n.sum() / total) if total > 0 else float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = (self.weights @ n) / (self.weights @ d)
        return value, reps


@dataclass
class Scored:
    """Scored rows: ``label`` and ``score`` are required, everything else (request_id, weight, topic, …) optional.

    Rows of one request are found by ``request_id``; the model's rank within a
    request is the order of ``score`` (descending; ties keep the rows' order,
    which in a dataset split is the logged order, so a model that ties
    everything is credited with the logging policy's ranking).

    ``slot`` says where a model's scores held the slot: ``"logged"`` (each
    row's own: what pointwise metrics need), ``"serving"`` (every row at the
    top: what ranking metrics need), or None when the scores do not depend on
    it (a model without position as a feature, scores from elsewhere).  A
    metric refuses rows scored at the other slot (`metrics.replicated`).
    """

    columns: dict[str, np.ndarray]
    slot: Slot | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        cols = {k: np.asarray(v) for k, v in self.columns.items()}
        for need in ("label", "score"):
            if need not in cols:
                raise EvaluationError(f"scored rows need a {need!r} column; got {', '.join(sorted(cols)) or 'none'}")
        n = len(cols["score"])
        bad = {k: len(v) for k, v in cols.items() if len(v) != n}
        if bad:
            raise EvaluationError(f"columns differ in length from score ({n} rows): {bad}")
        cols["score"] = cols["score"].astype(np.float64, copy=False)
        missing = int(np.isnan(cols["score"]).sum())
        if missing:
            raise EvaluationError(f"missing predictions: {missing} of {n} rows have no score (NaN)")
        cols["label"] = cols["label"].astype(np.float64, copy=False)
        if np.isnan(cols["label"]).any():
            raise EvaluationError(f"{int(np.isnan(cols['label']).sum())} rows have no label (NaN)")
        self.columns = cols

    @classmethod
    def from_table(cls, table: object) -> Scored:
        """From a pyarrow Table, a pandas DataFrame or a mapping of arrays."""
        if hasattr(table, "column_names"):  # pyarrow
            return cls({n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names})
        return cls({str(k): np.asarray(table[k]) for k in table})  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self.columns["score"])

    def col(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise EvaluationError(
                f"this metric needs a {name!r} column; the rows have {', '.join(sorted(self.columns))}"
            )
        return self.columns[name]

    def subset(self, mask: np.ndarray) -> Scored:
        return Scored({k: v[mask] for k, v in self.columns.items()}, self.slot)

    def with_score(self, score: np.ndarray, slot: Slot | None = None) -> Scored:
        """The same rows with other scores, taken at ``slot`` (None: scores that do not depend on the slot)."""
        return Scored({**self.columns, "score": score}, slot)

    @property
    def weight(self) -> np.ndarray:
        """The ``weight`` column (1 for every row without one); a NaN, infinite or negative weight is an error."""
        if "weight" not in self._cache:
            w = self.columns.get("weight")
            w = np.ones(len(self)) if w is None else w.astype(np.float64, copy=False)
            bad = int((~np.isfinite(w) | (w < 0)).sum())
            if bad:
                raise EvaluationError(f"{bad} of {len(w)} rows have a missing (NaN), infinite or negative weight")
            self._cache["weight"] = w
        return self._cache["weight"]

    @cached_property
    def requests(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(request code per row, rank per row, number of requests): rank 0 is the model's top slot.

        Rows are grouped by request with a stable sort only when the ids are not
        already contiguous; ranks then come from one (requests × longest request)
        sort along rows, not from a sort of every row.
        """
        rid, score, n = self.col("request_id"), self.columns["score"], len(self)
        grouped = n < 2 or bool((rid[1:] >= rid[:-1]).all())
        perm = None if grouped else np.argsort(rid, kind="stable")
        sorted_rid = rid if perm is None else rid[perm]
        change = np.empty(n, bool)
        change[:1] = True
        np.not_equal(sorted_rid[1:], sorted_rid[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        sizes = np.diff(np.r_[starts, n])
        sorted_code = np.cumsum(change) - 1
        code = sorted_code if perm is None else np.empty(n, np.int64)
        if perm is not None:
            code[perm] = sorted_code
        n_req, longest = len(starts), int(sizes.max(initial=0))
        rank = np.empty(n, np.int64)
        if n_req * longest > 4 * n + 1_000_000:  # a few very long requests: sort every row instead
            order = np.lexsort((np.arange(n), -score, code))
            rank[order] = np.arange(n) - np.repeat(starts, sizes)
            return code, rank, n_req
        if n_req * longest == n:  # every request the same length: the rows are already the grid
            grid = -(score if perm is None else score[perm]).reshape(n_req, longest)
        else:
            within = np.arange(n) - np.repeat(starts, sizes)  # position of each sorted row inside its request
            grid = np.full((n_req, longest), np.inf)
            grid[sorted_code, within] = -(score if perm is None else score[perm])
        order = np.argsort(grid, axis=1, kind="stable")  # padding (inf) sorts last
        rank_of = np.empty_like(order)
        np.put_along_axis(rank_of, order, np.arange(longest)[None, :], axis=1)
        sorted_rank = rank_of.ravel() if n_req * longest == n else rank_of[sorted_code, within]
        if perm is None:
            return code, sorted_rank, n_req
        rank[perm] = sorted_rank
        return code, rank, n_req

    def top(self, k: int) -> np.ndarray:
        """(requests × k) row indices in the model's order, -1 where a request has fewer than k rows."""
        if ("top", k) not in self._cache:
            code, rank, n_req = self.requests
            grid = np.full((n_req, k), -1, np.int64)
            sel = np.flatnonzero(rank < k)
            grid[code[sel], rank[sel]] = sel
            self._cache[("top", k)] = grid
        return self._cache[("top", k)]

    def units(self, boot: Bootstrap, by_request: bool) -> Units:
        """Units for the bootstrap: requests (clusters) or rows, bucketed to at most ``boot.max_units``."""
        key = ("units", by_request, boot)
        if key not in self._cache and boot.replicates == 0:  # nothing to resample: skip grouping rows into units
            empty = np.zeros(0, np.int64)
            self._cache[key] = Units(empty, 0, np.zeros((0, 0)), empty if by_request else None)
        if key not in self._cache:
            rng = np.random.default_rng(boot.seed)
            if by_request:
                base, _, count = self.requests
            else:
                base, count = np.arange(len(self)), len(self)
            of_request = np.arange(count)
            if count > boot.max_units:
                of_request = rng.integers(0, boot.max_units, count)
                base = of_request[base]
                count = boot.max_units
            weights = rng.poisson(1.0, (boot.replicates, count)).astype(np.float64)
            self._cache[key] = Units(base, count, weights, of_request if by_request else None)
        return self._cache[key]


def interval(value: float, reps: np.ndarray, level: float = 0.95) -> Estimate:
    """Percentile interval of the replicates (NaN replicates, e.g. an empty resample, ignored)."""
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return Estimate(value, float("nan"), float("nan"))
    alpha = (1 - level) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    return Estimate(value, float(low), float(high))
