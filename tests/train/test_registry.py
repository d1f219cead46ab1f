"""The model registry: lineage, checksummed files, atomic aliases with history, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from homefeed.train.model import BASELINE, ModelError, Ranker, TrainingData, inputs
from homefeed.train.registry import MODEL_KINDS, Registry, RegistryError


class LinearRanker(Ranker):
    """A least-squares ranker: small and real, so the registry is tested apart from LightGBM and PyTorch."""

    kind = "linear"

    def fit(self, data: TrainingData) -> LinearRanker:
        self.features, self.dataset_id = list(data.features), data.dataset_id
        x = np.nan_to_num(inputs(data.splits["train"], self.features, self.position, slot="logged"))
        x = np.column_stack([x, np.ones(len(x))])
        self.coef = {
            h: np.linalg.lstsq(x, data.splits["train"][h].to_numpy().astype(float), rcond=None)[0]
            for h in self.objective.heads
        }
        self.training = {"fit_seconds": 0.01, "rows": len(x)}
        return self

    def predict(self, rows: pa.Table, slot: str = "serving") -> dict[str, np.ndarray]:
        x = np.nan_to_num(inputs(rows, self.features, self.position, slot))
        x = np.column_stack([x, np.ones(len(x))])
        return {h: np.clip(x @ c, 0.0, 1.0) for h, c in self.coef.items()}

    def contributions(self, rows: pa.Table) -> tuple[np.ndarray, list[str]]:
        """coef × input per feature, the intercept as the baseline (of the unclipped score: this is no log-odds)."""
        x = np.nan_to_num(inputs(rows, self.features, self.position, "serving"))
        c = self.coef[self.objective.positive]
        names = self.features + (["position"] if self.position == "feature" else [])
        return np.column_stack([x * c[:-1], np.full(len(x), c[-1])]), [*names, BASELINE]

    def _save_weights(self, directory: Path) -> None:
        (directory / "coef.json").write_text(json.dumps({h: c.tolist() for h, c in self.coef.items()}))

    def _load_weights(self, directory: Path) -> None:
        self.coef = {h: np.array(c) for h, c in json.loads((directory / "coef.json").read_text()).items()}


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setitem(MODEL_KINDS, "linear", f"{__name__}:LinearRanker")
    return Registry(tmp_path / "registry.sqlite", tmp_path / "models")


@pytest.fixture(scope="module")
def model(random_world) -> LinearRanker:
    return LinearRanker(seed=1).fit(random_world.data)


def test_a_version_records_its_lineage_and_loads_back_identical(registry, model, random_world):
    test = random_world.data.splits["test"]
    v = registry.register(model, random_world.data, by="ana")
    assert v.version == "linear-0001" and v.kind == "linear" and v.registered_by == "ana"
    assert (
        v.dataset_id == random_world.data.dataset_id
        and v.feature_set == random_world.data.manifest["feature_set"]["version"]
    )
    assert v.params["objective"]["negative"] == "negative" and v.metrics["rows"] > 0
    assert (
        v.size_bytes > 0
        and set(v.files) == {"model.json", "coef.json", "checksums.json"}
        and 0 < v.predict_p50_ms <= v.predict_p99_ms
    )
    loaded = registry.load(v.version)
    for head, p in model.predict(test).items():
        np.testing.assert_array_equal(loaded.predict(test)[head], p)
    assert registry.register(model).version == "linear-0002"
    assert [x.version for x in registry.versions()] == ["linear-0001", "linear-0002"]


@pytest.mark.parametrize("damage", ["tamper", "truncate", "delete"])
def test_a_damaged_model_file_is_refused_and_the_registry_is_unchanged(registry, model, damage):
    v = registry.register(model)
    registry.alias("production", v.version, "first launch")
    path = registry.root / v.version / "coef.json"
    if damage == "tamper":
        data = bytearray(path.read_bytes())
        data[10] ^= 1
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:20])
    else:
        path.unlink()
    with pytest.raises(ModelError, match=f"{v.version}: .*coef.json"):
        registry.load("production")
    assert registry.get("production").version == v.version and len(registry.versions()) == 1


def test_aliases_move_atomically_with_history_and_roll_back(registry, model):
    first, second = registry.register(model).version, registry.register(model).version
    registry.alias("production", first, "launch", by="ana")
    move = registry.alias("production", second, "won the A/B test", by="bo")
    assert (move.previous, move.version) == (first, second)
    registry.alias("candidate", "production", "shadow the current one")  # an alias may name another alias
    assert registry.get("candidate").version == second and registry.get(second).aliases == ("candidate", "production")
    back = registry.rollback("production", "hide rate up in BR", by="cy")
    assert back.version == first and back.previous == second
    history = registry.history("production")
    assert [(h.version, h.moved_by, h.reason) for h in history] == [
        (first, "ana", "launch"),
        (second, "bo", "won the A/B test"),
        (first, "cy", "hide rate up in BR"),
    ]


def test_unknown_versions_aliases_and_rollbacks_are_clear_errors(registry, model):
    with pytest.raises(RegistryError, match="no model version or alias 'production'"):
        registry.load("production")
    v = registry.register(model).version
    registry.alias("production", v, "launch")
    with pytest.raises(RegistryError, match="no earlier version to roll back to"):
        registry.rollback("production", "why not")
    with pytest.raises(RegistryError, match="no alias 'staging'"):
        registry.rollback("staging", "why not")
