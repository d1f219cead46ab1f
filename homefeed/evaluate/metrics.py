"""Offline metrics over scored rows, each with a bootstrap interval, and the registry a launch config names them from.

Each metric says which scores it judges (`Metric.slot`).  Pointwise metrics
(AUC, log loss, ECE, the reliability curve) compare a probability with an
outcome, and the outcome happened at the slot it was logged at, so they take
the positive head's probability *at the logged slot*.  Ranking and slate
metrics judge the order the model would serve, so they take the ranking score
with the slot held at the serving slot.  Mixing them up is not a small error:
on the demo's world the GBDT's ECE was 0.15 at slot 1 against outcomes logged
at slot 11 on average, and 0.004 at the logged slot; its AUC 0.74 and 0.79.

Row metrics (AUC, log loss, calibration, funnel rates) resample rows;
per-request metrics (NDCG@k, MAP@k, recall@k) and slate metrics
(`homefeed.evaluate.slate`) resample requests.  Everything is NumPy over whole
columns: one sort per table, then ``bincount`` and matrix products — no Python
loop per row or request.  scikit-learn has AUC, log loss and NDCG but computes
them once per call on all rows; a bootstrap would call it B times, and it has
no per-request ranking metrics over a flat table, so we write our own and test
them against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from homefeed.evaluate import slate
from homefeed.evaluate.bootstrap import Bootstrap, Estimate, EvaluationError, Scored, interval
from homefeed.train.model import LOG_LOSS_EPS, Slot

Replicated = tuple[float, np.ndarray]  # the value on all rows, and one value per bootstrap replicate
#: The deepest slate a metric@K takes: a request × K matrix is allocated, and no feed ranks a slate this deep.
MAX_K = 1_000
EPS = LOG_LOSS_EPS


def _is_binary(rows: Scored) -> bool:
    if "binary" not in rows._cache:
        y = rows.columns["label"]
        rows._cache["binary"] = bool(((y == 0) | (y == 1)).all())
    return rows._cache["binary"]


def _binary(rows: Scored) -> np.ndarray:
    y = rows.columns["label"]
    if not _is_binary(rows):
        raise EvaluationError("this metric needs binary labels (0/1)")
    return y


def _probability(rows: Scored) -> np.ndarray:
    p = rows.columns["score"]
    if p.size and (p.min() < 0 or p.max() > 1):
        raise EvaluationError("log loss and calibration need probabilities in [0, 1]; the scores are not")
    return p


def _outcome(rows: Scored) -> np.ndarray:
    """Labels as an observed rate: 0/1, or a share in [0, 1]; anything else would make a loss negative."""
    y = rows.columns["label"]
    if y.size and (y.min() < 0 or y.max() > 1):
        raise EvaluationError(
            f"log loss and calibration need labels in [0, 1] (0/1, or a share of positives); "
            f"the labels run from {y.min():g} to {y.max():g}"
        )
    return y


def auc(rows: Scored, boot: Bootstrap) -> Replicated:
    """ROC AUC by ranks (ties count one half), weighted: of the positive head's probability at the logged slot.

    Replicates use the linearized statistic (DeLong's placement values: each
    positive's share of negatives ranked below it, each negative's share of
    positives above), so a replicate is two weighted means instead of a re-sort.
    """
    y, s = _binary(rows), rows.columns["score"]
    if boot.replicates == 0 and "weight" not in rows.columns:
        return _auc_point(y, s), np.empty(0)
    w = rows.weight
    order = np.argsort(s, kind="stable")
    ss = s[order]
    group = np.empty(len(s), np.int64)
    group[order] = np.cumsum(np.r_[False, ss[1:] != ss[:-1]])
    pos = np.bincount(group, w * y)
    neg = np.bincount(group, w * (1 - y))
    wpos, wneg = pos.sum(), neg.sum()
    if wpos == 0 or wneg == 0:
        raise EvaluationError("AUC needs both positive and negative labels")
    neg_below = np.cumsum(neg) - neg
    pos_above = wpos - np.cumsum(pos)
    value = float((pos * (neg_below + 0.5 * neg)).sum() / (wpos * wneg))
    v10 = ((neg_below + 0.5 * neg) / wneg)[group]  # for positives
    v01 = ((pos_above + 0.5 * pos) / wpos)[group]  # for negatives
    units = rows.units(boot, by_request=False)
    _, r_pos = units.ratio(w * y * v10, w * y)
    _, r_neg = units.ratio(w * (1 - y) * v01, w * (1 - y))
    return value, r_pos + r_neg - value


def _auc_point(y: np.ndarray, s: np.ndarray) -> float:
    """Unweighted AUC from two sorted arrays (a sort is several times faster than an argsort)."""
    pos, neg = np.sort(s[y > 0]), np.sort(s[y == 0])
    if pos.size == 0 or neg.size == 0:
        raise EvaluationError("AUC needs both positive and negative labels")
    below = np.searchsorted(neg, pos, "left").sum(dtype=np.float64)
    not_above = np.searchsorted(neg, pos, "right").sum(dtype=np.float64)
    return float((below + not_above) / 2 / (pos.size * neg.size))


def log_loss(rows: Scored, boot: Bootstrap) -> Replicated:
    """Mean binary cross-entropy (weighted) of the probability at the logged slot, clipped to [1e-15, 1 - 1e-15].

    Labels must lie in [0, 1]: a label of 2 would give a negative loss.
    """
    y, p, w = _outcome(rows), np.clip(_probability(rows), EPS, 1 - EPS), rows.weight
    # binary labels: one logarithm per row instead of two
    binary = _is_binary(rows)
    loss = -np.log(np.where(y > 0, p, 1 - p)) if binary else -(y * np.log(p) + (1 - y) * np.log1p(-p))
    return rows.units(boot, by_request=False).ratio(w * loss, w)


def _edges(bins: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, bins + 1)


def _bins(p: np.ndarray, bins: int) -> np.ndarray:
    """Each probability's bin: bin i holds ``edges[i] <= p < edges[i + 1]``, the last one ``p = 1`` too.

    Left-closed, as ``numpy.histogram``; scikit-learn's ``calibration_curve`` closes the right side instead, so a
    probability exactly on an inner edge (0.1, 0.2, …) falls one bin higher here than there; elsewhere they agree.
    """
    return np.searchsorted(_edges(bins)[1:-1], p, side="right")


def ece(rows: Scored, boot: Bootstrap, bins: int = 10) -> Replicated:
    """Expected calibration error of the probability at the logged slot: the sum over equal-width bins of
    (the bin's share of the weight) × |mean predicted − observed rate|.

    Bins as `_bins` (left-closed, the last closed on both sides).  The probability of the positive class is
    binned, not the top-label confidence max(p, 1 − p) that torchmetrics' binary calibration error bins.
    """
    y, p, w = _outcome(rows), _probability(rows), rows.weight
    units = rows.units(boot, by_request=False)
    if boot.replicates == 0:
        gap = np.bincount(_bins(p, bins), w * (p - y), minlength=bins)
        return float(np.abs(gap).sum() / w.sum()), np.empty(0)
    cell = units.codes * bins + _bins(p, bins)
    gap = np.bincount(cell, w * (p - y), minlength=units.count * bins).reshape(units.count, bins)
    total = w.sum()
    value = float(np.abs(gap.sum(0)).sum() / total) if total > 0 else float("nan")
    unit_w = np.bincount(units.codes, w, minlength=units.count)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.abs(units.weights @ gap).sum(1) / (units.weights @ unit_w)
    return value, reps


@dataclass(frozen=True)
class Reliability:
    """The reliability curve: per equal-width bin, mean predicted probability vs observed rate (with its CI)."""

    edges: np.ndarray
    count: np.ndarray
    predicted: np.ndarray
    observed: list[Estimate]


def reliability(rows: Scored, bins: int = 10, boot: Bootstrap | None = None) -> Reliability:
    """Points of the reliability diagram, binned as `ece`; empty bins have count 0 and NaN values.

    Like `ece`, it judges probabilities at the logged slot: rows scored at the serving slot are refused.
    """
    boot = boot or Bootstrap()
    _check_slot("the reliability curve", "logged", rows)
    y, p, w = _outcome(rows), _probability(rows), rows.weight
    b = _bins(p, bins)
    count = np.bincount(b, minlength=bins)
    wsum = np.bincount(b, w, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(b, w * p, minlength=bins) / wsum
    observed = []
    for i in range(bins):  # one per bin (ten), not per row
        inside = (b == i).astype(np.float64)
        observed.append(interval(*rows.units(boot, by_request=False).ratio(w * y * inside, w * inside), boot.level))
    return Reliability(_edges(bins), count, predicted, observed)


def _per_request(rows: Scored, boot: Bootstrap, value: np.ndarray, defined: np.ndarray) -> Replicated:
    """Mean over requests where the metric is defined (``value``/``defined`` per request), requests resampled."""
    return rows.units(boot, by_request=True).request_ratio(np.where(defined, value, 0.0), defined.astype(np.float64))


def _ranked(rows: Scored, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(requests × k) labels in the model's order (0 past a request's end), and positives per request."""
    y = _binary(rows)
    code, _, n_req = rows.requests
    top = rows.top(k)
    labels = np.where(top >= 0, y[np.maximum(top, 0)], 0.0)
    return labels, np.bincount(code, y, minlength=n_req)


def ndcg(rows: Scored, boot: Bootstrap, k: int = 10) -> Replicated:
    """NDCG@k of binary labels, averaged over the requests with at least one positive.

    Per request it equals scikit-learn's ``ndcg_score`` where the scores have no ties.  The average differs:
    ``ndcg_score`` gives a request without a positive 0 and averages over every request, so its mean is ours
    times the share of requests with a positive.  Ties differ too: here tied scores keep the rows' order (the
    logged order in a dataset split); ``ndcg_score`` averages over the orders of the tied items.
    """
    labels, positives = _ranked(rows, k)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = labels @ discount
    ideal = np.r_[0.0, np.cumsum(discount)][np.minimum(positives, k).astype(np.int64)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return _per_request(rows, boot, dcg / ideal, positives > 0)


def map_at(rows: Scored, boot: Bootstrap, k: int = 10) -> Replicated:
    """MAP@k: per request, the sum of precision@i at each relevant i <= k over min(k, positives)."""
    labels, positives = _ranked(rows, k)
    precision = np.cumsum(labels, axis=1) / np.arange(1, k + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (labels * precision).sum(1) / np.minimum(positives, k)
    return _per_request(rows, boot, value, positives > 0)


def recall(rows: Scored, boot: Bootstrap, k: int = 10) -> Replicated:
    """Recall@k: positives in the model's top k over the request's positives."""
    labels, positives = _ranked(rows, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _per_request(rows, boot, labels.sum(1) / positives, positives > 0)


def rate(column: str) -> Callable[[Scored, Bootstrap], Replicated]:
    """Share of impressions with an action (the funnel's stages), weighted, rows resampled."""

    def fn(rows: Scored, boot: Bootstrap) -> Replicated:
        w = rows.weight
        return rows.units(boot, by_request=False).ratio(w * (rows.col(column) > 0), w)

    fn.__doc__ = f"share of impressions with a {column}"
    return fn


FUNNEL = ("closeup", "click", "save")
LOGGED = "positive head's probability at the logged slot"
SERVING = "ranking score at the serving slot"


def funnel(rows: Scored, group: str | None = None, boot: Bootstrap | None = None) -> dict[str, dict[str, Estimate]]:
    """The engagement funnel per group: impression → closeup → click → save.

    Per group: each stage as a share of impressions (``closeup_rate``, …) and as
    a share of the stage before (``click_per_closeup``, ``save_per_click``:
    counts over counts, as the log does not say a click followed a closeup).
    """
    boot = boot or Bootstrap()
    labels = np.asarray(rows.col(group)).astype(str) if group else np.full(len(rows), "all")
    out: dict[str, dict[str, Estimate]] = {}
    for g in np.unique(labels):  # one per group, not per row
        part = rows.subset(labels == g)
        units, w = part.units(boot, by_request=False), part.weight
        out[str(g)] = {"impressions": Estimate(float(len(part)), float(len(part)), float(len(part)))}
        for before, stage in zip(("impression", *FUNNEL), FUNNEL, strict=False):
            out[str(g)][f"{stage}_rate"] = interval(*rate(stage)(part, boot), boot.level)
            if before != "impression":
                done = w * (part.col(stage) > 0)
                step = units.ratio(done, w * (part.col(before) > 0))
                out[str(g)][f"{stage}_per_{before}"] = interval(*step, boot.level)
    return out


@dataclass(frozen=True)
class Metric:
    """A named metric: how to compute it, which direction is better (for slice regressions and gates), and which
    scores it judges: ``slot="logged"``, the positive head's probability at the slot the outcome was logged at;
    ``"serving"``, the ranking score with the slot held at the serving slot; None, no score at all."""

    name: str
    compute: Callable[..., Replicated]
    higher_is_better: bool
    takes_k: bool = False
    description: str = ""
    slot: Slot | None = "serving"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("auc", auc, True, description=f"ROC AUC over all rows, {LOGGED}", slot="logged"),
        Metric("log_loss", log_loss, False, description=f"binary cross-entropy, {LOGGED}", slot="logged"),
        Metric(
            "ece", ece, False, description=f"expected calibration error, 10 equal-width bins, {LOGGED}", slot="logged"
        ),
        Metric("ndcg@k", ndcg, True, True, f"NDCG of the model's top k, mean over requests with a positive, {SERVING}"),
        Metric("map@k", map_at, True, True, f"mean average precision at k per request, {SERVING}"),
        Metric("recall@k", recall, True, True, f"share of a request's positives in the top k, {SERVING}"),
        Metric("closeup_rate", rate("closeup"), True, description="closeups per impression (no score)", slot=None),
        Metric("click_rate", rate("click"), True, description="clicks per impression (no score)", slot=None),
        Metric("save_rate", rate("save"), True, description="saves per impression (no score)", slot=None),
        Metric(
            "topic_diversity@k", slate.topic_diversity, True, True, f"distinct topics in the top k / slots, {SERVING}"
        ),
        Metric("fresh_share@k", slate.fresh_share, True, True, f"share of top-k slots with a fresh item, {SERVING}"),
        Metric("coverage@k", slate.coverage, True, True, f"distinct items in any top k / catalogue, {SERVING}"),
        Metric("creator_gini@k", slate.creator_gini, False, True, f"Gini of top-k exposure across creators, {SERVING}"),
        Metric(
            "negative_rate@k",
            slate.negative_rate,
            False,
            True,
            f"share of top-k slots with a hide or report, {SERVING}",
        ),
    )
}


def metric(name: str) -> tuple[Metric, dict[str, int]]:
    """Look a metric up by name, ``ndcg@10`` style for the ones that take k; unknown names are a clear error."""
    if name in METRICS and not METRICS[name].takes_k:
        return METRICS[name], {}
    found = re.fullmatch(r"(.+)@(\d+)", name)
    if found and f"{found[1]}@k" in METRICS:
        if not 0 < int(found[2]) <= MAX_K:
            raise EvaluationError(
                f"metric {name!r}: K must be a whole number from 1 to {MAX_K:,} (deeper than any slate, and each "
                "request needs K cells of memory)"
            )
        return METRICS[f"{found[1]}@k"], {"k": int(found[2])}
    known = ", ".join(n.replace("@k", "@K") for n in METRICS)
    raise EvaluationError(f"unknown metric {name!r}; known metrics: {known} (K a whole number from 1 to {MAX_K:,})")


def _check_slot(name: str, slot: Slot | None, rows: Scored) -> None:
    """Refuse rows scored at the other slot than the metric judges (rows that do not say are taken as they are)."""
    if slot is None or rows.slot is None or rows.slot == slot:
        return
    why = {
        "logged": "judges probabilities against outcomes where they were logged: score the rows with "
        "predict(rows, slot='logged')",
        "serving": "judges the order the model would serve: score the rows with the slot held at the serving slot",
    }[slot]
    raise EvaluationError(f"{name} {why}; these rows were scored at the {rows.slot} slot")


def replicated(name: str, rows: Scored, boot: Bootstrap) -> Replicated:
    m, kwargs = metric(name)
    _check_slot(name, m.slot, rows)
    return m.compute(rows, boot, **kwargs)


def evaluate(rows: Scored, names: Iterable[str], boot: Bootstrap | None = None) -> dict[str, Estimate]:
    """Every named metric on the rows, each with its bootstrap interval (B=0: the point estimate only)."""
    boot = boot or Bootstrap()
    names = list(names)
    for name in names:
        metric(name)  # fail on a typo before computing anything
    return {name: interval(*replicated(name, rows, boot), boot.level) for name in names}
