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

What a registration guarantees (tested in ``tests/train/test_registry.py`` and
``test_concurrency.py``): a version's number is one past every version of its
kind in the database *and* every folder on disk, and it is taken, its folder
written and its row inserted under the database's write lock, so two trainings
at once get two numbers and no folder is ever written over.  A registry file
that is missing (or empty) beside existing model folders is damaged state, not
a fresh start: numbering from 1 again is how a model was once lost.  Staging
folders left by a killed registration are removed by the next one (under the
same lock, so never one still being written).  Alias names are checked: never
empty, path-like or with control characters, and never shaped like a version
(``gbdt-0002``), which would change meaning when that version is trained.

Why our own and not MLflow's: the registry is a few tables and a folder, it
lives in the project like the lake and the online store, and it needs no server.
"""

from __future__ import annotations

import datetime as dt
import getpass
import importlib
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

import homefeed
from homefeed.config import Settings
from homefeed.errors import DamagedStateError, HomefeedError
from homefeed.files import atomic_dir, sha256_file
from homefeed.train.model import DamagedModelError, Ranker, TrainingData

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


#: A version's name: its kind, a hyphen, its number (``gbdt-0002``).  Reserved: no alias may look like one.
VERSION_NAME = re.compile(r"([a-z][a-z0-9_]*)-([0-9]+)", re.IGNORECASE)
#: An alias: letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at most 64 characters.
ALIAS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class RegistryError(HomefeedError, ValueError):
    """An unknown version or alias, a name an alias may not take, or nothing to roll back to."""


class DamagedRegistryError(DamagedStateError, RegistryError):
    """The registry's database is missing beside model folders, unreadable, or holds rows it cannot have written."""


