"""The dataset builder: impressions + engagements + point-in-time features → a versioned training snapshot.

One DuckDB connection does all of it: labels and sampling decisions for every
impression of the range (:mod:`.sampling`) are materialized once, then each split
is joined to its features (:func:`homefeed.features.pit.query`) and written with
``COPY ... ORDER BY`` (rows sorted on the impression key, so the file's bytes do
not depend on threads or read order; checked by the tests), then the written
files are scanned once for statistics and rule violations (:mod:`.validation`).

The snapshot is built in a hidden folder beside its target and renamed into place
(:func:`homefeed.files.atomic_dir`): a build interrupted midway leaves nothing a
reader could mistake for a dataset, and the next build removes what it left
(builds take the store's lock, one at a time, so none sweeps another's work).

A build trusts nothing it did not check: every input file's SHA-256 against its
manifest, one row per impression key in the range, and as many rows out of the
point-in-time join as went in (a user or an item stored twice would double
every impression of it).  Each failure is a :class:`DamagedStateError` naming
what to fix.  No path is ever spliced into SQL text (views and ``COPY`` targets
take them as values).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

import homefeed
from homefeed.config import Settings
from homefeed.data.contracts import holdable_days
from homefeed.data.etl import snapshot_lake
from homefeed.data.lake import Lake, register_view
from homefeed.errors import DamagedStateError
from homefeed.features import pit
from homefeed.features.definitions import (
    ENTITY_KEYS,
    ENTITY_SOURCE,
    FeatureError,
    FeatureSet,
    declared_key_sql,
    feature_set,
    is_declared,
)
from homefeed.files import atomic_dir, atomic_write_text, lock, sha256_file, sweep_atomic_dirs
from homefeed.schema import days
from homefeed.train import sampling, validation
from homefeed.train.snapshots import MANIFEST, REBUILD, DatasetStore, dataset_id
from homefeed.train.spec import SPLITS, DatasetError, DatasetSpec, split_days

#: Bumped whenever the builder's output changes meaning for the same spec and inputs (it is part of every id).
BUILDER_VERSION = 1


@dataclass(frozen=True)
class Built:
    id: str
    path: Path
    manifest: dict
    reused: bool  # the id existed: nothing was built


@dataclass(frozen=True)
class Inputs:
    """The files a build reads, with the checksums its manifest records, and what is worth a warning."""

    impressions: list[Path]
    engagements: list[Path]
    sources: dict[str, list[Path]]  # the point-in-time join's views: ETL outputs and the lake's items
    checksums: dict[str, str]  # "lake/<table>/date=D/<file>" or "etl/<output>/date=D/<file>" -> sha256
    warnings: list[str]


def _span(dates: list[dt.date]) -> str:
    return f"{dates[0]} to {dates[-1]}" if dates else "nothing"


def gather_inputs(spec: DatasetSpec, fs: FeatureSet, lake: Lake, etl: Lake) -> Inputs:
    """Check the lake and the ETL hold what the spec needs, and list the files to read; errors say what is missing."""
    warnings = []
    first, last = holdable_days()
    if spec.start < first or spec.end > last:
        raise DatasetError(f"{spec.start} to {spec.end}: the lake holds no events before {first} or after {last}")
    held = lake.dates("impressions")
    if not held:
        raise DatasetError(f"no impressions in the lake at {lake.root}: ingest impressions first")
    impressions = lake.files("impressions", spec.start, spec.end)
    if not impressions:
        raise DatasetError(
            f"no impressions in the lake from {spec.start} to {spec.end}; it holds impressions from {_span(held)}"
        )
    if gaps := [d for d in days(spec.start, spec.end) if d not in held]:
        warnings.append(f"impressions: no partition for {', '.join(map(str, gaps))}")
    reach = spec.end + dt.timedelta(days=spec.attribution_days)
    engaged = lake.dates("engagements")
    engagements = lake.files("engagements", spec.start, reach)
    if not engagements:
        raise DatasetError(
            f"no engagements in the lake from {spec.start} to {reach} (the range and its attribution window); "
            f"it holds engagements from {_span(engaged)}: every label would be 0"
        )
    if engaged[-1] < reach:
        warnings.append(
            f"labels may be incomplete: the attribution window of {spec.end}'s impressions reaches {reach}, "
            f"the lake's engagements end on {engaged[-1]}"
        )
    try:
        sources = pit.source_files(fs, etl, lake, spec.start, spec.end)
    except FeatureError as exc:
        raise DatasetError(str(exc)) from None
    for name in sources:
        if name == "feature_items":
            continue
        have = set(etl.dates(name))
        wanted = days(spec.start - dt.timedelta(days=1), spec.end - dt.timedelta(days=1))
        if gaps := [d for d in wanted if d not in have]:
            missing = ", ".join(map(str, gaps))
            warnings.append(f"{name}: no snapshot for {missing}: the next day's rows use older values or none")
    lake_files = impressions + engagements + sources["feature_items"]
    etl_files = [f for name, files in sources.items() if name != "feature_items" for f in files]
    # The id promises these bytes: a file changed after its manifest was written must not pass for the original.
    checksums = {f"lake/{k}": v for k, v in lake.checksums(lake_files, verify=True).items()}
    checksums |= {f"etl/{k}": v for k, v in etl.checksums(etl_files, verify=True).items()}
    return Inputs(impressions, engagements, sources, checksums, warnings)


def identity(spec: DatasetSpec, fs: FeatureSet, inputs: Inputs) -> dict:
    """Everything that decides a dataset's bytes, and nothing that does not (paths, the time of the build)."""
    return {
        "builder": BUILDER_VERSION,
        "homefeed": homefeed.__version__,
        "duckdb": duckdb.__version__,  # its hash() drives sampling and its writer writes the files
        "spec": spec.model_dump(mode="json"),
        "feature_set": {"version": fs.version, "columns": fs.columns},
        "inputs": inputs.checksums,
    }


