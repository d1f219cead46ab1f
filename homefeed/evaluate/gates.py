"""Launch gates: the rules a candidate must pass against ``production`` before it gets live traffic.

Goal metrics must improve by at least a margin, and not by noise: the lower
end of the difference's confidence interval must clear the margin.
Guardrails must not regress beyond their budget, overall or in any slice
large enough to judge, which is how a gain for most users that hurts new
users or one market is caught.  Budgets cover what offline metrics miss:
calibration, serving latency, model size, training cost and the number of
features each of them must be maintained for.  Each rule that fails is one
reason in the verdict; a verdict with any reason is no-ship.

A metric's *role* (goal, guardrail) is configuration, not code: the same
metric can be a goal in one launch and a guardrail in another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from homefeed.evaluate.bootstrap import Estimate, EvaluationError

Direction = Literal["higher", "lower"]  # which way is better


class Goal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    metric: str
    min_improvement: float = Field(0.0, ge=0.0)  # in the metric's units, in its better direction
    better: Direction = "higher"


class Guardrail(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    metric: str
    max_regression: float = Field(ge=0.0)  # overall and in every judged slice
    better: Direction = "higher"


class Budgets(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    max_calibration_error: float | None = Field(None, ge=0.0)
    max_predict_p99_ms: float | None = Field(None, gt=0.0)
    max_size_mb: float | None = Field(None, gt=0.0)
    max_training_seconds: float | None = Field(None, gt=0.0)
    max_features: int | None = Field(None, ge=1)


class GateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    goals: list[Goal] = Field(default_factory=list)
    guardrails: list[Guardrail] = Field(default_factory=list)
    budgets: Budgets = Budgets()

    def metrics(self) -> set[str]:
        return {g.metric for g in self.goals} | {g.metric for g in self.guardrails}


@dataclass(frozen=True)
class Comparison:
    """A metric for the candidate, for production, and their difference (candidate − production) with its CI."""

    candidate: Estimate
    production: Estimate
    difference: Estimate


@dataclass(frozen=True)
class Cost:
    """What the candidate costs to keep: from the registry, and its calibration from the review."""

    calibration_error: float | None = None  # ECE of p(engaged) at the logged slot on the test rows (metric ``ece``)
    predict_p99_ms: float | None = None
    size_mb: float | None = None
    training_seconds: float | None = None
    features: int | None = None


@dataclass
class Verdict:
    ship: bool
    reasons: list[str] = field(default_factory=list)  # why not, one per failed rule
    passed: list[str] = field(default_factory=list)  # every rule that held, with its numbers


def _gain(d: Estimate, better: Direction) -> tuple[float, float]:
    """The difference's (worst, best) ends, signed so that positive is better."""
    return (d.low, d.high) if better == "higher" else (-d.high, -d.low)


def review(
    config: GateConfig,
    overall: dict[str, Comparison],
    slices: dict[str, dict[str, Comparison]] | None = None,
    cost: Cost | None = None,
    known_metrics: set[str] | None = None,
) -> Verdict:
    """Judge a candidate: every goal, every guardrail overall and per slice, every budget."""
    if known_metrics is not None:
        unknown = sorted(config.metrics() - known_metrics)
        if unknown:
            raise EvaluationError(f"gate config names unknown metric(s) {', '.join(unknown)}")
    missing = sorted(config.metrics() - set(overall))
    if missing:
        raise EvaluationError(f"no comparison for metric(s) {', '.join(missing)} named by the gate config")
    verdict = Verdict(ship=True)
    for goal in config.goals:
        worst, _ = _gain(overall[goal.metric].difference, goal.better)
        text = f"goal {goal.metric}: gain at least {worst:+.4g} (95% CI), needed {goal.min_improvement:+.4g}"
        (verdict.passed if worst >= goal.min_improvement else verdict.reasons).append(text)
    for guard in config.guardrails:
        judged = {"overall": overall[guard.metric]} | {
            name: per[guard.metric] for name, per in (slices or {}).items() if guard.metric in per
        }
        broken = []
        for name, comparison in judged.items():
            _, best = _gain(comparison.difference, guard.better)
            if best < -guard.max_regression:  # even the most favourable end regresses beyond the budget
                broken.append(f"{name} ({best:+.4g})")
        text = f"guardrail {guard.metric}: regression within {guard.max_regression:g}"
        if broken:
            verdict.reasons.append(f"{text} broken in {', '.join(broken)}")
        else:
            verdict.passed.append(f"{text} overall and in {len(judged) - 1} slice(s)")
    _budgets(config.budgets, cost or Cost(), verdict)
    verdict.ship = not verdict.reasons
    return verdict


def _budgets(b: Budgets, c: Cost, verdict: Verdict) -> None:
    for label, limit, value, unit in (
        ("calibration error (ECE at the logged slot)", b.max_calibration_error, c.calibration_error, ""),
        ("predict p99 for 500 rows", b.max_predict_p99_ms, c.predict_p99_ms, " ms"),
        ("model size", b.max_size_mb, c.size_mb, " MB"),
        ("training time", b.max_training_seconds, c.training_seconds, " s"),
        ("features", b.max_features, c.features, ""),
    ):
        if limit is None:
            continue
        if value is None:
            verdict.reasons.append(f"budget {label}: the candidate's value is unknown (limit {limit:g}{unit})")
        elif value > limit:
            verdict.reasons.append(f"budget {label}: {value:.4g}{unit} over the limit {limit:g}{unit}")
        else:
            verdict.passed.append(f"budget {label}: {value:.4g}{unit} within {limit:g}{unit}")
