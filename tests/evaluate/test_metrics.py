"""Metrics against hand-computed cases and scikit-learn; bootstrap coverage; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, ndcg_score, roc_auc_score

from homefeed.evaluate.bootstrap import Bootstrap, Estimate, EvaluationError, Scored
from homefeed.evaluate.metrics import METRICS, evaluate, funnel, metric, reliability

NO_CI = Bootstrap(replicates=0)


def value(rows: Scored, name: str) -> float:
    return evaluate(rows, [name], NO_CI)[name].value


def synthetic(requests: int = 400, per: int = 10, seed: int = 0) -> tuple[Scored, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = requests * per
    score = rng.random(n)
    label = (rng.random(n) < 0.1 + 0.5 * score).astype(float)
    rid = np.repeat(np.arange(requests), per)
    return Scored({"label": label, "score": score, "request_id": rid}), label, score


def test_auc_hand_computed_with_ties() -> None:
    rows = Scored({"label": [1, 0, 1, 0], "score": [0.9, 0.5, 0.5, 0.1]})
    # pairs (pos, neg): (0.9, 0.5) 1, (0.9, 0.1) 1, (0.5, 0.5) ½, (0.5, 0.1) 1 → 3.5 / 4
    assert value(rows, "auc") == pytest.approx(0.875)


def test_log_loss_hand_computed() -> None:
    rows = Scored({"label": [1, 0], "score": [0.8, 0.4]})
    assert value(rows, "log_loss") == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)


def test_row_metrics_match_sklearn() -> None:
    rows, y, s = synthetic()
    s2 = np.round(s, 2)  # ties
    tied = rows.with_score(s2)
    assert value(tied, "auc") == pytest.approx(roc_auc_score(y, s2))
    assert value(rows, "log_loss") == pytest.approx(log_loss(y, s))
    w = np.random.default_rng(1).random(len(y))
    weighted = Scored({**rows.columns, "weight": w})
    assert value(weighted, "auc") == pytest.approx(roc_auc_score(y, s, sample_weight=w))
    assert value(weighted, "log_loss") == pytest.approx(log_loss(y, s, sample_weight=w))


def test_ece_and_reliability_hand_computed() -> None:
    # bin [0, 0.5): p 0.2, 0.2, labels 0, 1 → |0.2 - 0.5| ; bin [0.5, 1]: p 0.9, 0.9, labels 1, 1 → |0.9 - 1|
    rows = Scored({"label": [0, 1, 1, 1], "score": [0.2, 0.2, 0.9, 0.9]})
    m, _ = metric("ece")
    assert m.compute(rows, NO_CI, bins=2)[0] == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)
    curve = reliability(rows, bins=2, boot=NO_CI)
    assert curve.count.tolist() == [2, 2]
    assert curve.predicted == pytest.approx([0.2, 0.9])
    assert [o.value for o in curve.observed] == pytest.approx([0.5, 1.0])
    assert value(rows, "ece") == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)  # 10 bins: same two occupied bins


def test_ranking_hand_computed() -> None:
    # one request, model order: labels 0, 1, 1 ; positives at ranks 2 and 3
    rows = Scored({"label": [1, 0, 1], "score": [0.2, 0.9, 0.5], "request_id": [7, 7, 7]})
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert value(rows, "ndcg@3") == pytest.approx(dcg / idcg)
    assert value(rows, "ndcg@2") == pytest.approx((1 / math.log2(3)) / idcg)
    assert value(rows, "map@3") == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert value(rows, "map@2") == pytest.approx((1 / 2) / 2)
    assert value(rows, "recall@2") == pytest.approx(0.5)
    assert value(rows, "recall@1") == 0.0


def test_ranking_matches_sklearn_per_request() -> None:
    rows, y, s = synthetic(requests=200, per=8)
    ys, ss = y.reshape(200, 8), s.reshape(200, 8)
    with_pos = np.flatnonzero(ys.sum(1) > 0)  # requests without a positive are left out of the mean
    for k in (3, 8):
        expected = np.mean([ndcg_score(ys[i : i + 1], ss[i : i + 1], k=k) for i in with_pos])
        assert value(rows, f"ndcg@{k}") == pytest.approx(expected)
    expected_ap = np.mean([average_precision_score(ys[i], ss[i]) for i in with_pos])
    assert value(rows, "map@8") == pytest.approx(expected_ap)  # k >= slate size: AP@k is sklearn's AP


def test_requests_need_not_be_contiguous() -> None:
    rows, _, _ = synthetic(requests=50, per=6)
    perm = np.random.default_rng(3).permutation(len(rows))
    shuffled = rows.subset(perm)
    for name in ("ndcg@5", "map@5", "recall@3"):
        assert value(shuffled, name) == pytest.approx(value(rows, name))


def slate_rows() -> Scored:
    # two requests of three rows; scores put rows in the order listed
    return Scored(
        {
            "label": [1, 0, 0, 0, 1, 0],
            "score": [0.9, 0.8, 0.7, 0.9, 0.8, 0.7],
            "request_id": [1, 1, 1, 2, 2, 2],
            "topic": ["a", "a", "b", "a", "b", "c"],
            "item_id": [10, 11, 12, 10, 13, 14],
            "creator_id": [1, 1, 2, 1, 3, 3],
            "item_age_hours": [1.0, 30.0, 5.0, 48.0, 2.0, 100.0],
            "negative": [0, 1, 0, 0, 0, 1],
        }
    )


def test_slate_metrics_hand_computed() -> None:
    rows = slate_rows()
    assert value(rows, "topic_diversity@2") == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert value(rows, "topic_diversity@3") == pytest.approx((2 / 3 + 3 / 3) / 2)
    assert value(rows, "fresh_share@2") == pytest.approx(2 / 4)  # ages 1, 30 | 48, 2
    assert value(rows, "negative_rate@2") == pytest.approx(1 / 4)
    assert value(rows, "coverage@2") == pytest.approx(3 / 5)  # items 10, 11, 13 of 10..14
    # top-2 exposure per creator: creator 1 → 3 slots, 2 → 0, 3 → 1; sorted 0, 1, 3
    x = np.array([0, 1, 3])
    gini = ((2 * np.arange(1, 4) - 3 - 1) * x).sum() / (3 * x.sum())
    assert value(rows, "creator_gini@2") == pytest.approx(gini)


def test_funnel_per_group() -> None:
    rows = Scored(
        {
            "label": [1, 0, 1, 0],
            "score": [0.5, 0.5, 0.5, 0.5],
            "closeup": [1, 0, 1, 1],
            "click": [1, 0, 0, 1],
            "save": [0, 0, 1, 0],
            "model": ["a", "a", "b", "b"],
        }
    )
    out = funnel(rows, "model", NO_CI)
    assert out["a"]["closeup_rate"].value == 0.5
    assert out["b"]["click_rate"].value == 0.5
    assert out["b"]["save_rate"].value == 0.5
    assert out["a"]["impressions"].value == 2
    assert out["b"]["click_per_closeup"].value == 0.5  # 1 click over 2 closeups
    assert out["b"]["save_per_click"].value == 1.0  # counts over counts
    assert out["a"]["save_per_click"].value == 0.0


def test_bootstrap_interval_covers_the_truth() -> None:
    """On repeated draws of a known problem, the 95% interval holds the true value in at least 90% of seeds."""
    # score ~ U(0,1), label ~ Bernoulli(score): positives' scores have density 2s, negatives' 2(1 - s), so
    # AUC = P(s+ > s-) = 4 ∫∫_{a>b} a(1 - b) = 5/6
    true_auc = 5 / 6
    hits = {"auc": 0, "log_loss": 0, "recall@3": 0}
    seeds = 40
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        n = 3000
        score = rng.random(n)
        label = (rng.random(n) < score).astype(float)
        rows = Scored({"label": label, "score": score, "request_id": np.repeat(np.arange(n // 6), 6)})
        est = evaluate(rows, list(hits), Bootstrap(replicates=100, seed=seed))
        hits["auc"] += est["auc"].contains(true_auc)
        # E[log loss] with p = score: E[-(p ln p + (1-p) ln(1-p))] over p ~ U(0,1) = 1/2
        hits["log_loss"] += est["log_loss"].contains(0.5)
        hits["recall@3"] += est["recall@3"].low < est["recall@3"].value < est["recall@3"].high
    assert hits["auc"] >= 0.9 * seeds
    assert hits["log_loss"] >= 0.9 * seeds
    assert hits["recall@3"] == seeds


def test_per_request_interval_covers_the_truth() -> None:
    """Requests resampled as clusters: recall@1 of a random ranking of 1 positive in 4 is 1/4."""
    hits, seeds = 0, 40
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        per, requests = 4, 500
        label = np.zeros((requests, per))
        label[np.arange(requests), rng.integers(0, per, requests)] = 1
        rows = Scored(
            {
                "label": label.ravel(),
                "score": rng.random(requests * per),
                "request_id": np.repeat(np.arange(requests), per),
            }
        )
        hits += evaluate(rows, ["recall@1"], Bootstrap(seed=seed))["recall@1"].contains(0.25)
    assert hits >= 0.9 * seeds


def test_bucketed_units_keep_the_interval() -> None:
    rows, _, _ = synthetic(requests=2000, per=5)
    full = evaluate(rows, ["ndcg@5", "auc"], Bootstrap(seed=1))
    bucketed = evaluate(rows, ["ndcg@5", "auc"], Bootstrap(seed=1, max_units=500))
    for name in full:
        width = full[name].high - full[name].low
        assert bucketed[name].high - bucketed[name].low == pytest.approx(width, rel=0.35)


def test_unknown_metric_is_a_clear_error() -> None:
    rows, _, _ = synthetic(requests=5)
    with pytest.raises(EvaluationError, match=r"unknown metric 'ndgc@10'.*ndcg@K"):
        evaluate(rows, ["auc", "ndgc@10"])
    for k in (0, 1001, 100_000_000):  # K bounded: a request × K matrix is allocated
        with pytest.raises(EvaluationError, match=f"metric 'ndcg@{k}': K must be a whole number from 1 to 1,000"):
            metric(f"ndcg@{k}")
    assert metric("ndcg@1000")[1] == {"k": 1000}
    assert metric("ndcg@25")[1] == {"k": 25}
    assert "auc" in METRICS


def test_missing_predictions_are_a_clear_error() -> None:
    with pytest.raises(EvaluationError, match="missing predictions: 2 of 4 rows"):
        Scored({"label": [1, 0, 1, 0], "score": [0.1, np.nan, 0.3, np.nan]})


def test_missing_column_and_bad_probabilities() -> None:
    rows, _, _ = synthetic(requests=5)
    with pytest.raises(EvaluationError, match="needs a 'topic' column"):
        evaluate(rows, ["topic_diversity@3"])
    with pytest.raises(EvaluationError, match="probabilities"):
        evaluate(rows.with_score(rows.columns["score"] * 3), ["log_loss"])
    assert isinstance(evaluate(rows, ["auc"])["auc"], Estimate)


def reference_ranking(rows: Scored, k: int) -> dict[str, float]:
    """Per-request NDCG/AP@k/recall by a plain loop, for requests of any length, in any row order."""
    rid, y, s = rows.columns["request_id"], rows.columns["label"], rows.columns["score"]
    out: dict[str, list[float]] = {"ndcg": [], "map": [], "recall": []}
    for r in np.unique(rid):
        yr, sr = y[rid == r], s[rid == r]
        if yr.sum() == 0:
            continue
        ranked = yr[np.argsort(-sr, kind="stable")][:k]
        disc = 1 / np.log2(np.arange(len(ranked)) + 2)
        ideal = np.sort(yr)[::-1][:k]
        out["ndcg"].append((ranked * disc).sum() / (ideal * disc[: len(ideal)]).sum())
        prec = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
        out["map"].append((prec * ranked).sum() / min(k, yr.sum()))
        out["recall"].append(ranked.sum() / yr.sum())
    return {name: float(np.mean(v)) for name, v in out.items()}


@pytest.mark.parametrize("long_request", [False, True])
def test_ranking_with_requests_of_different_lengths(long_request: bool) -> None:
    """Padded per-request sort (mixed lengths) and the all-rows sort (one very long request) agree with a loop."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 9, 300)
    if long_request:
        sizes[7] = 20_000  # 300 requests x 20,000 slots would be too sparse a grid
    rid = np.repeat(rng.permutation(len(sizes)) * 3, sizes)  # ids neither contiguous nor dense
    perm = rng.permutation(len(rid))
    n = len(rid)
    rows = Scored({"label": (rng.random(n) < 0.3).astype(float), "score": rng.random(n), "request_id": rid[perm]})
    for k in (1, 4):
        expected = reference_ranking(rows, k)
        for name in ("ndcg", "map", "recall"):
            assert value(rows, f"{name}@{k}") == pytest.approx(expected[name]), (name, k)