def resolve_feature_set(spec: DatasetSpec, settings: Settings) -> FeatureSet:
    try:
        return feature_set(spec.feature_set, settings.etl, settings.features)
    except FeatureError as exc:
        raise DatasetError(f"feature_set: {exc}") from None


def build_dataset(spec: DatasetSpec, settings: Settings, force: bool = False) -> Built:
    """Build the dataset ``spec`` describes from the lake and ETL of ``settings`` (or find it already built)."""
    paths = settings.resolved_paths
    lake, etl, store = Lake(paths.lake), snapshot_lake(paths.etl), DatasetStore(paths.datasets)
    fs = resolve_feature_set(spec, settings)
    inputs = gather_inputs(spec, fs, lake, etl)
    ident = identity(spec, fs, inputs)
    did = dataset_id(ident)
    if store.exists(did) and not force:
        reused = _reuse(store, did, inputs)
        if reused is not None:
            return reused
    store.root.mkdir(parents=True, exist_ok=True)
    with lock(store.root / LOCK):  # one build at a time: it may then remove what a killed build left
        sweep_atomic_dirs(store.root, prefixes=(SPILL_PREFIX,))
        if store.exists(did) and not force:  # built while this one waited
            reused = _reuse(store, did, inputs)
            if reused is not None:
                return reused
        return _build(spec, fs, inputs, ident, store, did)


#: The lock a build holds on the dataset store, and its spill folder's prefix there.
LOCK = ".locks/build.lock"
SPILL_PREFIX = ".spill-"


def _reuse(store: DatasetStore, did: str, inputs: Inputs) -> Built | None:
    """The dataset of this id, verified; None (and a warning) when it is damaged: its inputs are here, rebuild it."""
    try:
        return Built(did, store.path(did), store.verify(did), reused=True)
    except DamagedStateError as exc:
        inputs.warnings.append(f"rebuilt: the dataset of this id was damaged ({str(exc).removesuffix(f'; {REBUILD}')})")
        return None


