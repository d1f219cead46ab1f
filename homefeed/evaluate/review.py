"""The launch review: a registered candidate against ``production`` on the candidate's held-out days, judged by gates.

Both models score the same test rows twice: the positive head's probability at
each row's logged slot, which the pointwise metrics (AUC, log loss, ECE) judge
against the outcome logged there, and the ranking score at the serving slot,
which the ranking and slate metrics judge (`metrics.Metric.slot`).  Every
gated metric is compared with a paired bootstrap (the same resampled requests
for both), overall and per slice, each model's value with its own interval;
the registry supplies what the candidate costs (latency, size, training time,
features), and the calibration budget reads the candidate's ECE at the logged
slot.  Scored at slot 1 instead, the demo's GBDT had an ECE of 0.15 (every bin
over-predicted by the slot-1 boost) and 0.004 where the outcomes happened.  The
report holds every number with its interval, both models' reliability curves
and the verdict with its reasons, as JSON for machines and HTML (with a chart)
for people.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
from pydantic import ValidationError

from homefeed.config import ConfigError, read_toml
from homefeed.evaluate.bootstrap import Bootstrap, EvaluationError, Scored
from homefeed.evaluate.charts import curve_record, reliability_figure, reliability_table, write_plotly_js
from homefeed.evaluate.gates import Budgets, Comparison, Cost, GateConfig, Goal, Guardrail, Verdict, review
from homefeed.evaluate.metrics import METRICS, metric, reliability
from homefeed.evaluate.pages import comparison_table, escape, page
from homefeed.evaluate.slices import SliceComparison, compare
from homefeed.files import atomic_write_text
from homefeed.train.model import Ranker, TrainingData
from homefeed.train.registry import Registry, Version
from homefeed.train.snapshots import DatasetStore

#: Metrics of the positive head's probability at the logged slot; every other metric reads the ranking score.
PROBABILITY_METRICS = {name for name, m in METRICS.items() if m.slot == "logged"}
#: Bins of the reliability curve, as the ``ece`` metric bins.
RELIABILITY_BINS = 10

DEFAULT_GATES = GateConfig(
    goals=[Goal(metric="ndcg@10", min_improvement=0.0)],
    guardrails=[
        Guardrail(metric="negative_rate@3", max_regression=0.002, better="lower"),
        Guardrail(metric="auc", max_regression=0.01),
    ],
    budgets=Budgets(max_calibration_error=0.05, max_predict_p99_ms=10.0, max_size_mb=100.0, max_features=80),
)


def load_gates(path: str | Path | None) -> GateConfig:
    """A gate file (TOML: ``[[goals]]``, ``[[guardrails]]``, ``[budgets]``), or the defaults; names are checked."""
    if path is None:
        config = DEFAULT_GATES
    else:
        try:
            config = GateConfig(**read_toml(path, "gate file"))
        except ConfigError as exc:
            raise EvaluationError(str(exc)) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise EvaluationError(f"{path}: {where}: {first['msg']}") from None
    for name in config.metrics():
        try:
            metric(name)
        except EvaluationError as exc:
            raise EvaluationError(f"gate config {path or '(the defaults)'}: {exc}") from None
    return config


@dataclass
class LaunchReport:
    candidate: str
    production: str
    dataset_id: str
    rows: int
    verdict: Verdict
    overall: dict[str, dict]
    slices: dict[str, dict[str, dict]]
    cost: dict
    created_at: str
    #: per model version: its reliability curve on the test rows at the logged slot (`charts.curve_record`)
    reliability: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=float)


def scored(model: Ranker, test: pa.Table) -> dict[str, Scored]:
    """A model's scores on test rows, twice: ``probability``, its positive head at each row's logged slot (what the
    pointwise metrics judge), and ``ranking``, its ranking score at the serving slot (what the ranking metrics do).
    """
    columns = {
        name: test[name].to_numpy(zero_copy_only=False)
        for name in test.column_names
        if not pa.types.is_nested(test.schema.field(name).type)
    }
    columns["label"] = columns["engaged"]
    logged = model.predict(test, slot="logged")
    serving = logged if model.position == "ignore" else model.predict(test, slot="serving")  # the same, else
    probability = Scored({**columns, "score": logged[model.objective.positive]}, slot="logged")
    return {"probability": probability, "ranking": probability.with_score(model.combine(serving), "serving")}


def _comparison(c: SliceComparison) -> Comparison:
    """The gates' view of a slice comparison: each model's value with its interval, and the paired difference."""
    return Comparison(c.candidate, c.baseline, c.delta)


@dataclass
class ScoredPair:
    """Two registered models scored on the same test rows: the candidate's dataset's held-out days."""

    candidate: Version
    baseline: Version
    test: pa.Table
    candidate_model: Ranker
    baseline_model: Ranker
    candidate_scores: dict[str, Scored]
    baseline_scores: dict[str, Scored]


def score_pair(registry: Registry, datasets: DatasetStore, candidate: str, baseline: str) -> ScoredPair:
    """Load both versions (or aliases) and score them on the candidate's test split."""
    cand_v, base_v = registry.get(candidate), registry.get(baseline)
    if cand_v.version == base_v.version:
        raise EvaluationError(f"{candidate} and {baseline} are the same version ({cand_v.version})")
    if cand_v.dataset_id is None:
        raise EvaluationError(f"{cand_v.version} records no dataset to evaluate it on")
    test = TrainingData.load(datasets, cand_v.dataset_id).splits["test"]
    if test.num_rows == 0:
        raise EvaluationError(f"dataset {cand_v.dataset_id} has no test rows")
    cand_m, base_m = registry.load(cand_v.version), registry.load(base_v.version)
    have = set(test.column_names)
    for version, model in ((cand_v.version, cand_m), (base_v.version, base_m)):
        missing = [c for c in model.features if c not in have]
        if missing:
            raise EvaluationError(
                f"{version} reads feature column(s) {', '.join(missing[:5])} that dataset {cand_v.dataset_id}'s "
                "test split lacks: compare models trained on the same feature set"
            )
    return ScoredPair(cand_v, base_v, test, cand_m, base_m, scored(cand_m, test), scored(base_m, test))


