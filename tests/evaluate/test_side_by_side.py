import numpy as np
import pytest

from homefeed.evaluate.bootstrap import Bootstrap, EvaluationError, Scored
from homefeed.evaluate.side_by_side import agreement, per_request


def _rbo(x: list, y: list, k: int, p: float) -> float:
    """Webber et al.'s extrapolated RBO at depth k, transcribed as written."""
    a = [len(set(x[:d]) & set(y[:d])) / d for d in range(1, k + 1)]
    return (1 - p) * sum(p ** (d - 1) * a[d - 1] for d in range(1, k + 1)) + p**k * a[k - 1]


def _scored(rid: np.ndarray, score: np.ndarray) -> Scored:
    return Scored({"request_id": rid, "label": np.zeros(len(rid)), "score": score})


def test_rbo_matches_the_formula_on_requests_of_different_sizes():
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 25, 80)
    rid = np.repeat(np.arange(80), sizes)
    sa = rng.random(len(rid))
    sb = sa + rng.random(len(rid)) * 0.4
    got = per_request(_scored(rid, sa), _scored(rid, sb), depth=10, p=0.8)["rbo"]
    want = []
    for r in range(80):
        rows = np.flatnonzero(rid == r)
        order_a = list(rows[np.argsort(-sa[rows], kind="stable")])
        order_b = list(rows[np.argsort(-sb[rows], kind="stable")])
        want.append(_rbo(order_a, order_b, min(10, len(rows)), 0.8))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_identical_rankings_agree_fully_and_reversed_ones_change_the_top_slot():
    rid = np.repeat(np.arange(30), 12)
    score = np.tile(np.arange(12, dtype=float), 30)
    same = agreement(_scored(rid, score), _scored(rid, score), boot=Bootstrap(50, seed=1))
    assert same.rbo.value == pytest.approx(1.0)
    assert same.top_slot_changed.value == 0.0 and same.mean_rank_shift.value == 0.0
    flipped = agreement(_scored(rid, score), _scored(rid, -score), depth=5, boot=Bootstrap(50, seed=1))
    assert flipped.top_slot_changed.value == 1.0
    assert flipped.rbo.value < 0.05  # the top 5 of 12 reversed share nothing
    assert flipped.rbo.low <= flipped.rbo.value <= flipped.rbo.high


def test_different_rows_are_refused():
    rid = np.repeat(np.arange(3), 4)
    with pytest.raises(EvaluationError, match="same rows"):
        per_request(_scored(rid, np.ones(12)), _scored(rid[::-1].copy(), np.ones(12)))
    with pytest.raises(EvaluationError, match="depth"):
        per_request(_scored(rid, np.ones(12)), _scored(rid, np.ones(12)), depth=0)