def test_coverage_and_gini_replicates_match_a_brute_force() -> None:
    """The chunked, table-based replicates equal recomputing each replicate from its weights (before re-centring)."""
    from homefeed.evaluate import slate

    rng = np.random.default_rng(2)
    requests, per, k = 300, 6, 3
    n = requests * per
    item = rng.integers(0, 400, n)
    rows = Scored(
        {
            "label": np.zeros(n),
            "score": rng.random(n),
            "request_id": np.repeat(np.arange(requests), per),
            "item_id": item,
            "creator_id": item // 7,
        }
    )
    boot = Bootstrap(replicates=30, seed=4, max_units=100)  # buckets of requests
    units = rows.units(boot, by_request=True)
    top = rows.requests[1] < k
    catalogue = len(np.unique(item))
    creators = np.unique(item // 7)
    cov, gini = [], []
    for b in range(boot.replicates):
        w = units.weights[b, units.codes]
        cov.append(len(np.unique(item[top & (w > 0)])) / catalogue)
        exposure = np.array([w[top & (item // 7 == c)].sum() for c in creators])
        x = np.sort(exposure)
        i = np.arange(1, len(x) + 1)
        gini.append(((2 * i - len(x) - 1) * x).sum() / (len(x) * x.sum()))
    value, reps = slate.coverage(rows, boot, k)
    assert reps - reps.mean() == pytest.approx(np.array(cov) - np.mean(cov))
    assert reps.mean() == pytest.approx(value)
    value, reps = slate.creator_gini(rows, boot, k)
    assert reps - reps.mean() == pytest.approx(np.array(gini) - np.mean(gini))
    assert reps.mean() == pytest.approx(value)


# --- the smaller truths: bad labels and weights, bin edges, averaging, ties, one fresh rule ---------------------------


@pytest.mark.parametrize("name", ["log_loss", "ece"])
def test_labels_outside_0_and_1_are_a_clear_error_not_a_negative_loss(name) -> None:
    rows = Scored({"label": [2.0, 0.0, 1.0], "score": [0.9, 0.2, 0.6]})
    with pytest.raises(EvaluationError, match=r"labels in \[0, 1\].*from 0 to 2"):
        evaluate(rows, [name])
    shares = Scored({"label": [0.25, 0.0, 1.0], "score": [0.25, 0.2, 0.6]})  # a share of positives is a label
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75) + math.log(0.8) + math.log(0.6)) / 3
    assert value(shares, "log_loss") == pytest.approx(expected)


@pytest.mark.parametrize("bad", [np.nan, -1.0, np.inf])
def test_a_missing_or_negative_weight_is_a_clear_error_not_a_nan_auc(bad) -> None:
    rows, _, _ = synthetic(requests=20)
    w = np.ones(len(rows))
    w[3] = bad
    weighted = Scored({**rows.columns, "weight": w})
    for name in ("auc", "log_loss", "ece"):
        with pytest.raises(EvaluationError, match=r"1 of 200 rows have a missing \(NaN\), infinite or negative weight"):
            evaluate(weighted, [name], Bootstrap(replicates=10))


def test_ece_bins_are_closed_on_the_left_and_the_last_on_both_sides() -> None:
    edges = reliability(Scored({"label": [0], "score": [0.5]}), boot=NO_CI).edges
    # on an inner edge: the bin above (numpy.histogram's convention); 0 in the first bin, 1 in the last
    p = np.array([0.0, edges[3], edges[3] - 1e-12, 1.0])
    curve = reliability(Scored({"label": [0, 1, 0, 1], "score": p}), boot=NO_CI)
    assert np.flatnonzero(curve.count).tolist() == [0, 2, 3, 9]
    assert curve.count[[0, 2, 3, 9]].tolist() == [1, 1, 1, 1]


def test_reliability_equals_sklearns_calibration_curve_off_the_edges() -> None:
    from sklearn.calibration import calibration_curve

    rows, y, s = synthetic(requests=300)
    curve = reliability(rows, boot=NO_CI)
    observed, predicted = calibration_curve(y, s, n_bins=10, strategy="uniform")
    filled = curve.count > 0
    assert curve.predicted[filled] == pytest.approx(predicted)
    assert np.array([o.value for o in curve.observed])[filled] == pytest.approx(observed)


def test_ndcg_averages_over_requests_with_a_positive_unlike_sklearn() -> None:
    rows, y, s = synthetic(requests=200, per=8, seed=4)
    ys, ss = y.reshape(200, 8), s.reshape(200, 8)
    share = float((ys.sum(1) > 0).mean())
    assert 0.5 < share < 1  # some requests have no positive
    sklearn_all = ndcg_score(ys, ss, k=5)  # scores those 0 and averages over every request
    assert value(rows, "ndcg@5") == pytest.approx(sklearn_all / share)
    assert value(rows, "ndcg@5") > sklearn_all


def test_tied_scores_keep_the_rows_order() -> None:
    """A model that ties two items is credited with the order the rows came in (the logged order)."""
    first = Scored({"label": [1, 0, 0], "score": [0.5, 0.5, 0.1], "request_id": [1, 1, 1]})
    second = Scored({"label": [0, 1, 0], "score": [0.5, 0.5, 0.1], "request_id": [1, 1, 1]})
    assert value(first, "ndcg@1") == 1.0 and value(second, "ndcg@1") == 0.0
    assert value(first, "recall@1") == 1.0 and value(second, "recall@1") == 0.0
    # sklearn averages over the orders of tied items instead
    assert ndcg_score([[0, 1, 0]], [[0.5, 0.5, 0.1]], k=1) == pytest.approx(0.5)


def test_one_fresh_rule_for_the_slate_metric_and_the_slices() -> None:
    from homefeed.evaluate.slate import FRESH_HOURS
    from homefeed.evaluate.slices import slice_masks

    # the two age columns disagree: the feature set's column (age at the request) decides, in both places
    rows = Scored(
        {
            "label": [0, 0, 0, 0],
            "score": [0.9, 0.8, 0.7, 0.6],
            "request_id": [1, 1, 1, 1],
            "context_item_age_hours": [1.0, 30.0, np.nan, FRESH_HOURS],
            "item_age_hours": [30.0, 1.0, 1.0, 1.0],
        }
    )
    fresh = slice_masks(rows)[("item_age", "fresh")]
    assert fresh.tolist() == [True, False, False, False]  # an unknown age is not fresh; 24 h is not < 24 h
    assert value(rows, "fresh_share@4") == pytest.approx(fresh.mean())
    with pytest.raises(EvaluationError, match="'context_item_age_hours' or 'item_age_hours'"):
        value(Scored({"label": [0], "score": [0.5], "request_id": [1]}), "fresh_share@3")


def test_every_metric_says_which_scores_it_judges() -> None:
    pointwise = {name for name, m in METRICS.items() if m.slot == "logged"}
    assert pointwise == {"auc", "log_loss", "ece"}
    for name, m in METRICS.items():
        words = {"logged": "at the logged slot", "serving": "at the serving slot", None: "no score"}[m.slot]
        assert words in m.description, name


def test_a_metric_refuses_rows_scored_at_the_other_slot() -> None:
    rows, _, s = synthetic(requests=20)
    serving, logged = rows.with_score(s, "serving"), rows.with_score(s, "logged")
    with pytest.raises(EvaluationError, match=r"ece judges probabilities .* slot='logged'.*scored at the serving slot"):
        evaluate(serving, ["ece"])
    with pytest.raises(EvaluationError, match="the reliability curve judges probabilities"):
        reliability(serving)
    with pytest.raises(EvaluationError, match="ndcg@5 judges the order the model would serve"):
        evaluate(logged, ["ndcg@5"])
    assert set(evaluate(logged, ["auc", "ece"], NO_CI)) == {"auc", "ece"}
    assert evaluate(serving, ["ndcg@5"], NO_CI)["ndcg@5"].value == evaluate(rows, ["ndcg@5"], NO_CI)["ndcg@5"].value
