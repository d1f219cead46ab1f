"""The neural ranker: id and categorical embeddings, normalized numeric features, a shared MLP, one logit per head.

Ids (``user_id``, ``item_id``) are hashed into a fixed number of buckets with
a stable hash (SplitMix64 for integers, BLAKE2b for strings — never Python's
``hash()``, which is salted per process), so a model scores the same id the
same way in every process and unseen ids need no vocabulary.  Low-cardinality
categoricals (``country``, ``topic``, ``surface``) get vocabularies fitted on
the train split, index 0 being out-of-vocabulary.  Declared category features
(string columns) are hashed instead, with the same stable hash, into
``category_buckets`` buckets 1..B (0: the value is missing): a hash needs no
vocabulary, so a value first seen at serving lands in a bucket like any other
and trains it along with whatever it collides with, while the GBDT, whose
trees split on codes, keeps a vocabulary and a shared bucket for the rare and
the unseen (:mod:`homefeed.train.categories`).  Numeric features are
``log1p``-ed when they look like counts (non-negative with a long tail), then
standardized with the train split's mean and standard deviation; NaN becomes
0 (the mean) after normalization, and the ``<entity>_missing`` flags already in
the features tell the model when a value was absent.

Position (``position="feature"``) is a *shallow tower*: a learned bias per
slot added to each head's logit, never an input of the trunk.  Fed to the
trunk like any other input, the slot let the network learn item × slot
interactions from what the old ranker happened to show where; held at slot 1
for scoring, those made the item ranking worse than ignoring the slot (on the
popularity ranker's logs, Spearman with the true slot-1 value 0.84 against
0.93).  Additive, the slot can only explain the examination effect, which is
what it is there for (the GBDT gets the same with a monotone additive term).

Saved in safe formats only: the ``state_dict`` through ``torch.save`` (read
back with ``weights_only=True``) and the preprocessing as JSON; the base class
records every file's SHA-256 and verifies them before anything is parsed.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pydantic import PositiveInt
from torch import nn

from homefeed.hashing import stable_hash
from homefeed.train.categories import categorical_columns
from homefeed.train.model import (
    BASELINE,
    SERVING_POSITION,
    VALIDATION_METRICS,
    ModelError,
    PositiveFinite,
    Ranker,
    Slot,
    TrainingData,
    check_slot,
    checked_params,
    inputs,
    logged_slots,
    row_weights,
    validation_metrics,
)

WEIGHTS_FILE = "weights.pt"
PREPROCESSING_FILE = "preprocessing.json"
IDS = ("user_id", "item_id")
CATEGORICALS = ("country", "topic", "surface")
#: A non-negative column whose maximum exceeds this is treated as a count and log1p-ed before standardizing.
LOG_THRESHOLD = 10.0
PREDICT_BATCH = 65_536
#: Integrated gradients: points on the path from the baseline to the input (midpoint rule), and interpolated rows
#: per forward/backward pass (the rows × steps of a chunk of rows together).
IG_STEPS = 32
IG_BATCH = 65_536


def _column(rows: pa.Table, name: str, arrow: bool = False) -> np.ndarray | pa.ChunkedArray:
    if name not in rows.column_names:
        raise ModelError(f"rows lack column {name!r}")
    return rows[name] if arrow else rows[name].to_numpy(zero_copy_only=False)


class _Network(nn.Module):
    """Embeddings concatenated with the numeric inputs → MLP trunk → one logit per head, plus a bias per slot."""

    def __init__(
        self,
        numeric: int,
        cardinalities: list[int],
        embedding_dim: int,
        hidden: tuple[int, ...],
        heads: int,
        slots: int = 0,
    ):
        super().__init__()
        # The shallow position tower: one bias per slot and head, 0 until trained (index 0 is unused).
        self.slot_bias = nn.Embedding(slots + 1, heads) if slots > 0 else None
        if self.slot_bias is not None:
            nn.init.zeros_(self.slot_bias.weight)
        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in cardinalities)
        layers: list[nn.Module] = []
        width = numeric + embedding_dim * len(cardinalities)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Linear(width, heads)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor, slot: torch.Tensor | None = None) -> torch.Tensor:
        return self.from_embedded(numeric, self.embedded(codes), slot)

    def embedded(self, codes: torch.Tensor) -> torch.Tensor:
        """(rows × embeddings × dim): each row's looked-up vectors, in `forward`'s order."""
        if not self.embeddings:
            return torch.zeros(len(codes), 0, 0)
        return torch.stack([emb(codes[:, i]) for i, emb in enumerate(self.embeddings)], dim=1)

    def from_embedded(
        self, numeric: torch.Tensor, vectors: torch.Tensor, slot: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`forward` after the embedding lookup: the logits from the numeric inputs, the vectors and the slot."""
        logits = self.out(self.trunk(torch.cat([numeric, vectors.flatten(1)], dim=1)))
        if self.slot_bias is not None and slot is not None:
            logits = logits + self.slot_bias(slot)
        return logits


@contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    """Pin torch's threads and deterministic mode for a fit or predict, then restore the caller's settings."""
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


class NNRanker(Ranker):
    """A PyTorch multi-head ranker trained on CPU with Adam, mini-batches and early stopping on validation loss."""

    kind = "nn"

    @checked_params
    def __init__(
        self,
        hidden: tuple[PositiveInt, ...] | list[PositiveInt] = (128, 64),
        embedding_dim: PositiveInt = 8,
        id_buckets: PositiveInt = 50_000,
        category_buckets: PositiveInt = 1_000,
        batch_size: PositiveInt = 1024,
        learning_rate: PositiveFinite = 1e-3,
        max_epochs: PositiveInt = 20,
        patience: PositiveInt = 2,
        threads: PositiveInt = 2,
        **base: object,
    ):
        super().__init__(**base)  # objective, position, weights, seed
        self.hidden = tuple(int(h) for h in hidden)
        self.embedding_dim = embedding_dim
        self.id_buckets = id_buckets
        self.category_buckets = category_buckets
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.patience = patience
        self.threads = threads
        self.preprocessing: dict = {}
        self.network: _Network | None = None

    # -- preprocessing -----------------------------------------------------------------------------------------

    def _fit_preprocessing(self, rows: pa.Table) -> None:
        hashed = categorical_columns(rows, self.features)
        numeric = [name for name in self.features if name not in hashed]
        x = inputs(rows, numeric, "ignore", slot="logged").astype(np.float64)
        with np.errstate(invalid="ignore"):
            lo, hi = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
        log = (lo >= 0) & (hi > LOG_THRESHOLD)
        x = np.where(log, np.log1p(np.maximum(x, 0)), x)
        mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        # a list of [column, vocabulary] pairs, not a dict: the order is the embeddings' order, whatever JSON sorts
        vocabularies = [
            [name, sorted(map(str, pc.unique(_column(rows, name, arrow=True)).drop_null().to_pylist()))]
            for name in CATEGORICALS
        ]
        self.preprocessing = {
            "log": log.tolist(),
            "mean": np.nan_to_num(mean).tolist(),
            "std": np.where(np.isfinite(std) & (std > 1e-12), std, 1.0).tolist(),
            "vocabularies": vocabularies,
            "ids": list(IDS),
            "id_buckets": self.id_buckets,
            "hashed": hashed,  # the category features, each hashed into category_buckets (+ bucket 0: missing)
            "category_buckets": self.category_buckets,
            # slots with a bias of their own; deeper slots share the last one's
            "slots": self._slot_count(rows),  # always written: its absence marks a model saved before the tower
        }

    def _slot_count(self, rows: pa.Table) -> int:
        """Slots with a bias of their own in the position tower (deeper slots share the last one's); 0: no tower."""
        if self.position != "feature":
            return 0
        return int(pc.max(_column(rows, "position", arrow=True)).as_py() or 1)

    @property
    def _slot_in_trunk(self) -> bool:
        """A model saved before the position tower took the slot as one more trunk input: it still loads and scores."""
        return self.position == "feature" and "slots" not in self.preprocessing

    @property
    def _numeric_features(self) -> list[str]:
        """The features that enter the trunk as numbers: all but the hashed categories."""
        hashed = set(self.preprocessing.get("hashed", []))
        return [name for name in self.features if name not in hashed]

    def _numeric(self, rows: pa.Table, slot: Slot) -> np.ndarray:
        # The slot goes to the shallow tower, not to the trunk (but for a model saved before the tower).
        x = inputs(rows, self._numeric_features, self.position if self._slot_in_trunk else "ignore", slot)
        p = self.preprocessing
        log = np.asarray(p["log"], bool)
        if log.any():
            x[:, log] = np.log1p(np.maximum(x[:, log], 0))
        x = (x - np.asarray(p["mean"], np.float32)) / np.asarray(p["std"], np.float32)
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def _codes(self, rows: pa.Table) -> np.ndarray:
        """Per row, the embedding index of each id (hash bucket) and categorical (vocabulary index, 0 = unknown)."""
        p = self.preprocessing
        columns = []
        for name in p["ids"]:
            values = _column(rows, name)
            columns.append((stable_hash(values) % np.uint64(p["id_buckets"])).astype(np.int64))
        for name, vocabulary in p["vocabularies"]:
            values = np.asarray(_column(rows, name), dtype=object).astype(str)
            known = np.asarray(vocabulary, dtype=str)
            if known.size == 0:
                columns.append(np.zeros(len(values), np.int64))
                continue
            at = np.clip(np.searchsorted(known, values), 0, known.size - 1)
            columns.append(np.where(known[at] == values, at + 1, 0).astype(np.int64))
        buckets = np.uint64(p.get("category_buckets", 1))
        for name in p.get("hashed", []):
            column = _column(rows, name, arrow=True)
            values = pc.fill_null(column.cast(pa.string()), "").to_numpy(zero_copy_only=False)
            bucket = (stable_hash(np.asarray(values, dtype=object)) % buckets).astype(np.int64) + 1
            columns.append(np.where(column.is_null().to_numpy(zero_copy_only=False), 0, bucket))
        return np.column_stack(columns) if columns else np.zeros((rows.num_rows, 0), np.int64)

    def _cardinalities(self) -> list[int]:
        p = self.preprocessing
        hashed = [p.get("category_buckets", 1) + 1] * len(p.get("hashed", []))
        return [p["id_buckets"]] * len(p["ids"]) + [len(v) + 1 for _, v in p["vocabularies"]] + hashed

    def _slots(self, rows: pa.Table, slot: Slot) -> torch.Tensor | None:
        """Each row's slot for the position tower: the serving slot, or the logged one (training, judging)."""
        slots = self.preprocessing.get("slots", 0)
        if not slots:
            return None
        if check_slot(slot) == "serving":
            return torch.full((rows.num_rows,), min(SERVING_POSITION, slots), dtype=torch.int64)
        return torch.from_numpy(np.clip(logged_slots(rows).astype(np.int64), 1, slots))

    def _tensors(self, rows: pa.Table, slot: Slot) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return (
            torch.from_numpy(self._numeric(rows, slot)),
            torch.from_numpy(self._codes(rows)),
            self._slots(rows, slot),
        )

    def _network(self, numeric: int) -> _Network:
        heads = len(self.heads)
        slots = self.preprocessing.get("slots", 0)
        return _Network(numeric, self._cardinalities(), self.embedding_dim, self.hidden, heads, slots)

    def _labels(self, rows: pa.Table) -> torch.Tensor:
        y = np.column_stack([_column(rows, h).astype(np.float32) for h in self.heads])
        return torch.from_numpy(np.nan_to_num(y))

    # -- training ----------------------------------------------------------------------------------------------

    def fit(self, data: TrainingData) -> NNRanker:
        start = time.perf_counter()
        train, valid = data.splits["train"], data.splits["validation"]
        if train.num_rows == 0 or valid.num_rows == 0:
            raise ModelError("the train and validation splits must both have rows")
        self.features, self.dataset_id = list(data.features), data.dataset_id
        self.training = {"dropped_heads": self.empty_heads(data)}
        self._fit_preprocessing(train)
        with _torch_settings(self.threads):
            torch.manual_seed(self.seed)
            generator = torch.Generator().manual_seed(self.seed)
            xt, ct, st = self._tensors(train, slot="logged")
            yt = self._labels(train)
            wt = row_weights(train, self.weights)
            wt = torch.from_numpy((wt / wt.mean()).astype(np.float32))
            xv, cv, sv = self._tensors(valid, slot="logged")
            yv = self._labels(valid)
            wv = row_weights(valid, self.weights)
            wv = torch.from_numpy((wv / wv.mean()).astype(np.float32))
            net = self._network(xt.shape[1])
            optimizer = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
            loss_fn = nn.BCEWithLogitsLoss(reduction="none")
            best, best_epoch, best_state, history = float("inf"), 0, None, []
            for epoch in range(1, self.max_epochs + 1):
                net.train()
                order = torch.randperm(len(yt), generator=generator)
                for at in range(0, len(order), self.batch_size):
                    batch = order[at : at + self.batch_size]
                    logits = net(xt[batch], ct[batch], None if st is None else st[batch])
                    loss = (loss_fn(logits, yt[batch]).sum(1) * wt[batch]).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                net.eval()
                with torch.no_grad():
                    logits = net(xv, cv, sv)
                    per_head = (loss_fn(logits, yv) * wv[:, None]).mean(0)
                val_loss = float(per_head.sum())
                history.append(round(val_loss, 6))
                if val_loss < best - 1e-6:
                    best, best_epoch, best_state = val_loss, epoch, copy.deepcopy(net.state_dict())
                elif epoch - best_epoch >= self.patience:
                    break
            if best_state is None:
                raise ModelError(f"the validation loss was never finite ({history}): lower the learning rate")
            net.load_state_dict(best_state)
            net.eval()
            self.network = net
        self.training = {
            "dropped_heads": self.training["dropped_heads"],
            "rows": {"train": train.num_rows, "validation": valid.num_rows},
            "epochs": len(history),
            "best_epoch": best_epoch,
            "validation_loss": history,  # the fit's loss per epoch: summed over heads, with the fit's weights
            "heads": validation_metrics(self, valid),  # the same record as the GBDT's
            "validation_metrics": VALIDATION_METRICS,
            "fit_seconds": round(time.perf_counter() - start, 3),
        }
        return self

    # -- prediction --------------------------------------------------------------------------------------------

    def _predict_tensors(self, x: torch.Tensor, c: torch.Tensor, slot: torch.Tensor | None) -> np.ndarray:
        parts = []
        with torch.no_grad():
            for i in range(0, len(x), PREDICT_BATCH):
                batch = slice(i, i + PREDICT_BATCH)
                parts.append(torch.sigmoid(self.network(x[batch], c[batch], None if slot is None else slot[batch])))
        return torch.cat(parts).numpy() if parts else np.zeros((0, len(self.heads)), np.float32)

    def predict(self, rows: pa.Table, slot: Slot = "serving") -> dict[str, np.ndarray]:
        if self.network is None:
            raise ModelError("the model is not trained")
        with _torch_settings(self.threads):
            p = self._predict_tensors(*self._tensors(rows, slot))
        return {head: p[:, i].astype(np.float64) for i, head in enumerate(self.heads)}

    def contributions(self, rows: pa.Table, steps: int = IG_STEPS) -> tuple[np.ndarray, list[str]]:
        """Integrated gradients (Sundararajan et al., 2017) of the positive head's logit, one column per input.

        The baseline is the "average" input: 0 for every numeric input (its standardized train mean); for a
        categorical, the mean vector of its known values (each value counted once, out-of-vocabulary left out, so
        a column with one value in training gets no attribution); for a hashed id, the mean over every bucket
        (most of which no training id reached, so this is near the embeddings' initial centre, and an id's
        attribution says how far its learned vector moves the score from that).  An input's attribution is
        ``(input − baseline) · mean gradient`` along the straight path from the baseline to the row, with
        ``steps`` midpoint samples; an embedded input's is summed over its vector's dimensions.  The
        attributions of a row sum to ``logit(row) − logit(baseline)`` up to the integration error (small for
        this ReLU network; the tests bound it), and `BASELINE` holds ``logit(baseline)``.  They say how the
        score moves from the average input to this one; unlike the GBDT's TreeSHAP values they are not exact.
        Batched: every row's ``steps`` path points go through one forward and one backward pass per chunk.
        """
        if self.network is None:
            raise ModelError("the model is not trained")
        if steps < 1:
            raise ModelError(f"integrated gradients need at least one step, got {steps}")
        net, head = self.network, self.heads.index(self.objective.positive)
        p = self.preprocessing
        names = [*self._numeric_features, *(["position"] if self.position == "feature" else []), *p["ids"]]
        names += [name for name, _ in p["vocabularies"]] + list(p.get("hashed", []))
        with _torch_settings(self.threads):
            x, c, _ = self._tensors(rows, slot="serving")
            with torch.no_grad():
                vectors = net.embedded(c)
                hashed = len(p["ids"])  # then the categoricals, whose row 0 (out of vocabulary) no train row reached
                base_vectors = torch.stack(
                    [
                        e.weight.mean(0) if i < hashed or len(e.weight) < 2 else e.weight[1:].mean(0)
                        for i, e in enumerate(net.embeddings)
                    ]
                )
                base_logit = float(net.from_embedded(torch.zeros(1, x.shape[1]), base_vectors[None])[0, head])
                slot_part = None
                if net.slot_bias is not None:  # additive: exactly the serving slot's bias against the mean slot's
                    bias = net.slot_bias.weight[1:, head]
                    base_logit += float(bias.mean())
                    slot_part = float(bias[min(SERVING_POSITION, len(bias)) - 1] - bias.mean())
            alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
            chunk = max(1, IG_BATCH // steps)
            parts = []
            for at in range(0, len(x), chunk):
                xs, delta = x[at : at + chunk], vectors[at : at + chunk] - base_vectors
                a = alphas.repeat_interleave(len(xs))[:, None]  # step-major: row i of step s is s·len(xs) + i
                path_x = (a * xs.repeat(steps, 1)).requires_grad_()
                path_v = (base_vectors + a[:, :, None] * delta.repeat(steps, 1, 1)).requires_grad_()
                total = net.from_embedded(path_x, path_v)[:, head].sum()
                grad_x, grad_v = torch.autograd.grad(total, [path_x, path_v])  # leaves the weights' .grad alone
                grad_x = grad_x.reshape(steps, len(xs), -1).mean(0)
                grad_v = grad_v.reshape(steps, len(xs), *delta.shape[1:]).mean(0)
                slot = [] if slot_part is None else [torch.full((len(xs), 1), slot_part)]
                parts.append(torch.cat([grad_x * xs, *slot, (grad_v * delta).sum(-1)], dim=1))
            attributions = torch.cat(parts).numpy() if parts else np.zeros((0, len(names)), np.float32)
        out = np.empty((len(attributions), len(names) + 1))
        out[:, :-1], out[:, -1] = attributions, base_logit
        return out, [*names, BASELINE]

    # -- persistence -------------------------------------------------------------------------------------------

    def _save_weights(self, directory: Path) -> None:
        if self.network is None:
            raise ModelError("the model is not trained")
        torch.save(self.network.state_dict(), directory / WEIGHTS_FILE)
        (directory / PREPROCESSING_FILE).write_text(json.dumps(self.preprocessing, sort_keys=True), encoding="utf-8")

    def _load_weights(self, directory: Path) -> None:
        try:
            self.preprocessing = json.loads((directory / PREPROCESSING_FILE).read_text(encoding="utf-8"))
            state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            numeric = len(self.preprocessing["mean"])
            expected = len(self._numeric_features) + self._slot_in_trunk
            if numeric != expected:
                raise ValueError(f"preprocessing for {numeric} numeric inputs, but the model reads {expected}")
            net = self._network(numeric)
            net.load_state_dict(state)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise ModelError(f"{directory}: weights do not load ({exc})") from None
        net.eval()
        self.network = net
