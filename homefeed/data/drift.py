"""Distribution shift between a day and its baseline: PSI, Jensen–Shannon, and how big they get by chance.

Both statistics compare two histograms over the same bins: a categorical
column's categories, or a numeric column's bins cut at the baseline's
quantiles.  Each is a few lines of NumPy, so they are written here rather than
pulled from SciPy (not a dependency of homefeed); what needs care and is in no
library is the rest: empty bins, bins for discrete and near-constant columns,
and the level each statistic reaches by chance for a given sample size.

Chance level.  Let day proportions ``p`` (``n`` rows) and baseline proportions
``q`` (``m`` rows) over ``k`` bins come from the same distribution ``π``.
Then ``p_i − q_i`` is approximately normal with variance
``π_i (1 − π_i) (1/n + 1/m)``, and to second order in ``p − q``

    PSI        = Σ (p_i − q_i) ln(p_i / q_i)        ≈ Σ (p_i − q_i)² / π_i ≈ (1/n + 1/m) · χ²(k − 1)
    JSD (bits) = ½ KL(p ‖ M) + ½ KL(q ‖ M)         ≈ Σ (p_i − q_i)² / (8 π_i ln 2) ≈ PSI / (8 ln 2)

with ``M = (p + q) / 2``; the Jensen–Shannon *distance* is ``√JSD``.
``χ²(k − 1)`` has mean ``k − 1`` and variance ``2 (k − 1)``; its mean plus
``z`` standard deviations (``z = 3`` is about its 99th percentile for 3–20
bins) is the level chance alone reaches:

    chance_psi = (1/n + 1/m) · (k − 1 + z √(2 (k − 1)))
    chance_js  = √(chance_psi / (8 ln 2))

A day is judged against ``threshold + chance_psi`` for PSI, and against
``√(threshold² + chance_js²)`` for the JS distance (the squares add, since a
real shift and sampling noise add in divergence).  With a week of a busy
table the chance terms are ~0.001 and the configured thresholds decide; with
a few hundred rows a clearly larger shift is needed.  The same reasoning gives
the ``(k − 1)/n`` bias every PSI of finite samples carries.
"""

from __future__ import annotations

import math

import numpy as np

#: Empty bins are floored at this share so PSI stays finite; a category that
#: vanishes or appears with a real share still gives a large PSI.  The floored
#: shares are not renormalised (k empty bins add k·1e-4 to a side's total):
#: a bin of share p on one side and empty on the other adds exactly
#: (p − 1e-4)·ln(p / 1e-4), so a vanished category is capped, not infinite:
#: 0.69 for a 10% category, 0.105 for 2%, 0.046 for 1% — a category under
#: ~1.9% of rows can vanish without crossing the 0.1 warning on its own.
#: The Jensen–Shannon distance (no floor) and the checks' vanished-category
#: rule (`data/checks.py`) are what catch those.
PSI_FLOOR = 1e-4


def _shares(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def psi(day: np.ndarray, baseline: np.ndarray) -> float:
    """Population stability index of ``day`` against ``baseline`` (counts or shares over the same bins).

    Shares are floored at `PSI_FLOOR` and not renormalised: see there for what that caps.
    """
    p = np.maximum(_shares(day), PSI_FLOOR)
    q = np.maximum(_shares(baseline), PSI_FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


def js_distance(day: np.ndarray, baseline: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, so in [0, 1]) between two histograms over the same bins."""
    p, q = _shares(day), _shares(baseline)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


def chance_psi(n: int, m: int, bins: int, z: float) -> float:
    """The PSI two samples of ``n`` and ``m`` rows from one distribution reach by chance (see the module doc)."""
    if n <= 0 or m <= 0 or bins < 2:
        return 0.0
    dof = bins - 1
    return (1 / n + 1 / m) * (dof + z * math.sqrt(2 * dof))


def chance_js(n: int, m: int, bins: int, z: float) -> float:
    """The Jensen–Shannon distance two samples of ``n`` and ``m`` rows reach by chance."""
    return math.sqrt(chance_psi(n, m, bins, z) / (8 * math.log(2)))


def quantile_edges(baseline: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the baseline's quantiles; repeated edges (discrete columns) are merged.

    Edges are observed values (no interpolation) and bins are right-closed,
    ``(e[i-1], e[i]]``, so an integer column such as ``position`` gets whole
    values per bin; the outer bins are open-ended, so values outside the
    baseline's range still land somewhere.
    """
    if baseline.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(baseline, np.arange(1, bins) / bins, method="inverted_cdf"))


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def quantile_shift(day: np.ndarray, baseline: np.ndarray) -> float:
    """How far the day's quantiles moved, relative to the column's magnitude: max |ΔQ(p)| / max |Q(p)|.

    The practical size of a numeric shift, as opposed to its statistical size:
    a random policy's propensities (1 / catalogue size) drift by 0.2% a day as
    the catalogue grows, which every bin of a tightly concentrated column
    notices but no consumer of the data does.
    """
    if day.size == 0 or baseline.size == 0:
        return 0.0
    probs = np.linspace(0.05, 0.95, 19)
    qd, qb = np.quantile(day, probs), np.quantile(baseline, probs)
    scale = float(np.max(np.abs(qb)))
    shift = float(np.max(np.abs(qd - qb)))
    if scale == 0.0:
        return math.inf if shift > 0 else 0.0
    return shift / scale