def compare_models(
    baseline: dict[str, Scored], candidate: dict[str, Scored], names: Iterable[str], boot: Bootstrap
) -> tuple[dict[str, Comparison], dict[str, dict[str, Comparison]]]:
    """Paired comparisons of two models' `scored` rows: overall by metric, and per ``dimension=value`` slice."""
    overall: dict[str, Comparison] = {}
    per_slice: dict[str, dict[str, Comparison]] = {}
    names = set(names)
    for kind in ("probability", "ranking"):
        wanted = sorted(n for n in names if (metric(n)[0].slot == "logged") == (kind == "probability"))
        if not wanted:
            continue
        for c in compare(baseline[kind], candidate[kind], wanted, boot):
            if c.dimension == "all":
                overall[c.metric] = _comparison(c)
            else:
                per_slice.setdefault(f"{c.dimension}={c.value}", {})[c.metric] = _comparison(c)
    return overall, per_slice


def launch_review(
    registry: Registry,
    datasets: DatasetStore,
    candidate: str,
    gates: GateConfig,
    against: str = "production",
    boot: Bootstrap | None = None,
) -> LaunchReport:
    """Compare ``candidate`` with ``against`` on the candidate's test split and judge it by ``gates``."""
    boot = boot or Bootstrap(replicates=100, seed=0)
    pair = score_pair(registry, datasets, candidate, against)
    # ECE is always compared: the calibration budget reads the candidate's value from the comparison.
    overall, per_slice = compare_models(pair.baseline_scores, pair.candidate_scores, gates.metrics() | {"ece"}, boot)
    cand_v, prod_v, test = pair.candidate, pair.baseline, pair.test
    cost = Cost(
        calibration_error=overall["ece"].candidate.value,
        predict_p99_ms=cand_v.predict_p99_ms,
        size_mb=cand_v.size_bytes / 1e6,
        training_seconds=cand_v.training_seconds,
        features=len(pair.candidate_model.features),
    )
    verdict = review(gates, overall, per_slice, cost, known_metrics=set(METRICS) | gates.metrics())
    curves = {
        version.version: curve_record(reliability(scores["probability"], RELIABILITY_BINS, boot), c.value)
        for version, scores, c in (
            (prod_v, pair.baseline_scores, overall["ece"].production),
            (cand_v, pair.candidate_scores, overall["ece"].candidate),
        )
    }
    return LaunchReport(
        candidate=cand_v.version,
        production=prod_v.version,
        dataset_id=cand_v.dataset_id,
        rows=test.num_rows,
        verdict=verdict,
        overall={k: asdict(v) for k, v in sorted(overall.items())},
        slices={s: {k: asdict(v) for k, v in sorted(m.items())} for s, m in sorted(per_slice.items())},
        cost=asdict(cost),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        reliability=curves,
    )


def to_html(r: LaunchReport) -> str:
    """One page: the verdict and its reasons, then every compared number with its interval."""
    verdict = "SHIP" if r.verdict.ship else "NO SHIP"
    items = lambda xs: "".join(f"<li>{escape(x)}</li>" for x in xs)  # noqa: E731
    table = comparison_table(
        [("overall", r.overall), *r.slices.items()],
        ("production", "candidate", "difference"),
        (r.production, r.candidate, "difference [95% CI]"),
    )
    calibration = ""
    if r.reliability:
        title = "Reliability at the logged slot (10 equal-width bins)"
        calibration = f"""<h2>Calibration at the logged slot</h2>
<p>Each model's p(engaged) at the slot each test impression was logged at, binned, against the engagement rate
observed there; a calibrated model follows the diagonal.  ECE is the bins' weighted mean distance from it.</p>
{reliability_figure(r.reliability, title)}
{reliability_table(r.reliability)}
"""
    body = f"""<p>Dataset {escape(r.dataset_id)}, {r.rows:,} test rows; 95% bootstrap intervals, paired for the
differences; auc, log_loss and ece judge p(engaged) at the logged slot, every other metric the ranking score at the
serving slot; {escape(r.created_at)}.</p>
<h2>Reasons</h2><ul>{items(r.verdict.reasons) or "<li>none</li>"}</ul>
<h2>Rules that held</h2><ul>{items(r.verdict.passed)}</ul>
<h2>Cost</h2><ul>{items(f"{k}: {v}" for k, v in r.cost.items())}</ul>
{calibration}<h2>Every comparison</h2>
{table}
"""
    return page(f"Launch review: {r.candidate} vs {r.production}: {verdict}", body)


def write_report(report: LaunchReport, directory: str | Path) -> tuple[Path, Path]:
    base = Path(directory) / f"launch-{report.candidate}-vs-{report.production}"
    json_path, html_path = base.with_suffix(".json"), base.with_suffix(".html")
    write_plotly_js(directory)  # the page's chart loads it from beside the page
    atomic_write_text(json_path, report.to_json())
    atomic_write_text(html_path, to_html(report))
    return json_path, html_path
