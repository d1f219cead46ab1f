"""Slate-level, ecosystem metrics of the model's top k per request: what the feed looks like, not only what it earns.

The top k of a request is its k highest-scored rows (`Scored.requests`).
Requests are the bootstrap units.  Columns: ``topic``, ``context_item_age_hours``
(or ``item_age_hours``; see `is_fresh`), ``item_id``, ``creator_id``, ``negative``
(1 = a hide or report).  Coverage and the creator Gini are not means over requests, so
their replicates are recomputed from per-(unit, item) and per-(unit, creator)
tables — never the rows — and re-centred on the estimate (see `_recentred`).
"""

from __future__ import annotations

import numpy as np

from homefeed.evaluate.bootstrap import Bootstrap, EvaluationError, Scored

#: An item is fresh while younger than this at the request: the one rule `fresh_share` and the slices share.
FRESH_HOURS = 24.0
#: Where an item's age at the request is read, first found first: the feature set's column, then a plain name.
AGE_COLUMNS = ("context_item_age_hours", "item_age_hours")
ALWAYS_COVERED = 30  # an item in this many resampled units is missing from a replicate with probability e^-30
CHUNK_CELLS = 20_000_000  # replicates are processed in chunks of about this many matrix cells


def _top(rows: Scored, k: int) -> np.ndarray:
    return rows.requests[1] < k


def _codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense integer codes: the ids themselves when they are small non-negative integers (no sort), else ranks."""
    if values.dtype.kind in "iu" and values.size and values.min() >= 0 and values.max() < 4 * values.size + 1024:
        return values.astype(np.int64, copy=False), int(values.max()) + 1
    _, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64), int(inverse.max(initial=-1)) + 1


def _slot_share(rows: Scored, boot: Bootstrap, k: int, flag: np.ndarray) -> tuple[float, np.ndarray]:
    top = _top(rows, k).astype(np.float64)
    return rows.units(boot, by_request=True).ratio(top * flag, top)


def age_column(rows: Scored) -> str | None:
    """The column an item's age at the request is read from (`AGE_COLUMNS`), or None when the rows have none."""
    return next((c for c in AGE_COLUMNS if c in rows.columns), None)


def is_fresh(rows: Scored) -> np.ndarray:
    """Per row, whether the item was younger than `FRESH_HOURS` at the request (an unknown age is not fresh)."""
    name = age_column(rows)
    if name is None:
        raise EvaluationError(
            f"freshness needs the item's age at the request: a {' or '.join(map(repr, AGE_COLUMNS))} column; "
            f"the rows have {', '.join(sorted(rows.columns))}"
        )
    return np.asarray(rows.columns[name], np.float64) < FRESH_HOURS


def fresh_share(rows: Scored, boot: Bootstrap, k: int = 10) -> tuple[float, np.ndarray]:
    """Share of top-k slots holding a fresh item (`is_fresh`: younger than 24 hours at the request)."""
    return _slot_share(rows, boot, k, is_fresh(rows).astype(np.float64))


def negative_rate(rows: Scored, boot: Bootstrap, k: int = 10) -> tuple[float, np.ndarray]:
    """Share of top-k slots whose impression drew a negative action (hide or report)."""
    return _slot_share(rows, boot, k, (rows.col("negative") > 0).astype(np.float64))


def topic_diversity(rows: Scored, boot: Bootstrap, k: int = 10) -> tuple[float, np.ndarray]:
    """Distinct topics in the top k / slots filled (min(k, slate size)), averaged over requests (1 = all different)."""
    top = rows.top(k)
    topic, _ = _codes(rows.col("topic"))
    grid = np.sort(np.where(top >= 0, topic[np.maximum(top, 0)], -1), axis=1)  # padding (-1) first
    filled = grid >= 0
    new = filled & np.c_[np.ones((len(grid), 1), bool), grid[:, 1:] != grid[:, :-1]]
    slots = filled.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return rows.units(boot, by_request=True).request_ratio(new.sum(1) / np.maximum(slots, 1), slots > 0)