def _build(spec: DatasetSpec, fs: FeatureSet, inputs: Inputs, ident: dict, store: DatasetStore, did: str) -> Built:
    began = time.perf_counter()
    ranges = split_days(spec)
    files = {name: f"{name}.parquet" for name in ranges}
    with (
        atomic_dir(store.path(did), allowed={*(f"{s}.parquet" for s in SPLITS), MANIFEST}) as staging,
        tempfile.TemporaryDirectory(prefix=SPILL_PREFIX, dir=store.root) as spill,
        # The spill folder as a value, never SQL text: sorts of big ranges spill beside the datasets, not in cwd.
        duckdb.connect(config={"temp_directory": spill}) as con,
    ):
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # the CLI prints its own summary; no bars in logs
        funnel = _select(con, spec, fs, inputs)
        for split, name in files.items():
            written = _write_split(con, spec, fs, split, staging / name)
            if written != funnel.get(split, {}).get("kept", 0):
                raise _multiplied(con, fs, split, funnel.get(split, {}).get("kept", 0), written)
        stats = validation.statistics(con, {s: staging / n for s, n in files.items()}, fs, spec.targets)
        if empty := validation.missing_everywhere(stats, fs):
            raise DatasetError(validation.describe_valueless(empty))
        for label, counts in stats["all"]["labels"].items():
            if not counts["positives"]:  # said now, not first when a model refuses to train a head on it
                inputs.warnings.append(
                    f"label {label!r} never occurs in the dataset: a model refuses its head (or drops it when asked)"
                )
        manifest = {
            "id": did,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - began, 3),
            "builder": ident["builder"],
            "homefeed": ident["homefeed"],
            "duckdb": ident["duckdb"],
            "spec": ident["spec"],
            "inputs": ident["inputs"],
            "feature_set": {
                "name": fs.name,
                "version": fs.version,
                "columns": fs.columns,
                "bounds": {f.name: validation.bounds(f) for f in fs.features},
            },
            "splits": {
                split: {
                    "file": name,
                    "first_day": str(ranges[split][0]),
                    "last_day": str(ranges[split][1]),
                    "sha256": sha256_file(staging / name),
                    "funnel": funnel.get(split, {}),
                }
                for split, name in files.items()
            },
            "stats": stats,
            "violations": validation.violations(stats, fs),
            "warnings": inputs.warnings,
        }
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return Built(did, store.path(did), manifest, reused=False)


def _select(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, fs: FeatureSet, inputs: Inputs) -> dict[str, dict]:
    """Label every impression of the range and decide what is kept; return the per-split funnel counts."""
    register_view(con, "ds_impressions", inputs.impressions)
    register_view(con, "ds_engagements", inputs.engagements, "request_id, item_id, ts, action")
    pit.register_files(con, inputs.sources)
    if empty := validation.valueless(con, fs):
        raise DatasetError(validation.describe_valueless(empty))
    _check_declared(con, spec, fs)
    con.execute(f"CREATE TEMP TABLE ds_candidates AS {sampling.candidates_sql(spec, _declared_columns(fs))}")
    _refuse_repeated_impressions(con, inputs)
    cursor = con.execute(sampling.funnel_sql())
    names = [d[0] for d in cursor.description]
    funnel = {row[0]: dict(zip(names[1:], row[1:], strict=True)) for row in cursor.fetchall()}
    kept = sum(f["kept"] for f in funnel.values())
    if not kept:
        scope = " from exploration traffic (0 < propensity < 1)" if spec.sampling.exploration_only else ""
        raise DatasetError(f"no impressions{scope} from {spec.start} to {spec.end} are left to train on")
    if spec.sampling.ips and (missing := sum(f["kept_without_propensity"] for f in funnel.values())):
        raise DatasetError(
            f"sampling.ips: {missing:,} of {kept:,} impressions kept have no logged propensity: logs without "
            "propensities cannot be IPS-weighted (set sampling.exploration_only = true to keep only rows with one, "
            "or ips = false)"
        )
    for f in funnel.values():
        f.pop("kept_without_propensity")
    return funnel


def _declared_columns(fs: FeatureSet) -> tuple[str, ...]:
    """The impression columns declared features read that a dataset row does not keep anyway."""
    read = {f.source.partition(".")[2] for f in fs.features if is_declared(f)}
    return tuple(sorted(read - set(sampling.IMPRESSION_COLUMNS)))


def _check_declared(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, fs: FeatureSet) -> None:
    """Refuse, before anything is written, a declared feature whose map key (or map) no impression of the range has."""
    mapped = [f for f in fs.features if is_declared(f) and f.source.endswith(".served_features")]
    if not mapped:
        return
    lo, hi = spec.start, spec.end + dt.timedelta(days=1)
    window = f"ts >= TIMESTAMPTZ '{lo} 00:00:00+00' AND ts < TIMESTAMPTZ '{hi} 00:00:00+00'"
    for f in mapped:
        if f.column.startswith("["):
            key = f.column[1:-1]
            (found,) = con.execute(
                f"SELECT count(*) FROM ds_impressions i WHERE {window} "
                f"AND i.served_features[{declared_key_sql(f)}] IS NOT NULL"
            ).fetchone()
            if found:
                continue
            keys = [
                k
                for (k,) in con.execute(
                    f"SELECT DISTINCT unnest(map_keys(served_features)) AS k FROM ds_impressions WHERE {window} "
                    "ORDER BY k LIMIT 6"
                ).fetchall()
            ]
            listed = f"keys there include {', '.join(map(repr, keys[:5]))}" if keys else "no impression has any"
            if "{item_id}" in key:  # the cross: no impression has the key its own item names
                raise DatasetError(
                    f"declared feature {f.name!r}: cross {key!r} names no key of any impression's served_features "
                    f"by its shown item from {spec.start} to {spec.end}; {listed}"
                )
            raise DatasetError(
                f"declared feature {f.name!r}: key {key!r} is in no impression's served_features from {spec.start} "
                f"to {spec.end}; {listed}"
            )
        (found,) = con.execute(f"SELECT count(served_features) FROM ds_impressions WHERE {window}").fetchone()
        if not found:
            raise DatasetError(
                f"declared feature {f.name!r}: no impression from {spec.start} to {spec.end} has served_features"
            )