def check_alias_name(name: str) -> None:
    """Refuse a name an alias may not take: empty, path-like, control characters, or shaped like a version."""
    if not ALIAS_NAME.fullmatch(name):
        raise RegistryError(
            f"alias {name!r}: an alias is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if VERSION_NAME.fullmatch(name):
        raise RegistryError(
            f"alias {name!r} looks like a model version (kind-number, as gbdt-0002): those names are reserved, "
            "so an alias never changes meaning when that version is trained; choose another name"
        )


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
        if not self.db.exists() and (folders := self._folders()):
            raise self._lost(folders, "is missing")
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:  # a read only, so replicas may mount a registry read-only
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            used = "versions" in tables and con.execute("SELECT EXISTS (SELECT 1 FROM versions)").fetchone()[0]
        if not used:  # new, or no version yet: under the write lock, a first registration is all there or not yet
            with self._tx() as con:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    con.execute(statement)
                empty = con.execute("SELECT count(*) FROM versions").fetchone()[0] == 0
                if empty and (folders := self._folders()):
                    raise self._lost(folders, "holds no versions")

    def _folders(self) -> list[str]:
        """The model folders under ``root`` (named like versions), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and VERSION_NAME.fullmatch(p.name))

    def _lost(self, folders: list[str], what: str) -> DamagedRegistryError:
        shown = ", ".join(folders[:3]) + (", …" if len(folders) > 3 else "")
        return DamagedRegistryError(
            f"{self.db}: the model registry {what}, but {self.root} holds {len(folders)} model folder(s) ({shown}): "
            "restore the registry file from a backup, or move those folders away to start an empty registry "
            "(new versions are never numbered over existing folders)"
        )

    @classmethod
    def of(cls, settings: Settings) -> Registry:
        """The project's registry: metadata at ``paths.registry``, model files under ``paths.models``."""
        paths = settings.resolved_paths
        return cls(paths.registry, paths.models)

    @contextmanager
    def _connect(self, isolation_level: str | None = "DEFERRED") -> Iterator[sqlite3.Connection]:
        """A connection to the database; a file SQLite cannot read is damaged state, named, never a traceback."""
        con = sqlite3.connect(self.db, timeout=30, isolation_level=isolation_level)
        try:
            yield con
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise  # another writer held the lock past the timeout: not damage
            raise DamagedRegistryError(
                f"{self.db}: not a readable model registry ({exc}); restore it from a backup"
            ) from None
        finally:
            con.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` takes the database's write lock for the whole block."""
        with self._connect(isolation_level=None) as con:
            try:
                con.execute("BEGIN IMMEDIATE")
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    # --- versions ---------------------------------------------------------------------------------------------------

    def register(self, model: Ranker, data: TrainingData | None = None, by: str | None = None) -> Version:
        """Store a trained model's files, checksummed, as a new version with its lineage.

        ``data`` (what the model was trained on) names the feature-set version and gives the test rows the
        predict latency is measured on.
        """
        latency_rows = data.splits.get("test") if data is not None else None
        feature_set = data.manifest.get("feature_set", {}).get("version") if data is not None else None
        p50 = p99 = None
        if latency_rows is not None and latency_rows.num_rows:
            p50, p99 = predict_latency(model, latency_rows)
        with self._tx() as con:
            self._remove_stale_staging()
            version = self._next_version(con, model.kind)
            with atomic_dir(self.root / version) as target:
                model.save(target)
                files = {p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()}
                size = sum((target / name).stat().st_size for name in files)
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

    def _next_version(self, con: sqlite3.Connection, kind: str) -> str:
        """One past the highest number of ``kind`` in the database or on disk: a folder is never reused."""
        names = [r[0] for r in con.execute("SELECT version FROM versions WHERE kind = ?", (kind,))]
        taken = [int(m[2]) for n in [*names, *self._folders()] if (m := VERSION_NAME.fullmatch(n)) and m[1] == kind]
        return f"{kind}-{max(taken, default=0) + 1:04d}"

    def _remove_stale_staging(self) -> None:
        """Staging folders of registrations killed midway (only ever written under the lock this runs under)."""
        for path in [*self.root.glob(".*.tmp"), *self.root.glob(".register-*")]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    def get(self, ref: str) -> Version:
        """A version by its name or by an alias pointing at it."""
        with self._connect() as con:
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
        try:
            params, metrics, files = (json.loads(row[i]) for i in (5, 6, 7))
        except (TypeError, ValueError) as exc:
            raise DamagedRegistryError(f"{self.db}: version {row[0]}'s row is not readable ({exc})") from None
        return Version(
            row[0], row[1], row[2], row[3], row[4], params, metrics, files,
            row[8], row[9], row[10], row[11], row[12], row[13], names,
        )  # fmt: skip

    def versions(self) -> list[Version]:
        with self._connect() as con:
            names = [r[0] for r in con.execute("SELECT version FROM versions ORDER BY registered_at, version")]
        return [self.get(n) for n in names]

    def load(self, ref: str) -> Ranker:
        """The model of a version or alias, after checking every file against its recorded checksum."""
        v = self.get(ref)
        directory = self.root / v.version
        for name, digest in v.files.items():
            path = directory / name
            if not path.is_file():
                raise DamagedModelError(f"model {v.version}: file {name} is missing from {directory}")
            if sha256_file(path) != digest:
                raise DamagedModelError(
                    f"model {v.version}: {name} does not match its recorded checksum (tampered or truncated)"
                )
        return model_class(v.kind).load(directory)

    # --- aliases ----------------------------------------------------------------------------------------------------

    def alias(self, name: str, ref: str, reason: str, by: str | None = None) -> AliasMove:
        """Point ``name`` at a version (or at what another alias points to), recording who, when and why."""
        check_alias_name(name)
        target = self.get(ref).version
        with self._tx() as con:
            return self._move(con, name, target, reason, by)

    def _move(self, con: sqlite3.Connection, name: str, target: str, reason: str, by: str | None) -> AliasMove:
        row = con.execute("SELECT version FROM aliases WHERE alias = ?", (name,)).fetchone()
        move = AliasMove(name, target, row[0] if row else None, _now(), by or getpass.getuser(), reason)
        con.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?)", (name, target))
        con.execute(
            "INSERT INTO alias_history (alias, version, previous, moved_at, moved_by, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (move.alias, move.version, move.previous, move.moved_at, move.moved_by, move.reason),
        )
        return move

    def history(self, name: str) -> list[AliasMove]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT alias, version, previous, moved_at, moved_by, reason FROM alias_history "
                "WHERE alias = ? ORDER BY id",
                (name,),
            ).fetchall()
        return [AliasMove(*r) for r in rows]

    def rollback(self, name: str, reason: str, by: str | None = None) -> AliasMove:
        """Move ``name`` back to the latest version it pointed at that differs from the current one.

        Setting an alias to the version it already holds is recorded in its history but is not a version to
        roll back to: after ``a → b``, ``b → b``, a rollback goes to ``a``.  Read and moved in one transaction, so
        a concurrent move cannot slip in between.
        """
        with self._tx() as con:
            row = con.execute("SELECT version FROM aliases WHERE alias = ?", (name,)).fetchone()
            if row is None:
                raise RegistryError(f"no alias {name!r} in the registry at {self.db}")
            held = con.execute(
                "SELECT version, previous FROM alias_history WHERE alias = ? ORDER BY id DESC", (name,)
            ).fetchall()
            earlier = [v for version, previous in held for v in (version, previous)]
            target = next((v for v in earlier if v is not None and v != row[0]), None)
            if target is None:
                raise RegistryError(
                    f"alias {name!r} has no earlier version to roll back to (it has only held {row[0]})"
                )
            return self._move(con, name, target, reason, by)
