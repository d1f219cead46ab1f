"""The model interface every ranker implements: parameters in ``__init__``, ``fit``, ``predict``, ``save``/``load``.

Shaped after scikit-learn's estimators so a GBDT and a neural network are
interchangeable behind the registry, the evaluation stage and the ranking
service.  A model predicts one probability per *head* — a positive engagement
and a negative action (hide/report) — and the ranking score is a configured
combination of the heads (``p(positive) − λ·p(negative)``), so negative
feedback is part of the objective rather than a filter bolted on later.

Position bias: ``position="feature"`` trains with the slot as an input.  Which
slot a prediction holds is the caller's question, so ``predict`` asks it:
``slot="serving"`` (the default) holds every row at slot 1 — what an item is
worth where the ranker would put it, not where the old ranker happened to, and
what ranking and serving use; ``slot="logged"`` takes each row's logged slot —
the probability of the outcome *where it happened*, which is what log loss,
calibration and AUC judge.  Scored at slot 1 against outcomes logged at slot 11
on average, the demo's GBDT looked miscalibrated by 0.15 (ECE); at the logged
slot its ECE is 0.004.  A model trained with ``position="ignore"`` gives the same
either way.  ``weights="ips"`` multiplies each row's dataset weight by
1/propensity (clipped), so the old policy's choices count as if it had been
uniform.

Parameters are checked when a model is built (`checked_params`: pydantic
validates the constructor's arguments against its annotations), so a bad
``--param`` or a NaN λ is refused in one line before a dataset is even read,
instead of failing (or, for a NaN λ, silently scoring NaN) after training.
"""

from __future__ import annotations

import abc
import functools
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ConfigDict, Field, NonNegativeInt, ValidationError, validate_call

from homefeed.errors import DamagedStateError, HomefeedError
from homefeed.features.vectors import Hydrated
from homefeed.files import sha256_file
from homefeed.train.categories import Vocabulary, is_category
from homefeed.train.snapshots import DatasetStore

Position = Literal["ignore", "feature"]
Weights = Literal["dataset", "none", "ips"]
#: Where a prediction holds the slot (for a model with position as a feature): the serving slot, or each row's own.
Slot = Literal["serving", "logged"]
SLOTS: tuple[Slot, ...] = ("serving", "logged")
#: The slot every item is scored at when position is a training feature.
SERVING_POSITION = 1
#: The last column of `Ranker.contributions`: what the positive head's raw score is before any input is counted.
BASELINE = "(baseline)"
MODEL_FILE = "model.json"
CHECKSUMS_FILE = "checksums.json"
#: A rate or step size: positive and finite (NaN and infinity are refused).
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Init = TypeVar("Init", bound=Callable)


class ModelError(HomefeedError, ValueError):
    """A model that cannot be trained, saved or loaded as asked (a bad parameter, a missing column)."""


class DamagedModelError(DamagedStateError, ModelError):
    """A saved model's file is missing, tampered or truncated (exit code 3, as for any damaged state)."""


def checked_params(init: Init) -> Init:
    """Validate a constructor's arguments against its annotations, a bad one a `ModelError` naming it."""
    validated = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(init)

    @functools.wraps(init)
    def wrapper(self: object, *args: object, **kwargs: object) -> None:
        try:
            validated(self, *args, **kwargs)
        except ValidationError as exc:
            first = exc.errors()[0]
            # a union's member tags ("tuple[int, ...]") say nothing a user typed: the name and the index do
            where = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and "[" in p))
            raise ModelError(
                f"{type(self).__name__} parameter {where}: {first['msg']} (got {first.get('input')!r})"
            ) from None

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Objective:
    """Which label each head learns, and how the heads combine into the ranking score."""

    positive: str = "engaged"
    negative: str = "negative"
    negative_weight: float = 1.0  # λ: how many positive engagements one hide or report is worth losing

    def __post_init__(self) -> None:
        weight = self.negative_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise ModelError(f"the negative weight λ must be a finite number >= 0, got {weight!r}")

    @property
    def heads(self) -> tuple[str, str]:
        return (self.positive, self.negative)

    def score(self, heads: dict[str, np.ndarray]) -> np.ndarray:
        return heads[self.positive] - self.negative_weight * heads[self.negative]


