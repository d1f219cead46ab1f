"""Materialization: the latest ETL snapshot of each entity a feature set reads, into the online store.

The store then holds, per entity, exactly what the point-in-time join would give
an impression right after the snapshot became known: the same columns, the same
snapshot, missing keys still missing (the serving path applies the declared
default and raises the entity's missing flag, as the offline join does).  An
entity is written with ``replace=True``, so an item that left the snapshot
leaves the store instead of serving stale counts, and every vector expires
after the features' TTL if materialization stops.

Because a write replaces the whole entity, a snapshot that is empty, or much
smaller than what the store holds (an ETL run over days past the lake's data
once emptied it: users 465 → 0), is refused before anything is written unless
forced: the store's count is that of the snapshot it was loaded from (its
version names the day; the ETL's manifest holds the rows), so no backend has to
count its keys.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from homefeed.data.lake import Lake
from homefeed.errors import DamagedStateError
from homefeed.features.definitions import (
    CATEGORY,
    ENTITY_KEYS,
    ENTITY_SOURCE,
    Feature,
    FeatureError,
    FeatureSet,
    declared_sources,
)
from homefeed.features.store import OnlineStore

#: The default of ``[features] materialize_min_share``.
MIN_SHARE = 0.5


class ShrinkError(FeatureError):
    """A snapshot would replace what the online store holds with nothing, or with much less."""


@dataclass(frozen=True)
class Materialized:
    entity: str
    snapshot: dt.date
    keys: int
    columns: tuple[str, ...]
    version: str


#: The suffix of the store entity that holds a declared snapshot's categories (``user_declared_vocab``).
VOCAB = "_vocab"


def stored(fs: FeatureSet) -> list[tuple[str, str, str, list[Feature]]]:
    """(store entity, ETL output, key entity, features) of every snapshot ``fs`` reads: the built-in entities under
    their own names, each declared snapshot under its output's name (``user_declared``).

    Kept on the (immutable) set after the first call: serving asks on every request.
    """
    held = fs.__dict__.get("_stored")
    if held is not None:
        return held
    out = []
    for entity, source in ENTITY_SOURCE.items():
        features = [f for f in fs.features if f.entity == entity and f.source == source]
        if features:
            out.append((entity, source, entity, features))
    out += [(source, source, entity, list(features)) for entity, source, features in declared_sources(fs)]
    fs.__dict__["_stored"] = out  # a frozen dataclass: its __dict__ still takes a cache, as cached_property's does
    return out


def vocabulary_keys(feature: str, values: np.ndarray) -> np.ndarray:
    """The vocabulary entity's keys: ``"<feature>=<category>"`` (a feature name holds no ``=``)."""
    return np.array([f"{feature}={v}" for v in values.tolist()], dtype=object)