def _refuse_repeated_impressions(con: duckdb.DuckDBPyConnection, inputs: Inputs) -> None:
    """One row per impression key, or every label and weight of the repeated ones would count twice.

    Ingestion stores a key once (a re-logged impression within a day of the first is a duplicate), so a
    repeat means an impression logged again days later, or a lake written by an older homefeed.
    """
    repeated = con.execute(
        "SELECT request_id, position, count(*) AS n, count(*) OVER () AS keys FROM ds_candidates "
        "GROUP BY request_id, position HAVING count(*) > 1 ORDER BY n DESC, request_id, position LIMIT 1"
    ).fetchone()
    if repeated is None:
        return
    request_id, position, n, keys = repeated
    held = con.execute(
        "SELECT DISTINCT filename FROM read_parquet(?, filename = true) WHERE request_id = ? AND position = ? "
        "ORDER BY filename",
        [[str(f) for f in inputs.impressions], request_id, position],
    ).fetchall()
    raise DamagedStateError(
        f"the lake holds {keys:,} impression key(s) more than once (request_id {request_id!r}, position {position}: "
        f"{n} times, in {', '.join(Path(f).parent.name + '/' + Path(f).name for (f,) in held)}); training on them "
        "would count each twice: remove the repeated rows from the lake (a partition's later part file holds the "
        "re-logged ones) and build again"
    )


def _multiplied(con: duckdb.DuckDBPyConnection, fs: FeatureSet, split: str, kept: int, written: int) -> Exception:
    """The error for a feature join that gave more rows than it was given: which source repeats a key."""
    checks = {"feature_items": ("item_id",)} | {
        ENTITY_SOURCE[src]: (*ENTITY_KEYS[src], "valid_from")
        for src in sorted({f.entity for f in fs.features} & set(ENTITY_SOURCE))
    }
    for view, keys in checks.items():
        key = ", ".join(keys)
        found = con.execute(
            f"SELECT {key}, count(*) FROM {view} GROUP BY {key} HAVING count(*) > 1 ORDER BY ALL LIMIT 1"
        ).fetchone()
        if found:
            shown = ", ".join(f"{k}={v}" for k, v in zip(keys, found, strict=False))
            return DamagedStateError(
                f"split {split!r}: the point-in-time join gave {written:,} rows for {kept:,} impressions: {view} "
                f"holds more than one row for {shown}; a lake table must hold one row per key (run the ETL again "
                "after removing the repeated rows)"
            )
    return DamagedStateError(f"split {split!r}: the point-in-time join gave {written:,} rows for {kept:,} impressions")


def _write_split(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, fs: FeatureSet, split: str, path: Path) -> int:
    """Join one split's kept rows to their point-in-time features and write them, sorted, as one Parquet file.

    Returns the rows written (``COPY`` counts them), which must be the rows kept: a join may not multiply them.
    """
    labels = [label.name for label in spec.targets]
    keep = (*sampling.IMPRESSION_COLUMNS, *_declared_columns(fs), *labels, "sample_weight")
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW ds_rows AS SELECT {', '.join(keep)} FROM ds_candidates "
        f"WHERE keep AND split = '{split}'"
    )
    columns = [*sampling.IMPRESSION_COLUMNS, "topic", "creator_id", *labels]
    select = f"{', '.join(columns)}, {sampling.weight_sql(spec)} AS weight, {', '.join(fs.columns)}"
    query = pit.query(fs, "ds_rows", keep=keep)
    (written,) = con.execute(
        f"COPY (SELECT {select} FROM ({query}) ORDER BY {sampling.ORDER}) TO ? (FORMAT parquet, COMPRESSION zstd)",
        [str(path)],
    ).fetchone()
    return int(written)


__all__ = ["BUILDER_VERSION", "Built", "Inputs", "build_dataset", "gather_inputs", "identity", "resolve_feature_set"]
