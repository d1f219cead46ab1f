"""The store of built datasets: every read is verified, so a damaged or swapped file is refused, never used."""

from __future__ import annotations

import json
import shutil

import pytest

from homefeed.errors import DamagedStateError
from homefeed.train import DatasetStore
from homefeed.train.model import TrainingData


@pytest.fixture
def store(random_world, tmp_path) -> tuple[DatasetStore, str]:
    """A copy of the fixture world's dataset in a store of its own, to damage."""
    source = DatasetStore(random_world.settings.resolved_paths.datasets)
    did = random_world.data.dataset_id
    shutil.copytree(source.path(did), tmp_path / "datasets" / did)
    return DatasetStore(tmp_path / "datasets"), did


def test_an_intact_dataset_loads_as_built(store, random_world):
    datasets, did = store
    data = TrainingData.load(datasets, did[:6])
    for split, rows in random_world.data.splits.items():
        assert data.splits[split].equals(rows)


def test_a_split_copied_over_another_is_refused(store):
    """The launch review once scored the validation file copied over the test file, silently."""
    datasets, did = store
    folder = datasets.path(did)
    shutil.copy(folder / "validation.parquet", folder / "test.parquet")
    with pytest.raises(DamagedStateError, match=rf"{did}/test\.parquet: its bytes do not match the SHA-256"):
        TrainingData.load(datasets, did)
    with pytest.raises(DamagedStateError, match=r"test\.parquet"):
        datasets.verify(did)


def test_a_deleted_split_is_refused(store):
    datasets, did = store
    (datasets.path(did) / "train.parquet").unlink()
    with pytest.raises(DamagedStateError, match=r"train\.parquet: the train split is missing"):
        TrainingData.load(datasets, did)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda m: "{" + json.dumps(m)[:200], "not a readable manifest"),
        (lambda m: json.dumps({**m, "id": "0123456789abcdef"}), "the manifest of dataset '0123456789abcdef'"),
        (lambda m: json.dumps([m]), "the manifest of dataset None"),
        (lambda m: json.dumps({k: v for k, v in m.items() if k != "splits"}), "no valid splits"),
        (lambda m: json.dumps({**m, "splits": {**m["splits"], "test": {"file": "../../elsewhere.parquet",
                                                                         "sha256": "0" * 64}}}), "splits.test"),
        (lambda m: json.dumps({**m, "splits": {**m["splits"], "train": {"file": "train.parquet"}}}), "splits.train"),
    ],
)  # fmt: skip
def test_a_damaged_manifest_is_damaged_state_naming_the_file(store, damage, expected):
    datasets, did = store
    path = datasets.path(did) / "manifest.json"
    path.write_text(damage(json.loads(path.read_text())))
    for read in (lambda: datasets.load(did), datasets.manifests, lambda: TrainingData.load(datasets, did)):
        with pytest.raises(DamagedStateError, match=rf"{did}/manifest\.json: .*{expected}"):
            read()
    assert DamagedStateError.exit_code == 3
