"""The model registry: every trained model as a version with its lineage, and aliases moved atomically with history.

A version records what it was trained on (dataset id, feature-set version),
with what (code version, parameters), how well and how fast (training metrics,
training time, size, predict latency for 500 rows), and the SHA-256 of every
file it consists of.  Files are stored in safe formats only (LightGBM's text
model, a PyTorch ``state_dict`` loaded with ``weights_only=True``, JSON) and
verified on every load: a tampered or truncated file is refused and nothing in
the registry changes.  Aliases (``production``, ``candidate``, any name) point
at versions; each move is one SQLite transaction that also appends to the
alias's history (who, when, why), so ``rollback`` is just a move back.

Why our own and not MLflow's: the registry is a few tables and a folder, it
lives in the project like the lake and the online store, and it needs no server.
"""

from __future__ import annotations

import datetime as dt
import getpass
import importlib
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

import homefeed
from homefeed.config import Settings
from homefeed.errors import HomefeedError
from homefeed.files import atomic_dir, sha256_file
from homefeed.train.model import ModelError, Ranker, TrainingData

#: Where each kind of model lives; imported only when that kind is loaded (PyTorch is slow to import).
MODEL_KINDS = {"gbdt": "homefeed.train.gbdt:GBDTRanker", "nn": "homefeed.train.nn:NNRanker"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    version TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dataset_id TEXT,
    feature_set TEXT,
    code_version TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    files TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    training_seconds REAL,
    predict_p50_ms REAL,
    predict_p99_ms REAL,
    registered_at TEXT NOT NULL,
    registered_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    alias TEXT PRIMARY KEY,
    version TEXT NOT NULL REFERENCES versions(version)
);
CREATE TABLE IF NOT EXISTS alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    previous TEXT,
    moved_at TEXT NOT NULL,
    moved_by TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


class RegistryError(HomefeedError, ValueError):
    """An unknown version or alias, or nothing to roll back to."""


