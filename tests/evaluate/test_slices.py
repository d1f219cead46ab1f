"""Slices: which exist, too-small ones left uncomputed, and a regression an overall gain hides."""

from __future__ import annotations

import numpy as np
import pytest

from homefeed.evaluate.bootstrap import Bootstrap, EvaluationError, Scored
from homefeed.evaluate.slices import activity_column, compare, evaluate_slices, regressions, slice_masks

BOOT = Bootstrap(replicates=100, seed=3)


def world(requests: int = 3000, per: int = 6, seed: int = 0) -> tuple[Scored, np.ndarray]:
    """Rows of three markets (plus a tiny fourth) with user and item columns; returns rows and the true relevance."""
    rng = np.random.default_rng(seed)
    n = requests * per
    user_country = rng.choice(["US", "DE", "FR"], requests, p=[0.5, 0.3, 0.2])
    user_country[:5] = "LU"  # 30 rows: a market too small to judge
    truth = rng.random(n)
    label = (rng.random(n) < truth).astype(float)
    cols = {
        "label": label,
        "score": np.clip(truth + rng.normal(0, 0.3, n), 0, 1),
        "request_id": np.repeat(np.arange(requests), per),
        "country": np.repeat(user_country, per),
        "user_tenure_days": np.repeat(rng.integers(0, 400, requests), per),
        "user_requests_28d": np.repeat(rng.poisson(20, requests), per),
        "context_item_age_hours": rng.exponential(40, n),
        "topic": rng.choice(["art", "food", "travel"], n),
    }
    return Scored(cols), truth


def test_slices_present_and_activity_column() -> None:
    rows, _ = world(requests=300)
    keys = set(slice_masks(rows))
    assert {("all", "all"), ("tenure", "new"), ("tenure", "tenured"), ("activity", "low"), ("activity", "high")} <= keys
    assert {("market", "FR"), ("item_age", "fresh"), ("item_age", "old"), ("topic", "food")} <= keys
    assert activity_column(rows) == "user_requests_28d"
    fallback = Scored(
        {k: v for k, v in rows.columns.items() if k != "user_requests_28d"}
        | {"user_active_days_28d": rows.columns["user_requests_28d"]}
    )
    assert activity_column(fallback) == "user_active_days_28d"
    masks = slice_masks(rows)
    assert (masks[("activity", "low")] | masks[("activity", "mid")] | masks[("activity", "high")]).all()


def test_too_small_slices_are_not_computed() -> None:
    rows, _ = world()
    results = {(r.dimension, r.value): r for r in evaluate_slices(rows, ["auc", "ndcg@3"], BOOT, min_rows=500)}
    tiny = results[("market", "LU")]
    assert tiny.too_small and tiny.metrics == {} and tiny.rows == 30
    us = results[("market", "US")]
    assert not us.too_small and us.metrics["auc"].low < us.metrics["auc"].value < us.metrics["auc"].high


def test_regression_hidden_by_an_overall_gain_is_flagged() -> None:
    rows, truth = world()
    rng = np.random.default_rng(9)
    fr = rows.columns["country"] == "FR"
    # the candidate is nearly perfect everywhere except France, where it has lost the signal
    better = np.clip(truth + rng.normal(0, 0.05, len(rows)), 0, 1)
    candidate_score = np.where(fr, rng.random(len(rows)), better)
    candidate = rows.with_score(candidate_score)
    result = compare(rows, candidate, ["auc", "ndcg@3"], BOOT, min_rows=500, threshold=0.01)
    overall = {c.metric: c for c in result if c.dimension == "all"}
    assert overall["auc"].delta.value > 0 and not overall["auc"].regressed
    flagged = regressions(result)
    assert {(c.dimension, c.value) for c in flagged} == {("market", "FR")}
    assert all(c.hidden for c in flagged)
    assert {c.metric for c in flagged} == {"auc", "ndcg@3"}
    assert not any(c.value == "LU" for c in result)  # too small to compare


def test_paired_interval_is_narrower_than_separate_ones() -> None:
    rows, _ = world(requests=1500)
    rng = np.random.default_rng(1)
    candidate = rows.with_score(rows.columns["score"] + rng.normal(0, 0.01, len(rows)))
    (overall,) = (c for c in compare(rows, candidate, ["auc"], BOOT, min_rows=500) if c.dimension == "all")
    alone = evaluate_slices(rows, ["auc"], BOOT, min_rows=10**9)  # every slice too small: nothing computed
    assert all(r.too_small for r in alone)
    separate = evaluate_slices(rows, ["auc"], BOOT)[0].metrics["auc"]
    assert overall.delta.high - overall.delta.low < 0.2 * (separate.high - separate.low)
    assert not overall.regressed
    # each model's own value has its own interval (not a zero-width one): the baseline's is the separate one
    assert overall.baseline == separate
    assert overall.candidate.low < overall.candidate.value < overall.candidate.high
    assert overall.candidate.high - overall.candidate.low > 5 * (overall.delta.high - overall.delta.low)


def test_compare_needs_the_same_rows() -> None:
    rows, _ = world(requests=100)
    with pytest.raises(EvaluationError, match="same rows"):
        compare(rows, rows.subset(np.arange(len(rows)) < 10), ["auc"])
    with pytest.raises(EvaluationError, match="unknown metric"):
        compare(rows, rows, ["auroc"])
