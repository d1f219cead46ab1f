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

from homefeed.data.lake import Lake
from homefeed.errors import DamagedStateError
from homefeed.features.definitions import ENTITY_KEYS, ENTITY_SOURCE, FeatureError, FeatureSet
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
    for entity, source in ENTITY_SOURCE.items():
        features = [f for f in fs.features if f.entity == entity]
        if not features:
            continue
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
        chosen.append((entity, source, features, snapshot))
    done = []
    for entity, source, features, snapshot in chosen:
        rows = etl.read(source, snapshot, snapshot)
        values = (
            np.column_stack([pc.fill_null(rows[f.column], f.default).to_numpy().astype(np.float32) for f in features])
            if rows.num_rows
            else np.zeros((0, len(features)), np.float32)
        )
        columns = tuple(f.name for f in features)
        version = f"{fs.version}/{snapshot:%Y-%m-%d}"
        ttl = features[0].ttl.total_seconds()
        store.write(entity, entity_keys(entity, rows), values, columns, version, ttl_seconds=ttl, replace=True)
        done.append(Materialized(entity, snapshot, rows.num_rows, columns, version))
    return done
