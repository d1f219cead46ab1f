"""The served model: loaded from the registry under an alias, swapped atomically when the alias moves.

A reload loads and checks the new version completely (every file against its checksum, the feature set it was
trained with against the project's definitions, one warm-up prediction) *before* the swap, which is one
reference assignment: a request holds the model it started with, so none fails or mixes two models.  A version
that cannot be loaded (missing, tampered, trained on other feature definitions) is refused and the previous model
keeps serving; the failure is reported (``/readyz``, ``/metrics``) and retried with back-off.

After a swap, a GBDT's trees are compiled to native code in a background thread (``serve.compiled_trees``,
:mod:`homefeed.train.compiled`): LightGBM scores until each head's code is ready, and the scores are the same.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa

from homefeed.config import Settings
from homefeed.errors import HomefeedError
from homefeed.features.definitions import FeatureSet, catalogue, is_categorical
from homefeed.features.vectors import IMPRESSION_COLUMNS, Hydrated
from homefeed.serve.pipeline import ServingModel
from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import ModelError, Ranker
from homefeed.train.registry import Registry


def serving_model(ranker: Ranker, version: str, trained_on: str | None, settings: Settings) -> ServingModel:
    """The model with the feature set it reads, rebuilt from the project's definitions and checked against training.

    Refuses anything that is not a registered `Ranker` (a policy that reads the simulator's hidden truth, such as
    its oracle, can never be served) and a model whose features the project would compute differently now.
    """
    if not isinstance(ranker, Ranker):
        raise ModelError(f"{version}: only a trained ranker from the registry can be served, not {type(ranker)!r}")
    known = catalogue(settings.etl, settings.features)
    names = [c for c in ranker.features if c in known]
    flags = [c for c in ranker.features if c not in known]
    name = (trained_on or "served").split("@")[0]
    fs = FeatureSet(name, tuple(known[n] for n in names), missing_flags=bool(flags))
    if fs.columns != list(ranker.features):
        unknown = [c for c in flags if c not in fs.flags]
        raise ModelError(
            f"{version}: reads column(s) the project does not define ({', '.join(unknown[:5]) or 'in another order'})"
        )
    if trained_on is not None and trained_on != fs.version:
        raise ModelError(
            f"{version}: trained on feature set {trained_on}, but the project's definitions now give {fs.version}; "
            "serving it would feed it features it never learned from"
        )
    categories = {f.name: pa.nulls(1, pa.string()) for f in fs.features if is_categorical(f)}
    impression = {c: pa.array([0]) if c.endswith("_id") else pa.nulls(1, pa.string()) for c in IMPRESSION_COLUMNS}
    warm = Hydrated(fs.columns, np.zeros((1, len(fs.columns)), np.float32), categories, lambda: impression)
    ranker.predict_hydrated(warm)  # the first prediction initialises lazily: not on a request's time
    return ServingModel(version, ranker, fs)


class ModelHolder:
    """The model under ``ref`` (an alias or a version), reloaded by `check` when the registry points elsewhere."""

    def __init__(
        self, registry: Registry, ref: str, settings: Settings, backoff_s: float = 30.0, compile_trees: bool = False
    ):
        self.registry = registry
        self.ref = ref
        self.settings = settings
        self.backoff_s = backoff_s
        self.current: ServingModel | None = None
        self.error: str | None = None
        self.reloads = 0
        self.failures = 0
        self._failed: tuple[str, float] | None = None  # (version, when) of the last refused load
        self.compile_trees = compile_trees
        self.scorer: dict[str, str] = {}  # head -> "compiled", "compiling" or why LightGBM scores it
        self._lock = threading.Lock()

    def __call__(self) -> ServingModel | None:
        return self.current

    def check(self, force: bool = False) -> bool:
        """Load the version ``ref`` points at if it is not the one serving; True if the model changed."""
        with self._lock:  # one reload at a time (the poller and an admin call)
            try:
                version = self.registry.get(self.ref)
            except HomefeedError as exc:
                self._fail(None, f"registry: {exc}")
                return False
            except Exception as exc:  # a damaged registry file (sqlite3.DatabaseError, ...)
                self._fail(None, f"registry: {type(exc).__name__}: {exc}")
                return False
            if self.current is not None and self.current.version == version.version:
                self.error = None
                return False
            failed = self._failed
            if not force and failed and failed[0] == version.version and time.monotonic() - failed[1] < self.backoff_s:
                return False
            try:
                ranker = self.registry.load(version.version)
                model = serving_model(ranker, version.version, version.feature_set, self.settings)
            except HomefeedError as exc:
                self._fail(version.version, str(exc))
                return False
            except Exception as exc:  # an unreadable file of any kind: keep serving what we have
                self._fail(version.version, f"{type(exc).__name__}: {exc}")
                return False
            self.current = model  # the swap: one reference assignment
            self.error, self._failed = None, None
            self.reloads += 1
            self._compile(model)
            return True

    def _compile(self, model: ServingModel) -> None:
        """Compile the new model's trees in the background; until then (or if it cannot be), LightGBM scores."""
        ranker = model.ranker
        if not (self.compile_trees and isinstance(ranker, GBDTRanker)):
            self.scorer = {head: ranker.kind for head in ranker.heads}
            return
        self.scorer = dict.fromkeys(ranker.heads, "compiling")
        cache = self.settings.resolved_paths.compiled

        def run() -> None:
            status = ranker.compile(cache)
            if self.current is model:  # a newer model may have been swapped in meanwhile: its status stands
                self.scorer = status

        threading.Thread(target=run, name=f"compile-{model.version}", daemon=True).start()

    def compiled(self) -> bool:
        """Whether every head of the serving model runs as compiled code."""
        return bool(self.scorer) and all(v == "compiled" for v in self.scorer.values())

    def _fail(self, version: str | None, message: str) -> None:
        self.error = message
        self.failures += 1
        self._failed = (version, time.monotonic()) if version else None
