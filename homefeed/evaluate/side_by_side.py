"""Side-by-side: how differently two models order the same requests, summarized over many requests.

Rank-biased overlap (Webber, Moffat and Zobel, 2010) is the agreement of two
rankings weighted toward the top: at each depth d the share of items the two
top-d lists have in common, averaged with weights (1 − p)·p^(d−1).  We use the
extrapolated form at depth k (the slate size, or the request's candidate count
when smaller): ``(1 − p) Σ_{d≤k} p^(d−1) A_d + p^k A_k``, which is 1 for
identical rankings and 0 for disjoint ones.  Both models rank the same
candidates, so an item is in both top-d lists exactly when the larger of its
two ranks is below d: one ``bincount`` over (request, max rank) gives every
overlap at every depth for every request at once, with no Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from homefeed.evaluate.bootstrap import Bootstrap, Estimate, EvaluationError, Scored, interval

#: RBO's persistence: with p = 0.9 the top 10 slots carry about 86% of the weight.
RBO_P = 0.9
SLATE_SIZE = 10


@dataclass(frozen=True)
class Agreement:
    """Over many requests: how much two models' slates overlap, and how often the top slot changes."""

    requests: int
    depth: int
    p: float
    rbo: Estimate
    top_slot_changed: Estimate  # share of requests whose first item differs
    mean_rank_shift: Estimate  # mean |rank A − rank B| of the items either model puts in its top ``depth``


def _same_rows(a: Scored, b: Scored) -> None:
    if len(a) != len(b):
        raise EvaluationError(f"side-by-side needs both models' scores on the same rows ({len(a)} vs {len(b)})")
    if not np.array_equal(a.col("request_id"), b.col("request_id")):
        raise EvaluationError("side-by-side needs both models' scores on the same rows (request ids differ)")


def per_request(a: Scored, b: Scored, depth: int = SLATE_SIZE, p: float = RBO_P) -> dict[str, np.ndarray]:
    """Per request (in `Scored.requests` code order): RBO, whether the top slot changed, summed rank shift, items."""
    if depth < 1 or not 0 < p < 1:
        raise EvaluationError(f"rank-biased overlap needs depth >= 1 and 0 < p < 1 (got depth={depth}, p={p})")
    _same_rows(a, b)
    code, rank_a, n_req = a.requests
    _, rank_b, _ = b.requests
    size = np.bincount(code, minlength=n_req)
    k = np.minimum(size, depth)
    deepest = np.maximum(rank_a, rank_b)
    inside = deepest < depth
    overlap = np.bincount(code[inside] * depth + deepest[inside], minlength=n_req * depth).reshape(n_req, depth)
    agreement = overlap.cumsum(axis=1) / np.arange(1, depth + 1)  # A_d: share of the top d held in common
    d = np.arange(1, depth + 1)
    live = d[None, :] <= k[:, None]
    rbo = (1 - p) * np.where(live, agreement * p ** (d - 1), 0.0).sum(axis=1)
    rbo += p**k * agreement[np.arange(n_req), np.maximum(k, 1) - 1]
    top_a = np.full(n_req, -1)
    top_b = np.full(n_req, -1)
    top_a[code[rank_a == 0]] = np.flatnonzero(rank_a == 0)
    top_b[code[rank_b == 0]] = np.flatnonzero(rank_b == 0)
    shown = (rank_a < depth) | (rank_b < depth)
    shift = np.bincount(code[shown], np.abs(rank_a - rank_b)[shown].astype(np.float64), minlength=n_req)
    return {
        "rbo": rbo,
        "top_slot_changed": (top_a != top_b).astype(np.float64),
        "rank_shift": shift,
        "shown": np.bincount(code[shown], minlength=n_req).astype(np.float64),
    }


def agreement(
    a: Scored, b: Scored, depth: int = SLATE_SIZE, p: float = RBO_P, boot: Bootstrap | None = None
) -> Agreement:
    """RBO, top-slot change rate and mean rank shift over every request, each with a request-bootstrap interval."""
    boot = boot or Bootstrap(replicates=200, seed=0)
    values = per_request(a, b, depth, p)
    units = a.units(boot, by_request=True)
    ones = np.ones(len(values["rbo"]))

    def mean(num: np.ndarray, den: np.ndarray) -> Estimate:
        value, reps = units.request_ratio(num, den)
        return interval(value, reps, boot.level)

    return Agreement(
        requests=len(ones),
        depth=depth,
        p=p,
        rbo=mean(values["rbo"], ones),
        top_slot_changed=mean(values["top_slot_changed"], ones),
        mean_rank_shift=mean(values["rank_shift"], values["shown"]),
    )