@dataclass
class TrainingData:
    """A dataset snapshot loaded for training: its splits, the model input columns in order, its manifest."""

    dataset_id: str
    features: list[str]
    splits: dict[str, pa.Table]
    manifest: dict = field(repr=False, default_factory=dict)

    @classmethod
    def load(cls, store: DatasetStore, ref: str) -> TrainingData:
        """A dataset's splits, each checked against the SHA-256 its manifest records (a swapped file is refused)."""
        manifest = store.load(ref)
        splits = {name: store.read_split(manifest, name) for name in ("train", "validation", "test")}
        return cls(manifest["id"], list(manifest["feature_set"]["columns"]), splits, manifest)


def row_weights(rows: pa.Table, weights: Weights, ips_max: float = 20.0) -> np.ndarray:
    """The training weight of each row: the dataset's (sampling corrections), none, or those times 1/propensity."""
    if weights == "none":
        return np.ones(rows.num_rows)
    base = rows["weight"].to_numpy().astype(np.float64) if "weight" in rows.column_names else np.ones(rows.num_rows)
    if weights == "dataset":
        return base
    propensity = pc.fill_null(rows["propensity"], 1.0).to_numpy().astype(np.float64)
    return base * np.minimum(1.0 / np.maximum(propensity, 1e-12), ips_max)


def check_slot(slot: str) -> Slot:
    if slot not in SLOTS:
        raise ModelError(f"slot must be one of {', '.join(map(repr, SLOTS))}, not {slot!r}")
    return slot  # type: ignore[return-value]


def logged_slots(rows: pa.Table) -> np.ndarray:
    """Each row's logged slot (1 = top): what a model reads at ``slot="logged"``, and what it trains on."""
    if "position" not in rows.column_names:
        raise ModelError(
            "rows lack the 'position' column: a model with position as a feature predicts at the logged slot "
            "(and trains) only on rows that say where each item was shown"
        )
    column = rows["position"]
    if column.null_count:
        raise ModelError(f"{column.null_count} of {rows.num_rows} rows have no logged position (null)")
    return column.to_numpy()


def inputs(
    rows: pa.Table, features: list[str], position: Position, slot: Slot, categories: Vocabulary | None = None
) -> np.ndarray:
    """The model's input matrix: the feature columns in order, then the slot when it is a feature.

    ``slot="serving"`` holds the slot at `SERVING_POSITION`; ``"logged"`` reads each row's (training reads it too).
    A category column (strings) goes in as its code in ``categories``; one without a vocabulary is refused.
    """
    check_slot(slot)
    present = set(rows.column_names)  # once: ``column_names`` builds a new list on every access
    missing = [c for c in features if c not in present]
    if missing:
        raise ModelError(f"rows lack feature column(s) {', '.join(missing[:5])}")
    # Filled column by column into one preallocated matrix: on a 500-row serving batch this is ~10x faster than
    # converting each column and stacking them, and it is most of a GBDT's predict latency.
    out = np.empty((rows.num_rows, len(features) + (position == "feature")), np.float32)
    for j, name in enumerate(features):
        column = rows.column(name)
        if categories is not None and name in categories:
            out[:, j] = categories.encode(name, column)
            continue
        if is_category(column.type):
            raise ModelError(
                f"column {name!r} holds categories (strings), but the model has no vocabulary for it: "
                "it was trained on a dataset where the column held numbers"
            )
        out[:, j] = column.chunk(0).to_numpy(zero_copy_only=False) if column.num_chunks == 1 else column.to_numpy()
    if position == "feature":
        out[:, -1] = SERVING_POSITION if slot == "serving" else logged_slots(rows)
    return out


def hydrated_inputs(
    rows: Hydrated, features: list[str], position: Position, categories: Vocabulary | None = None
) -> np.ndarray:
    """`inputs` at the serving slot from serving's hydrated rows: the same matrix, without an Arrow table between.

    In float64 (the float32 values exactly): compiled trees read float64, so this one copy is the only one.
    """
    if rows.columns != features:
        raise ModelError("the hydrated rows hold other columns than the model reads, or in another order")
    n, d = rows.matrix.shape
    out = np.empty((n, d + (position == "feature")), np.float64)
    out[:, :d] = rows.matrix
    for name, column in rows.categories.items():
        if categories is None or name not in categories:
            raise ModelError(
                f"column {name!r} holds categories (strings), but the model has no vocabulary for it: "
                "it was trained on a dataset where the column held numbers"
            )
        out[:, features.index(name)] = categories.encode(name, column)
    if position == "feature":
        out[:, -1] = SERVING_POSITION
    return out


#: What a training record's ``validation_auc`` and ``validation_logloss`` are, recorded beside them.
VALIDATION_METRICS = (
    "per head, on the validation split: AUC and log loss of the probability at the logged slot "
    "against the head's label, weighted by the dataset's weights (as the launch review's auc and log_loss)"
)
#: Probabilities are clipped this far from 0 and 1 in a log loss, here and in ``evaluate.metrics``.
LOG_LOSS_EPS = 1e-15


