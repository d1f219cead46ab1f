"""Ablations: retrain a registered model without a group of its input features and measure what the group was worth.

The reference model (``production`` by default) is rebuilt from its registered
parameters — same kind, same hyper-parameters, same seed — and trained on the
same dataset with the group's columns removed from its inputs, so the only
difference between the two models is the missing group.  Both score the
dataset's test split and every metric is compared with the paired bootstrap
of the launch review (the same resampled requests for both models), overall
and per slice: a delta whose interval excludes 0 is beyond the noise of the
test days.  The delta is *ablated − full*: a negative AUC delta is what the
group adds.  The ablated model is not registered unless asked; when it is, its
lineage names the reference and the dropped columns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from homefeed.evaluate.bootstrap import Bootstrap, EvaluationError, Scored
from homefeed.evaluate.gates import Comparison
from homefeed.evaluate.metrics import metric
from homefeed.evaluate.pages import comparison_table, escape, page
from homefeed.evaluate.review import compare_models, scored
from homefeed.features.definitions import drop_groups, entity_groups
from homefeed.files import atomic_write_text
from homefeed.train.model import Ranker, TrainingData
from homefeed.train.registry import Registry, Version, model_class
from homefeed.train.snapshots import DatasetStore

#: The goal metric, the guardrails and a calibration-sensitive loss: what a launch review would look at.
DEFAULT_METRICS = ("auc", "log_loss", "ndcg@10", "negative_rate@3")


@dataclass
class AblationReport:
    """The reference model against itself retrained without ``groups``: every metric's delta (ablated − full)."""

    reference: str  # the reference's version
    kind: str
    dataset_id: str
    groups: list[str]  # as asked
    dropped: list[str]  # the columns they named
    kept: int  # input columns left
    rows: int  # test rows scored
    overall: dict[str, dict]  # metric -> {"full", "ablated", "delta"}: each an Estimate as a dict
    slices: dict[str, dict[str, dict]]  # "dimension=value" -> metric -> the same
    higher_is_better: dict[str, bool]
    training_seconds: dict[str, float | None]  # "full" (from the registry) and "ablated"
    replicates: int
    registered: str | None = None
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def beyond_noise(self) -> list[str]:
        """Metrics whose delta's interval excludes 0."""
        return [m for m, c in self.overall.items() if not c["delta"]["low"] <= 0.0 <= c["delta"]["high"]]

    def worse_and_better(self) -> tuple[list[str], list[str]]:
        """The metrics beyond noise, split: those on which the ablated model is worse, those it is better on."""
        worse = [m for m in self.beyond_noise() if (self.overall[m]["delta"]["value"] < 0) == self.higher_is_better[m]]
        return worse, [m for m in self.beyond_noise() if m not in worse]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=float)


def _check_metrics(names: Iterable[str]) -> tuple[list[str], dict[str, bool]]:
    names = list(dict.fromkeys(names))
    if not names:
        raise EvaluationError("name at least one metric to compare")
    return names, {n: metric(n)[0].higher_is_better for n in names}  # an unknown name fails before any training


@dataclass
class _Reference:
    """The model ablations are measured against, loaded and scored on its test split once for every ablation."""

    version: Version
    model: Ranker
    data: TrainingData
    scores: dict[str, Scored]

    @classmethod
    def load(cls, registry: Registry, datasets: DatasetStore, ref: str) -> _Reference:
        version = registry.get(ref)
        if version.dataset_id is None:
            raise EvaluationError(f"{version.version} records no dataset to retrain it on")
        model = registry.load(version.version)
        data = TrainingData.load(datasets, version.dataset_id)
        return cls(version, model, data, scored(model, data.splits["test"]))


