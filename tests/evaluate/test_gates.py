"""Launch gates: goals must clear their margin beyond noise, guardrails hold in every slice, budgets hold."""

from __future__ import annotations

import pytest

from homefeed.evaluate.bootstrap import Estimate, EvaluationError
from homefeed.evaluate.gates import Budgets, Comparison, Cost, GateConfig, Goal, Guardrail, review


def cmp(diff: float, half_width: float = 0.002) -> Comparison:
    base = Estimate(0.70, 0.69, 0.71)
    return Comparison(
        Estimate(0.70 + diff, 0.69 + diff, 0.71 + diff), base, Estimate(diff, diff - half_width, diff + half_width)
    )


CONFIG = GateConfig(
    goals=[Goal(metric="ndcg@10", min_improvement=0.005)],
    guardrails=[Guardrail(metric="hide_rate@3", max_regression=0.002, better="lower")],
    budgets=Budgets(max_predict_p99_ms=4.0, max_size_mb=50, max_features=60),
)
FINE = Cost(predict_p99_ms=1.2, size_mb=3.0, features=56)


def test_a_clear_gain_within_every_guardrail_and_budget_ships():
    verdict = review(
        CONFIG, {"ndcg@10": cmp(0.02), "hide_rate@3": cmp(-0.001)}, {"BR": {"hide_rate@3": cmp(0.0)}}, FINE
    )
    assert verdict.ship and not verdict.reasons and len(verdict.passed) == 5


def test_a_gain_within_noise_does_not_ship():
    verdict = review(CONFIG, {"ndcg@10": cmp(0.006, half_width=0.004), "hide_rate@3": cmp(0.0)}, cost=FINE)
    assert not verdict.ship and verdict.reasons[0].startswith("goal ndcg@10")


def test_a_slice_regression_hidden_by_an_overall_gain_is_a_no_ship():
    overall = {"ndcg@10": cmp(0.02), "hide_rate@3": cmp(-0.004)}  # fewer hides overall ...
    slices = {"new users": {"hide_rate@3": cmp(0.01)}, "US": {"hide_rate@3": cmp(-0.005)}}  # ... more for new users
    verdict = review(CONFIG, overall, slices, FINE)
    assert not verdict.ship
    # The gain signed as better-is-positive: even the CI's best end loses 0.008 for new users.
    assert verdict.reasons == ["guardrail hide_rate@3: regression within 0.002 broken in new users (-0.008)"]


def test_budgets_are_gates_too():
    slow = Cost(predict_p99_ms=9.0, size_mb=3.0, features=None)
    verdict = review(CONFIG, {"ndcg@10": cmp(0.02), "hide_rate@3": cmp(0.0)}, cost=slow)
    assert not verdict.ship
    assert any("predict p99" in r and "9 ms over the limit 4 ms" in r for r in verdict.reasons)
    assert any(r.startswith("budget features: the candidate's value is unknown") for r in verdict.reasons)


def test_a_gate_config_naming_an_unknown_metric_is_a_clear_error():
    with pytest.raises(EvaluationError, match="unknown metric\\(s\\) ndcg@10"):
        review(CONFIG, {}, known_metrics={"auc", "hide_rate@3"})
    with pytest.raises(EvaluationError, match="no comparison for metric\\(s\\) hide_rate@3"):
        review(CONFIG, {"ndcg@10": cmp(0.02)})