def validation_metrics(model: Ranker, rows: pa.Table) -> dict[str, dict[str, float | None]]:
    """Per head, AUC and log loss as `VALIDATION_METRICS` defines them (None where the rows hold one class).

    The definitions are the launch review's ``auc`` and ``log_loss`` (``evaluate.metrics``), so a model gets the
    same number in the registry and in a review of the same rows; scikit-learn computes them here because the
    training stage comes before the evaluation stage.  The dataset's weights (sampling corrections), not the
    fit's: IPS weights are how a model is fitted, not how it is judged.
    """
    from sklearn.metrics import log_loss, roc_auc_score  # a second to import; only training needs it

    probabilities = model.predict(rows, slot="logged")
    weight = row_weights(rows, "dataset")
    out: dict[str, dict[str, float | None]] = {}
    for head, p in probabilities.items():
        y = rows[head].to_numpy(zero_copy_only=False).astype(np.float64)
        if len(np.unique(y)) < 2:
            out[head] = {"validation_auc": None, "validation_logloss": None}
            continue
        clipped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
        out[head] = {
            "validation_auc": round(float(roc_auc_score(y, p, sample_weight=weight)), 6),
            "validation_logloss": round(float(log_loss(y, clipped, sample_weight=weight)), 6),
        }
    return out


