"""Datasets as immutable, versioned snapshots: ids, the store of built datasets, and what differs between two.

A dataset's id is a hash of everything that decides its bytes — the spec, the
feature set's version and columns, the checksum of every lake and ETL file read,
the builder's and DuckDB's versions — and of nothing else: not the paths, not
the time of the build.  So the same inputs give the same id on any machine, a
late file in the lake gives a new one, and a build whose id exists is a no-op.
``<root>/<id>/`` holds one Parquet file per split and ``manifest.json``.

Reads are verified: a manifest that does not parse, or names another dataset,
and a split file that is missing or whose bytes differ from the SHA-256 its
manifest records (a validation file copied over the test file is one) are
damaged state (`DamagedStateError`, exit code 3), named, never used.  A split
is read once into memory and hashed from those bytes, so checking costs one
SHA-256 pass (about 1 GB/s), not a second read of the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from homefeed.errors import DamagedStateError
from homefeed.files import sha256_file
from homefeed.train.spec import DatasetError

MANIFEST = "manifest.json"
ID_LENGTH = 16
#: What the readers of a manifest rely on, and the JSON type of each (``splits`` also needs a SHA-256 per split).
MANIFEST_KEYS = {
    "spec": dict, "feature_set": dict, "splits": dict, "stats": dict, "created_at": str, "warnings": list,
    "violations": list,
}  # fmt: skip
REBUILD = "build it again with the same spec (`homefeed dataset build` replaces a damaged dataset)"


def dataset_id(identity: dict) -> str:
    """A short SHA-256 of the canonical JSON of ``identity`` (sorted keys, no whitespace)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