def _unit_table(rows: Scored, boot: Bootstrap, k: int, key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (unit, key) pairs among top-k rows, sorted by key: (unit, key code, slots)."""
    units = rows.units(boot, by_request=True)
    top = _top(rows, k)
    pair, slots = np.unique(key[top] * units.count + units.codes[top], return_counts=True)  # sorted by key
    return pair % units.count, pair // units.count, slots.astype(np.float64)


def _chunks(boot: Bootstrap, cells: int) -> list[slice]:
    step = max(1, CHUNK_CELLS // max(cells, 1))
    return [slice(i, i + step) for i in range(0, boot.replicates, step)]


def coverage(rows: Scored, boot: Bootstrap, k: int = 10) -> tuple[float, np.ndarray]:
    """Distinct items in any top k over the catalogue, the catalogue being the distinct items scored."""
    item, size = _codes(rows.col("item_id"))
    catalogue = int((np.bincount(item, minlength=size) > 0).sum())
    if boot.replicates == 0:
        return int((np.bincount(item[_top(rows, k)], minlength=size) > 0).sum()) / catalogue, np.empty(0)
    unit, key, _ = _unit_table(rows, boot, k, item)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    n_units = np.diff(np.r_[starts, key.size])
    value = len(starts) / catalogue
    rare = np.repeat(n_units < ALWAYS_COVERED, n_units)  # rows of the items a replicate might miss
    sure = int((n_units >= ALWAYS_COVERED).sum())
    r_unit, r_key = unit[rare], key[rare]
    r_starts = np.flatnonzero(np.r_[True, r_key[1:] != r_key[:-1]]) if r_key.size else np.zeros(0, np.int64)
    weights = rows.units(boot, by_request=True).weights
    reps = np.full(boot.replicates, float(sure))
    if r_key.size:
        for part in _chunks(boot, r_key.size):
            present = weights[part][:, r_unit] > 0
            reps[part] += np.maximum.reduceat(present, r_starts, axis=1).sum(1)
    return value, _recentred(value, reps / catalogue)


def _gini(exposure: np.ndarray) -> np.ndarray:
    """Gini of each row of a (replicates × creators) exposure matrix; 0 = equal, → 1 = one creator gets all."""
    x = np.sort(exposure, axis=-1)
    n = x.shape[-1]
    i = np.arange(1, n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((2 * i - n - 1) * x).sum(-1) / (n * x.sum(-1))


def creator_gini(rows: Scored, boot: Bootstrap, k: int = 10) -> tuple[float, np.ndarray]:
    """Gini of top-k slots per creator, over every creator with an item among the rows (zeros included)."""
    creator, size = _codes(rows.col("creator_id"))
    present = np.bincount(creator, minlength=size) > 0
    n_creators = int(present.sum())
    value = float(_gini(np.bincount(creator[_top(rows, k)], minlength=size)[present]))
    if boot.replicates == 0:
        return value, np.empty(0)
    creator = np.cumsum(present)[creator] - 1  # only creators among the rows
    unit, key, slots = _unit_table(rows, boot, k, creator)
    weights = rows.units(boot, by_request=True).weights
    reps = np.empty(boot.replicates)
    if key.size:
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        shown = key[starts]
        for part in _chunks(boot, key.size + n_creators):
            per = np.add.reduceat(weights[part][:, unit] * slots, starts, axis=1)
            full = np.zeros((per.shape[0], n_creators))
            full[:, shown] = per
            reps[part] = _gini(full)
    else:
        reps[:] = np.nan
    return value, _recentred(value, reps)


def _recentred(value: float, reps: np.ndarray) -> np.ndarray:
    """Replicates shifted so their mean is the estimate: a resample holds ~63% of the distinct units, so it
    sees fewer distinct items and more unequal exposure; only the spread of the replicates is informative."""
    return reps - np.nanmean(reps) + value if np.isfinite(reps).any() else reps