def verify_checksums(directory: Path) -> None:
    """Refuse a model whose files are not byte for byte the ones saved: tampered, truncated or missing."""
    try:
        checksums = json.loads((directory / CHECKSUMS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        checksums = None
    if not isinstance(checksums, dict) or MODEL_FILE not in checksums:
        raise DamagedModelError(f"{directory / CHECKSUMS_FILE}: no checksums of the model's files; refusing to load it")
    for name, expected in sorted(checksums.items()):
        path = directory / name
        if Path(name).name != name:
            raise DamagedModelError(f"{directory / CHECKSUMS_FILE}: checksum entry {name!r} is not a file of the model")
        if not path.is_file():
            raise DamagedModelError(f"{path}: missing ({CHECKSUMS_FILE} lists it)")
        if sha256_file(path) != expected:
            raise DamagedModelError(f"{path}: checksum mismatch: the file was changed or truncated after it was saved")


class Ranker(abc.ABC):
    """A trained (or to-be-trained) ranking model with one probability per head."""

    kind: ClassVar[str]

    @checked_params
    def __init__(
        self,
        objective: Objective | None = None,
        position: Position = "ignore",
        weights: Weights = "dataset",
        seed: Annotated[NonNegativeInt, Field(lt=2**31)] = 0,
        drop_empty_heads: bool = False,
    ):
        self.objective = objective or Objective()
        self.position = position
        self.weights = weights
        self.seed = seed
        self.drop_empty_heads = drop_empty_heads
        self.features: list[str] = []
        self.dataset_id: str | None = None
        self.training: dict = {}  # metrics and timings of the fit, for the registry

    @abc.abstractmethod
    def fit(self, data: TrainingData) -> Ranker:
        """Learn every head from ``data``'s train split, stopping early on its validation split."""

    @abc.abstractmethod
    def predict(self, rows: pa.Table, slot: Slot = "serving") -> dict[str, np.ndarray]:
        """Per head, the probability for each row, with the slot held at the serving slot or at each row's logged one.

        ``"serving"`` ranks: every item as if shown at the top.  ``"logged"`` judges: the probability of the
        outcome where it was logged, which log loss, calibration and AUC compare with the label.  A model
        trained with ``position="ignore"`` gives the same either way.
        """

    def predict_hydrated(self, rows: Hydrated) -> dict[str, np.ndarray]:
        """`predict` at the serving slot on serving's hydrated rows: the same probabilities (a model reading a
        matrix overrides it to skip the table)."""
        return self.predict(rows.table())

    def score(self, rows: pa.Table) -> np.ndarray:
        """The ranking score, ``p(positive) − λ·p(negative)``, at the serving slot: what the ranker orders by."""
        return self.combine(self.predict(rows))

    @property
    def heads(self) -> tuple[str, ...]:
        """The heads the model learned: the objective's, less any dropped for a label the dataset never held."""
        dropped = self.training.get("dropped_heads", {})
        return tuple(h for h in self.objective.heads if h not in dropped)

    def combine(self, heads: dict[str, np.ndarray]) -> np.ndarray:
        """The ranking score from each head's probabilities: the objective's, or ``p(positive)`` alone when the
        negative head was dropped (λ is then ignored, and the training record says why)."""
        if self.objective.negative not in self.heads:
            return heads[self.objective.positive]
        return self.objective.score(heads)

    def empty_heads(self, data: TrainingData) -> dict[str, str]:
        """The heads to drop from this fit (with why), checked before any training; refuses what cannot be dropped.

        A head whose label never occurs in the train split has nothing to learn: a model would be trained (and
        its λ weigh a constant) on logs that never record the event, as once on the Open Bandit Dataset, which
        logs clicks only.  Such a head is refused unless ``drop_empty_heads``; the positive head never drops.
        """
        rows = data.splits["train"]
        out: dict[str, str] = {}
        for head in self.objective.heads:
            if head not in rows.column_names:
                raise ModelError(f"dataset {data.dataset_id} has no label column {head!r}")
            if pc.sum(rows[head]).as_py():
                continue
            why = f"label {head!r} never occurs in the train split of dataset {data.dataset_id}"
            why += f" (0 of {rows.num_rows:,} rows)"
            if head == self.objective.positive:
                raise ModelError(f"{why}: the positive head has nothing to learn and the model nothing to rank by")
            if not self.drop_empty_heads:
                raise ModelError(
                    f"{why}: its head would learn a constant. Train with drop_empty_heads (`homefeed train "
                    f"--drop-empty-heads`) to rank by {self.objective.positive!r} alone, λ ignored, or build a "
                    f"dataset whose logs hold {head!r} events"
                )
            out[head] = f"{why}; dropped, so λ = {self.objective.negative_weight:g} is ignored"
        return out

    @abc.abstractmethod
    def contributions(self, rows: pa.Table) -> tuple[np.ndarray, list[str]]:
        """Per row, each input's contribution to the positive head's raw score (log-odds), as predicted.

        Returns a (rows × (inputs + 1)) matrix and its column names: the inputs (the features, ``position``
        when it is a feature, and whatever else the model reads), then `BASELINE`, the raw score with no input
        counted.  A row sums to the positive head's log-odds, ``logit(predict(rows)[positive])``: exactly for
        the GBDT, up to the integration error of the attribution method for the NN.  Inputs are taken as
        `predict` takes them (position held at the serving slot).
        """

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameters, this class's and its bases' (as scikit-learn's ``get_params`` finds them)."""
        names: list[str] = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                    names.append(p.name)
        return names

    def params(self) -> dict:
        """Everything that defines the model before training (JSON-ready), for the registry's lineage and `load`.

        Read from the constructor's signature, so a new parameter is recorded without listing it again; each
        must be kept as an attribute of the same name, as scikit-learn's estimators keep theirs.
        """
        out: dict = {"kind": self.kind}
        for name in self.param_names():
            value = getattr(self, name)
            out[name] = asdict(value) if name == "objective" else list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_params(cls, params: dict) -> Ranker:
        """An untrained model of this kind built from `params` (a saved or registered model's), to retrain it."""
        params = dict(params)
        kind = params.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ModelError(f"parameters of a {kind!r} model, not {cls.kind!r}")
        if isinstance(params.get("objective"), dict):
            params["objective"] = Objective(**params["objective"])
        return cls(**params)

    def save(self, directory: str | Path) -> None:
        """Write the model in safe formats only (text, JSON, tensors): never pickle.

        ``checksums.json``, written last, holds every other file's SHA-256 (``model.json`` included); ``load``
        checks them all before it parses anything.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "params": self.params(),
            "features": self.features,
            "dataset_id": self.dataset_id,
            "training": self.training,
        }
        self._save_weights(directory)
        (directory / MODEL_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        checksums = {
            p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != CHECKSUMS_FILE
        }
        (directory / CHECKSUMS_FILE).write_text(json.dumps(checksums, indent=1, sort_keys=True), encoding="utf-8")

    @abc.abstractmethod
    def _save_weights(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: str | Path) -> Ranker:
        directory = Path(directory)
        verify_checksums(directory)
        try:
            meta = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
            params = dict(meta["params"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{directory}: not a readable model ({exc})") from None
        if params.get("kind") != cls.kind:
            raise ModelError(f"{directory}: a {params.get('kind')!r} model, not {cls.kind!r}")
        model = cls.from_params(params)
        model.features = list(meta["features"])
        model.dataset_id = meta.get("dataset_id")
        model.training = meta.get("training", {})
        model._load_weights(directory)
        return model

    @abc.abstractmethod
    def _load_weights(self, directory: Path) -> None: ...