def _retrained(
    reference: _Reference,
    drop: list[str],
    metrics: tuple[list[str], dict[str, bool]],
    boot: Bootstrap,
    registry: Registry,
    register: bool,
) -> AblationReport:
    """The reference retrained without ``drop`` (together), compared with it."""
    names, directions = metrics
    version, data = reference.version, reference.data
    kept, dropped = drop_groups(drop, list(reference.model.features))
    feature_set = dict(data.manifest.get("feature_set", {}))
    feature_set.update(columns=kept, version=f"{feature_set.get('version', 'features')} without {' + '.join(drop)}")
    ablated_data = TrainingData(data.dataset_id, kept, data.splits, {**data.manifest, "feature_set": feature_set})

    model = model_class(version.kind).from_params(version.params)
    began = time.perf_counter()
    model.fit(ablated_data)
    seconds = time.perf_counter() - began
    model.training["ablation"] = {"reference": version.version, "groups": drop, "dropped": dropped}

    test = data.splits["test"]
    overall, per_slice = compare_models(reference.scores, scored(model, test), names, boot)
    registered = registry.register(model, ablated_data).version if register else None

    return AblationReport(
        reference=version.version,
        kind=version.kind,
        dataset_id=data.dataset_id,
        groups=drop,
        dropped=dropped,
        kept=len(kept),
        rows=test.num_rows,
        overall={m: _view(overall[m]) for m in names if m in overall},
        slices={s: {m: _view(c) for m, c in sorted(per.items())} for s, per in sorted(per_slice.items())},
        higher_is_better=directions,
        training_seconds={"full": version.training_seconds, "ablated": round(seconds, 3)},
        replicates=boot.replicates,
        registered=registered,
    )


def ablate(
    registry: Registry,
    datasets: DatasetStore,
    ref: str = "production",
    drop: list[str] | None = None,
    metrics: Iterable[str] = DEFAULT_METRICS,
    boot: Bootstrap | None = None,
    register: bool = False,
) -> AblationReport:
    """Retrain ``ref`` without the feature groups in ``drop`` (dropped together) and compare it with ``ref``."""
    checked = _check_metrics(metrics)
    reference = _Reference.load(registry, datasets, ref)
    drop = list(drop or [])
    drop_groups(drop, list(reference.model.features))  # a bad group fails before any training
    return _retrained(reference, drop, checked, boot or Bootstrap(replicates=100, seed=0), registry, register)


def ablate_each(
    registry: Registry,
    datasets: DatasetStore,
    ref: str = "production",
    groups: list[str] | None = None,
    metrics: Iterable[str] = DEFAULT_METRICS,
    boot: Bootstrap | None = None,
) -> list[AblationReport]:
    """One ablation per group (default: every entity group the model has), each retrained on its own.

    The reference is loaded and scored once for all of them.
    """
    checked = _check_metrics(metrics)
    reference = _Reference.load(registry, datasets, ref)
    columns = list(reference.model.features)
    groups = groups or list(entity_groups(columns))
    for group in groups:  # every group is checked before the first retraining
        drop_groups([group], columns)
    boot = boot or Bootstrap(replicates=100, seed=0)
    return [_retrained(reference, [group], checked, boot, registry, False) for group in groups]


def _view(c: Comparison) -> dict:
    """A comparison of the ablated model (the candidate) with the full one (the baseline), in the report's words."""
    return {"full": asdict(c.production), "ablated": asdict(c.candidate), "delta": asdict(c.difference)}


def to_html(r: AblationReport) -> str:
    """One page: what was dropped, then every delta with its interval, overall and per slice."""
    groups = " + ".join(r.groups)
    table = comparison_table(
        [("overall", r.overall), *r.slices.items()], ("full", "ablated", "delta"), ("full", "without", "delta [95% CI]")
    )
    body = f"""<p>{r.kind} retrained with the same parameters on dataset {escape(r.dataset_id)} without
{len(r.dropped)} of its {len(r.dropped) + r.kept} input columns; {r.rows:,} test rows; 95% paired-bootstrap
intervals ({r.replicates} replicates); delta = ablated − full; {r.created_at}.</p>
<p>Dropped: {escape(", ".join(r.dropped))}</p>
{table}
"""
    return page(f"Ablation: {r.reference} without {groups}", body)


def report_name(r: AblationReport) -> str:
    """``ablation-<reference>-without-<groups>``, safe as a file name; a hash keeps globs that differ apart."""
    groups = "+".join(r.groups)
    slug = re.sub(r"[^A-Za-z0-9_+-]+", "-", groups).strip("-") or "group"
    if slug != groups:
        slug += "-" + hashlib.sha256(groups.encode()).hexdigest()[:6]
    return f"ablation-{r.reference}-without-{slug}"


def write_report(report: AblationReport, directory: str | Path) -> tuple[Path, Path]:
    name = report_name(report)
    json_path, html_path = Path(directory) / f"{name}.json", Path(directory) / f"{name}.html"
    atomic_write_text(json_path, report.to_json())
    atomic_write_text(html_path, to_html(report))
    return json_path, html_path
