"""Every metric per sub-population, and two models compared slice by slice: who pays for an overall gain?

Slices (each built only when its column is present):

- ``tenure``: ``new`` (``user_tenure_days`` < 28) vs ``tenured``;
- ``activity``: tertiles (``low``/``mid``/``high``) of ``user_requests_28d``, or of
  ``user_active_days_28d`` when the request count is absent;
- ``market``: ``country``;
- ``item_age``: ``fresh`` vs ``old``, by the rule fresh_share@k uses (`slate.is_fresh`: younger than 24 hours at the
  request, read from ``context_item_age_hours`` or else ``item_age_hours``);
- ``topic``: ``topic``.

A slice with fewer than ``min_rows`` rows is reported as too small and not
computed: its interval would be wide enough to hide anything.  A comparison
resamples both models with the same weights (same rows, same seed), so the
difference's interval is over *paired* replicates and much narrower than the
two intervals side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from homefeed.evaluate.bootstrap import Bootstrap, Estimate, EvaluationError, Scored, interval
from homefeed.evaluate.metrics import metric, replicated
from homefeed.evaluate.slate import age_column, is_fresh

NEW_USER_DAYS = 28
ACTIVITY_COLUMNS = ("user_requests_28d", "user_active_days_28d")
MIN_ROWS = 1_000


def slice_masks(rows: Scored) -> dict[tuple[str, str], np.ndarray]:
    """(dimension, value) → row mask, for the dimensions whose columns the rows have; ``("all", "all")`` first."""
    cols = rows.columns
    out: dict[tuple[str, str], np.ndarray] = {("all", "all"): np.ones(len(rows), bool)}
    if "user_tenure_days" in cols:
        new = np.asarray(cols["user_tenure_days"], np.float64) < NEW_USER_DAYS
        out[("tenure", "new")], out[("tenure", "tenured")] = new, ~new
    activity = next((c for c in ACTIVITY_COLUMNS if c in cols), None)
    if activity is not None:
        a = np.asarray(cols[activity], np.float64)
        low, high = np.nanquantile(a, [1 / 3, 2 / 3]) if a.size else (0.0, 0.0)
        out[("activity", "low")] = a <= low
        out[("activity", "mid")] = (a > low) & (a <= high)
        out[("activity", "high")] = a > high
    if "country" in cols:
        countries = cols["country"].astype(str)
        for value in np.unique(countries):
            out[("market", str(value))] = countries == value
    if age_column(rows) is not None:
        fresh = is_fresh(rows)
        out[("item_age", "fresh")], out[("item_age", "old")] = fresh, ~fresh
    if "topic" in cols:
        topics = cols["topic"].astype(str)
        for value in np.unique(topics):
            out[("topic", str(value))] = topics == value
    return out


def activity_column(rows: Scored) -> str | None:
    """Which column the activity tertiles use on these rows."""
    return next((c for c in ACTIVITY_COLUMNS if c in rows.columns), None)


@dataclass(frozen=True)
class SliceResult:
    """One slice's metrics; ``metrics`` is empty when the slice has fewer rows than the minimum."""

    dimension: str
    value: str
    rows: int
    too_small: bool
    metrics: dict[str, Estimate]


def evaluate_slices(
    rows: Scored, names: Iterable[str], boot: Bootstrap | None = None, min_rows: int = MIN_ROWS
) -> list[SliceResult]:
    """Every named metric on every slice (and overall), too-small slices listed but not computed."""
    boot = boot or Bootstrap()
    names = list(names)
    for name in names:
        metric(name)
    out = []
    for (dim, value), mask in slice_masks(rows).items():
        n = int(mask.sum())
        if n < min_rows:
            out.append(SliceResult(dim, value, n, True, {}))
            continue
        part = rows if dim == "all" else rows.subset(mask)
        est = {name: interval(*replicated(name, part, boot), boot.level) for name in names}
        out.append(SliceResult(dim, value, n, False, est))
    return out


@dataclass(frozen=True)
class SliceComparison:
    """Candidate minus baseline on one slice for one metric, with the paired-bootstrap interval of the difference.

    Each model's own value comes with its own interval, from the same replicates the difference's is paired over.
    """

    dimension: str
    value: str
    metric: str
    rows: int
    baseline: Estimate
    candidate: Estimate
    delta: Estimate
    regressed: bool  # worse by more than the threshold, and the interval excludes no change
    hidden: bool  # regressed while the metric improved overall: the case a single overall number hides


def _same_rows(baseline: Scored, candidate: Scored) -> None:
    if len(baseline) != len(candidate):
        raise EvaluationError(f"compare needs the same rows: {len(baseline)} vs {len(candidate)}")
    for col in ("label", "request_id"):
        a, b = baseline.columns.get(col), candidate.columns.get(col)
        if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
            raise EvaluationError(f"compare needs the same rows: the {col!r} columns differ")


def compare(
    baseline: Scored,
    candidate: Scored,
    names: Iterable[str],
    boot: Bootstrap | None = None,
    min_rows: int = MIN_ROWS,
    threshold: float | Mapping[str, float] = 0.005,
) -> list[SliceComparison]:
    """Per slice and metric, candidate − baseline; a slice regresses when it is worse by more than ``threshold``
    (in the metric's units; per metric when a mapping) and the paired interval excludes zero.

    Slices smaller than ``min_rows`` are left out (see `evaluate_slices` for them).
    """
    boot = boot or Bootstrap()
    names = list(names)
    for name in names:
        metric(name)
    _same_rows(baseline, candidate)
    out: list[SliceComparison] = []
    overall_better: dict[str, bool] = {}
    for (dim, value), mask in slice_masks(candidate).items():
        n = int(mask.sum())
        if n < min_rows:
            continue
        base = baseline if dim == "all" else baseline.subset(mask)
        cand = candidate if dim == "all" else candidate.subset(mask)
        for name in names:
            m, _ = metric(name)
            b_value, b_reps = replicated(name, base, boot)
            c_value, c_reps = replicated(name, cand, boot)
            delta = interval(c_value - b_value, c_reps - b_reps, boot.level)
            sign = 1.0 if m.higher_is_better else -1.0  # > 0: better
            limit = threshold.get(name, 0.0) if isinstance(threshold, Mapping) else threshold
            worse_beyond = -sign * delta.value > limit
            significant = (delta.high < 0) if m.higher_is_better else (delta.low > 0)
            if dim == "all":
                overall_better[name] = sign * delta.value > 0
            regressed = bool(worse_beyond and significant)
            hidden = regressed and overall_better.get(name, False)
            b_est, c_est = interval(b_value, b_reps, boot.level), interval(c_value, c_reps, boot.level)
            out.append(SliceComparison(dim, value, name, n, b_est, c_est, delta, regressed, hidden))
    return out


def regressions(comparisons: Iterable[SliceComparison]) -> list[SliceComparison]:
    """The flagged rows: slices where the candidate is disproportionately worse."""
    return [c for c in comparisons if c.regressed]