class DatasetStore:
    """The built datasets under ``root``; a folder counts only once its manifest is there (and it is not hidden)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, dataset_id: str) -> Path:
        return self.root / dataset_id

    def exists(self, dataset_id: str) -> bool:
        return (self.path(dataset_id) / MANIFEST).exists()

    def ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / MANIFEST).exists())

    def manifests(self) -> list[dict]:
        """Every dataset's manifest, oldest build first."""
        found = [self._manifest(i) for i in self.ids()]
        return sorted(found, key=lambda m: (m["created_at"], m["id"]))

    def resolve(self, ref: str) -> str:
        """The id ``ref`` names: an id, or a prefix of exactly one (as git takes commits)."""
        ids = self.ids()
        if ref in ids:
            return ref
        found = [i for i in ids if ref and i.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if found:
            raise DatasetError(f"dataset {ref!r} is ambiguous: it starts {', '.join(found[:5])}")
        known = f"; `homefeed dataset list` shows the {len(ids)} there" if ids else " (there are none yet)"
        raise DatasetError(f"unknown dataset {ref!r} under {self.root}{known}")

    def load(self, ref: str) -> dict:
        """The manifest of the dataset ``ref`` names, checked to be readable and to be that dataset's."""
        return self._manifest(self.resolve(ref))

    def _manifest(self, dataset_id: str) -> dict:
        path = self.path(dataset_id) / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DamagedStateError(f"{path}: missing; {REBUILD}") from None
        except (OSError, ValueError) as exc:
            raise DamagedStateError(f"{path}: not a readable manifest ({exc}); {REBUILD}") from None
        if not isinstance(manifest, dict) or manifest.get("id") != dataset_id:
            found = manifest.get("id") if isinstance(manifest, dict) else None
            raise DamagedStateError(f"{path}: the manifest of dataset {found!r}, not of {dataset_id}; {REBUILD}")
        bad = [k for k, kind in MANIFEST_KEYS.items() if not isinstance(manifest.get(k), kind)]
        splits = manifest.get("splits") or {}
        bad += [f"splits.{n}" for n, v in splits.items() if not (isinstance(v, dict) and _plain_split(n, v))]
        if bad:
            raise DamagedStateError(f"{path}: no valid {', '.join(bad)} in the manifest; {REBUILD}")
        return manifest

    def verify(self, dataset_id: str) -> dict:
        """The manifest, after checking every split file against its SHA-256 (without parsing the files)."""
        manifest = self._manifest(dataset_id)
        for split, info in manifest["splits"].items():
            path = self.path(dataset_id) / info["file"]
            if not path.is_file():
                raise DamagedStateError(f"{path}: the {split} split is missing; {REBUILD}")
            if sha256_file(path) != info["sha256"]:
                raise DamagedStateError(f"{path}: {_CHANGED.format(id=dataset_id)}; {REBUILD}")
        return manifest

    def read_split(self, manifest: dict, split: str) -> pa.Table:
        """One split of a dataset, refused unless its bytes are the ones the manifest's SHA-256 names."""
        info = manifest["splits"].get(split)
        if info is None:
            raise DatasetError(
                f"dataset {manifest['id']} has no {split!r} split (it has {', '.join(manifest['splits'])})"
            )
        path = self.path(manifest["id"]) / info["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DamagedStateError(f"{path}: the {split} split is missing; {REBUILD}") from None
        except OSError as exc:
            raise DamagedStateError(f"{path}: cannot read the {split} split ({exc.strerror}); {REBUILD}") from None
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise DamagedStateError(f"{path}: {_CHANGED.format(id=manifest['id'])}; {REBUILD}")
        return pq.read_table(pa.BufferReader(data))


_CHANGED = (
    "its bytes do not match the SHA-256 in dataset {id}'s manifest (changed or replaced since the build: a copy of "
    "another split is one)"
)


def _plain_split(name: str, info: dict) -> bool:
    """A split entry names a file in the dataset's own folder and records its SHA-256."""
    file = info.get("file")
    return isinstance(info.get("sha256"), str) and isinstance(file, str) and file != "" and Path(file).name == file


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: value}


@dataclass
class DatasetDiff:
    """What changed from dataset ``a`` to dataset ``b``."""

    a: str
    b: str
    spec: list[tuple[str, object, object]] = field(default_factory=list)  # dotted key, a's value, b's
    feature_set: tuple[str, str] = ("", "")  # versions
    features_added: list[str] = field(default_factory=list)
    features_removed: list[str] = field(default_factory=list)
    inputs_added: int = 0
    inputs_removed: int = 0
    splits: list[dict] = field(default_factory=list)  # split, rows a/b, label rates a/b
    shifts: list[dict] = field(default_factory=list)  # per common feature, over all rows: mean shift in std units


def diff(a: dict, b: dict) -> DatasetDiff:
    """Spec differences, row and label counts per split, and per-feature mean and missing-rate shifts."""
    out = DatasetDiff(a["id"], b["id"])
    spec_a, spec_b = _flatten(a["spec"]), _flatten(b["spec"])
    for key in sorted(spec_a.keys() | spec_b.keys()):
        if spec_a.get(key) != spec_b.get(key):
            out.spec.append((key, spec_a.get(key), spec_b.get(key)))
    out.feature_set = (a["feature_set"]["version"], b["feature_set"]["version"])
    cols_a, cols_b = a["feature_set"]["columns"], b["feature_set"]["columns"]
    out.features_added = [c for c in cols_b if c not in cols_a]
    out.features_removed = [c for c in cols_a if c not in cols_b]
    inputs_a, inputs_b = set(a["inputs"].items()), set(b["inputs"].items())
    out.inputs_added, out.inputs_removed = len(inputs_b - inputs_a), len(inputs_a - inputs_b)
    for split in [s for s in ("train", "validation", "test", "all") if s in a["stats"] or s in b["stats"]]:
        sa, sb = a["stats"].get(split, {}), b["stats"].get(split, {})
        labels = sorted(set(sa.get("labels", {})) | set(sb.get("labels", {})))
        out.splits.append(
            {
                "split": split,
                "rows": (sa.get("rows"), sb.get("rows")),
                "weight_sum": (sa.get("weight_sum"), sb.get("weight_sum")),
                "labels": {
                    name: (
                        sa.get("labels", {}).get(name, {}).get("rate"),
                        sb.get("labels", {}).get(name, {}).get("rate"),
                    )
                    for name in labels
                },
            }
        )
    fa, fb = a["stats"].get("all", {}).get("features", {}), b["stats"].get("all", {}).get("features", {})
    for name in [n for n in fa if n in fb]:
        x, y = fa[name], fb[name]
        out.shifts.append(
            {
                "feature": name,
                "mean": (x["mean"], y["mean"]),
                "shift_std": _shift(x, y),
                "null_rate": (x["null_rate"], y["null_rate"]),
                "missing_rate": (x["missing_rate"], y["missing_rate"]),
            }
        )
    out.shifts.sort(key=lambda s: -abs(s["shift_std"] or 0.0))
    return out


def _shift(x: dict, y: dict) -> float | None:
    """Change of the mean in units of the two datasets' pooled standard deviation (0 for two constants)."""
    if x["mean"] is None or y["mean"] is None:
        return None
    spread = math.sqrt(((x["std"] or 0.0) ** 2 + (y["std"] or 0.0) ** 2) / 2)
    delta = y["mean"] - x["mean"]
    if spread == 0:
        return 0.0 if delta == 0 else math.copysign(math.inf, delta)
    return delta / spread


__all__ = ["ID_LENGTH", "MANIFEST", "REBUILD", "DatasetDiff", "DatasetStore", "dataset_id", "diff"]