def _encoded(rows: pa.Table, features: list[Feature]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The snapshot as a float32 matrix (a category as its index in its feature's sorted values, NaN where null)
    and the vocabulary: its keys and codes.  The store holds floats; serving maps a code back to its string."""
    if not rows.num_rows:
        return np.zeros((0, len(features)), np.float32), np.array([], dtype=object), np.zeros((0, 1), np.float32)
    columns, vocab_keys, vocab_codes = [], [], []
    for f in features:
        if f.dtype != CATEGORY:
            columns.append(pc.fill_null(rows[f.column], f.default).to_numpy().astype(np.float32))
            continue
        values = pc.cast(rows[f.column], pa.string())
        categories = pc.unique(values.drop_null()).sort()
        codes = pc.index_in(values, categories).to_numpy(zero_copy_only=False)
        columns.append(np.where(np.isnan(codes.astype(np.float64)), np.nan, codes).astype(np.float32))
        vocab_keys.append(vocabulary_keys(f.name, categories.to_numpy(zero_copy_only=False)))
        vocab_codes.append(np.arange(len(categories), dtype=np.float32))
    keys = np.concatenate(vocab_keys) if vocab_keys else np.array([], dtype=object)
    codes = np.concatenate(vocab_codes)[:, None] if vocab_codes else np.zeros((0, 1), np.float32)
    return np.column_stack(columns), keys, codes


def entity_keys(entity: str, rows: pa.Table) -> np.ndarray:
    """The store's key for each row: the id itself, or ``"<user_id>|<other>"`` for a pair."""
    names = ENTITY_KEYS[entity]
    if len(names) == 1:
        return rows[names[0]].to_numpy()
    parts = [pc.cast(rows[n], pa.string()) for n in names]
    return pc.binary_join_element_wise(*parts, "|").to_numpy(zero_copy_only=False).astype(object)


def _held(store: OnlineStore, entity: str, etl: Lake, source: str) -> tuple[int | None, str]:
    """How many keys the store holds for ``entity``, as its snapshot's manifest says, and which snapshot.

    (None, "") when the store has none; (None, version) when that snapshot's rows are no longer known.
    """
    meta = store.meta(entity)
    if meta is None:
        return None, ""
    day = meta.version.rsplit("/", 1)[-1]
    try:
        return etl.manifest(source, dt.date.fromisoformat(day)).rows, meta.version
    except (ValueError, DamagedStateError):
        return None, meta.version


def materialize(
    fs: FeatureSet,
    etl: Lake,
    store: OnlineStore,
    as_of: dt.date | None = None,
    force: bool = False,
    min_share: float = MIN_SHARE,
) -> list[Materialized]:
    """Write the latest snapshot on or before ``as_of`` (default: the latest) of each entity ``fs`` reads.

    Unless ``force``, refuses (before writing any entity) a snapshot that has no keys while the store holds
    the entity, or fewer than ``min_share`` of the keys the store holds.
    """
    chosen = []
    for entity, source, key_entity, features in stored(fs):
        dates = [d for d in etl.dates(source) if as_of is None or d <= as_of]
        if not dates:
            raise FeatureError(f"no {source} snapshot under {etl.root}{f' on or before {as_of}' if as_of else ''}")
        snapshot = dates[-1]
        rows = etl.manifest(source, snapshot).rows
        held, version = _held(store, entity, etl, source)
        shrinks = (held is not None and held > 0 and rows < min_share * held) or (rows == 0 and version != "")
        if shrinks and not force:
            had = f"{held:,} keys (snapshot {version})" if held is not None else f"keys of snapshot {version}"
            raise ShrinkError(
                f"the {source} snapshot of {snapshot} holds {rows:,} {entity} keys where the online store holds "
                f"{had}: materializing it would leave {entity} features missing for the rest (an ETL run over "
                f"days past the lake's data?); check the snapshot, or pass --force to load it anyway"
            )
        held_columns = {n for path in etl.files(source, snapshot, snapshot) for n in pq.read_schema(path).names}
        if missing := [f.name for f in features if f.column not in held_columns]:  # before anything is written
            raise FeatureError(
                f"the {source} snapshot of {snapshot} has no column for declared feature(s) {', '.join(missing)}: "
                "run `homefeed data etl` for that day (a changed declaration recomputes it)"
            )
        chosen.append((entity, source, key_entity, features, snapshot))
    done = []
    for entity, source, key_entity, features, snapshot in chosen:
        rows = etl.read(source, snapshot, snapshot)
        values, vocab_keys, vocab_codes = _encoded(rows, features)
        columns = tuple(f.name for f in features)
        version = f"{fs.version}/{snapshot:%Y-%m-%d}"
        ttl = (
            max((f.lag + f.ttl).total_seconds() for f in features)
            if entity == source
            else features[0].ttl.total_seconds()
        )
        if any(f.dtype == CATEGORY for f in features):  # the categories first: a vector never names a missing one
            store.write(entity + VOCAB, vocab_keys, vocab_codes, ("code",), version, replace=True)
        store.write(entity, entity_keys(key_entity, rows), values, columns, version, ttl_seconds=ttl, replace=True)
        done.append(Materialized(entity, snapshot, rows.num_rows, columns, version))
    return done