@dataclass(frozen=True)
class Version:
    version: str
    kind: str
    dataset_id: str | None
    feature_set: str | None
    code_version: str
    params: dict
    metrics: dict
    files: dict[str, str]  # file name -> sha256
    size_bytes: int
    training_seconds: float | None
    predict_p50_ms: float | None
    predict_p99_ms: float | None
    registered_at: str
    registered_by: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class AliasMove:
    alias: str
    version: str
    previous: str | None
    moved_at: str
    moved_by: str
    reason: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def model_class(kind: str) -> type[Ranker]:
    if kind not in MODEL_KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    module, name = MODEL_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def predict_latency(model: Ranker, rows: pa.Table, n: int = 200, batch: int = 500) -> tuple[float, float]:
    """p50 and p99 in milliseconds of scoring ``batch`` rows, as the ranking service will."""
    sample = rows.slice(0, min(batch, rows.num_rows))
    model.predict(sample)  # warm-up: lazy initialisation is not latency
    times = []
    for _ in range(n):
        began = time.perf_counter()
        model.predict(sample)
        times.append((time.perf_counter() - began) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


class Registry:
    """Versions and aliases in SQLite at ``db``; model files under ``root/<version>/``."""

    def __init__(self, db: str | Path, root: str | Path):
        self.db, self.root = Path(db), Path(root)
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db, timeout=30)
        try:
            con.executescript(SCHEMA)
        finally:
            con.close()

    @classmethod
    def of(cls, settings: Settings) -> Registry:
        """The project's registry: metadata at ``paths.registry``, model files under ``paths.models``."""
        paths = settings.resolved_paths
        return cls(paths.registry, paths.models)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    # --- versions ---------------------------------------------------------------------------------------------------

    def register(self, model: Ranker, data: TrainingData | None = None, by: str | None = None) -> Version:
        """Store a trained model's files, checksummed, as a new version with its lineage.

        ``data`` (what the model was trained on) names the feature-set version and gives the test rows the
        predict latency is measured on.
        """
        latency_rows = data.splits.get("test") if data is not None else None
        feature_set = data.manifest.get("feature_set", {}).get("version") if data is not None else None
        with tempfile.TemporaryDirectory(prefix=".register-", dir=self.root) as tmp:
            model.save(tmp)
            files = {p.name: sha256_file(p) for p in sorted(Path(tmp).iterdir()) if p.is_file()}
            size = sum((Path(tmp) / name).stat().st_size for name in files)
            p50 = p99 = None
            if latency_rows is not None and latency_rows.num_rows:
                p50, p99 = predict_latency(model, latency_rows)
            with self._tx() as con:
                count = con.execute("SELECT count(*) FROM versions WHERE kind = ?", (model.kind,)).fetchone()[0]
                version = f"{model.kind}-{count + 1:04d}"
                with atomic_dir(self.root / version) as target:
                    for name in files:
                        shutil.copy2(Path(tmp) / name, target / name)
                con.execute(
                    "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        version,
                        model.kind,
                        model.dataset_id,
                        feature_set or model.training.get("feature_set"),
                        homefeed.__version__,
                        json.dumps(model.params(), sort_keys=True),
                        json.dumps(model.training, sort_keys=True, default=float),
                        json.dumps(files, sort_keys=True),
                        size,
                        model.training.get("fit_seconds"),
                        p50,
                        p99,
                        _now(),
                        by or getpass.getuser(),
                    ),
                )
        return self.get(version)

    def get(self, ref: str) -> Version:
        """A version by its name or by an alias pointing at it."""
        con = sqlite3.connect(self.db)
        try:
            row = con.execute("SELECT * FROM versions WHERE version = ?", (ref,)).fetchone()
            if row is None:
                alias = con.execute("SELECT version FROM aliases WHERE alias = ?", (ref,)).fetchone()
                if alias is not None:
                    row = con.execute("SELECT * FROM versions WHERE version = ?", (alias[0],)).fetchone()
            if row is None:
                raise RegistryError(f"no model version or alias {ref!r} in the registry at {self.db}")
            names = tuple(
                r[0] for r in con.execute("SELECT alias FROM aliases WHERE version = ? ORDER BY alias", (row[0],))
            )
        finally:
            con.close()
        return Version(
            row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), json.loads(row[6]), json.loads(row[7]),
            row[8], row[9], row[10], row[11], row[12], row[13], names,
        )  # fmt: skip

    def versions(self) -> list[Version]:
        con = sqlite3.connect(self.db)
        try:
            names = [r[0] for r in con.execute("SELECT version FROM versions ORDER BY registered_at, version")]
        finally:
            con.close()
        return [self.get(n) for n in names]

    def load(self, ref: str) -> Ranker:
        """The model of a version or alias, after checking every file against its recorded checksum."""
        v = self.get(ref)
        directory = self.root / v.version
        for name, digest in v.files.items():
            path = directory / name
            if not path.is_file():
                raise ModelError(f"model {v.version}: file {name} is missing from {directory}")
            if sha256_file(path) != digest:
                raise ModelError(
                    f"model {v.version}: {name} does not match its recorded checksum (tampered or truncated)"
                )
        return model_class(v.kind).load(directory)

    # --- aliases ----------------------------------------------------------------------------------------------------

    def alias(self, name: str, ref: str, reason: str, by: str | None = None) -> AliasMove:
        """Point ``name`` at a version (or at what another alias points to), recording who, when and why."""
        target = self.get(ref).version
        with self._tx() as con:
            row = con.execute("SELECT version FROM aliases WHERE alias = ?", (name,)).fetchone()
            previous = row[0] if row else None
            con.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?)", (name, target))
            move = AliasMove(name, target, previous, _now(), by or getpass.getuser(), reason)
            con.execute(
                "INSERT INTO alias_history (alias, version, previous, moved_at, moved_by, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (move.alias, move.version, move.previous, move.moved_at, move.moved_by, move.reason),
            )
        return move

    def history(self, name: str) -> list[AliasMove]:
        con = sqlite3.connect(self.db)
        try:
            rows = con.execute(
                "SELECT alias, version, previous, moved_at, moved_by, reason FROM alias_history "
                "WHERE alias = ? ORDER BY id",
                (name,),
            ).fetchall()
        finally:
            con.close()
        return [AliasMove(*r) for r in rows]

    def rollback(self, name: str, reason: str, by: str | None = None) -> AliasMove:
        """Move ``name`` back to the version it pointed at before its last move."""
        moves = self.history(name)
        if not moves:
            raise RegistryError(f"no alias {name!r} in the registry at {self.db}")
        previous = moves[-1].previous
        if previous is None:
            raise RegistryError(f"alias {name!r} has no earlier version to roll back to")
        return self.alias(name, previous, reason, by)
