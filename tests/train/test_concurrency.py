"""Two trainings at once, as separate processes: the registry and the model folders stay consistent.

(The data half of the concurrency suite — ingests, ETL runs — is ``tests/data/test_concurrency.py``.)
"""

from __future__ import annotations

import os
import subprocess
import sys

from homefeed.files import sha256_file
from homefeed.train.registry import Registry

TRAININGS = 2


def test_trainings_at_once_get_their_own_versions_and_folders(random_world, tmp_path):
    models, db = tmp_path / "models", tmp_path / "registry.sqlite"
    project = tmp_path / "homefeed.toml"
    root = random_world.settings.resolved_paths.root
    project.write_text(
        f'[paths]\nroot = "{root.as_posix()}"\nregistry = "{db.as_posix()}"\nmodels = "{models.as_posix()}"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "HOMEFEED_CONFIG"}
    dataset = random_world.data.dataset_id
    command = [
        sys.executable,
        "-m",
        "homefeed.cli",
        "train",
        "--model",
        "gbdt",
        "--dataset",
        dataset,
        "-c",
        str(project),
    ]
    runs = [
        subprocess.Popen(
            [*command, "--param", "n_estimators=5", "--param", f"seed={i}", "--alias", f"run{i}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(TRAININGS)
    ]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err

    registry = Registry(db, models)
    versions = registry.versions()
    names = [f"gbdt-{n:04d}" for n in range(1, TRAININGS + 1)]
    assert sorted(v.version for v in versions) == names
    assert sorted(p.name for p in models.iterdir()) == names  # no staging folder, no orphan, nothing overwritten
    for v in versions:
        assert {p.name for p in (models / v.version).iterdir()} == set(v.files)
        assert all(sha256_file(models / v.version / f) == digest for f, digest in v.files.items())
        assert registry.load(v.version).seed == v.params["seed"]  # each folder holds the model its row describes
    aliased = {registry.get(f"run{i}").version for i in range(TRAININGS)}
    assert aliased == set(names)
    assert all(registry.get(f"run{i}").params["seed"] == i for i in range(TRAININGS))
