"""The model registry: lineage, checksummed files, atomic aliases with history, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from homefeed.errors import DamagedStateError
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
    with pytest.raises(ModelError, match=f"{v.version}: .*coef.json") as refused:
        registry.load("production")
    assert refused.value.exit_code == 3  # damaged state, not a bad request
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


def test_a_missing_or_emptied_registry_beside_model_folders_is_damaged_state(registry, model):
    """Numbering from 1 again once replaced the production model's folder; the registry's loss is refused instead."""
    v = registry.register(model)
    folder = registry.root / v.version
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    registry.db.unlink()
    with pytest.raises(DamagedStateError, match=r"registry\.sqlite: the model registry is missing, .*linear-0001"):
        Registry(registry.db, registry.root)
    assert not registry.db.exists()  # refusing did not leave an empty registry behind to be trusted next time
    registry.db.write_bytes(b"")  # an emptied file is an empty SQLite database: the same loss
    with pytest.raises(DamagedStateError, match="holds no versions"):
        Registry(registry.db, registry.root)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert DamagedStateError.exit_code == 3


def test_a_version_number_never_reuses_a_folder(registry, model):
    """A folder without a row (a registration killed between its rename and its commit) keeps its number."""
    registry.register(model)
    orphan = registry.root / "linear-0002"
    orphan.mkdir()
    (orphan / "model.json").write_text("{}")
    assert registry.register(model).version == "linear-0003"
    assert (orphan / "model.json").read_text() == "{}"
    assert [v.version for v in registry.versions()] == ["linear-0001", "linear-0003"]


def test_staging_left_by_a_killed_registration_is_removed_by_the_next(registry, model):
    stale = [registry.root / ".linear-0001.k1ll3d.tmp", registry.root / ".register-abc123"]
    for path in stale:
        path.mkdir(parents=True)
        (path / "model.json").write_text("half")
    v = registry.register(model)
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in registry.root.iterdir()) == [v.version]


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_corrupt_registry_is_damaged_state_naming_the_file(tmp_path, content):
    db = tmp_path / "registry.sqlite"
    db.write_bytes(content)
    with pytest.raises(DamagedStateError, match=r"registry\.sqlite: not a readable model registry"):
        Registry(db, tmp_path / "models")


def test_rollback_after_setting_the_same_version_twice_goes_to_the_previous_different_one(registry, model):
    first, second = registry.register(model).version, registry.register(model).version
    registry.alias("production", first, "launch")
    registry.alias("production", second, "won the A/B test")
    registry.alias("production", second, "confirmed after a week")  # recorded, but not a version to go back to
    back = registry.rollback("production", "hides up")
    assert (back.previous, back.version) == (second, first) and registry.get("production").version == first
    again = registry.rollback("production", "false alarm")  # a rollback is a move like any other: undo it
    assert (again.previous, again.version) == (first, second)
    registry.alias("shadow", first, "one version only")
    registry.alias("shadow", first, "same again")
    with pytest.raises(RegistryError, match="no earlier version to roll back to"):
        registry.rollback("shadow", "nothing before")


@pytest.mark.parametrize(
    "name",
    ["", "linear-0002", "gbdt-0001", "nn-7", "../production", "a/b", "prod\n", "prod\x00", "\x1b[31mred", " prod",
     ".hidden", "x" * 65, "prod uction"],
)  # fmt: skip
def test_aliases_that_are_empty_path_like_control_characters_or_version_shaped_are_refused(registry, model, name):
    v = registry.register(model).version
    with pytest.raises(RegistryError, match="alias"):
        registry.alias(name, v, "why")
    assert registry.history(name) == []


def test_ordinary_alias_names_are_accepted(registry, model):
    v = registry.register(model).version
    for name in ("production", "candidate", "exp.2026-q1", "team_a", "B2", "launch-2026a"):
        assert registry.alias(name, v, "why").version == v
