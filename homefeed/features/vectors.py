"""Feature vectors at serving time, by the point-in-time join's rules: what a model is served is what it learned.

The offline join (:mod:`homefeed.features.pit`) gives each impression, per source, the latest snapshot known at
``ts`` if it is younger than the TTL, else the feature's default, and raises ``<entity>_missing`` when nothing
fresh was found.  Online, the store holds the latest materialized snapshot (its version names the snapshot day);
this module applies the same defaults, the same TTL and the same flags to what the store or the item cache
returned, and computes the request-context features with `context_values`, the NumPy twin of the join's SQL,
and the declared features of the impression with `declared_values` from what the request carries (its context
features, surface and country) and the candidate (the user x item cross).  A test serves requests and checks
the vectors equal the offline join's for the same user, item and time.

One difference is by design: a snapshot in the store is used as soon as it is there.  Offline, a snapshot is
only known ``lag`` after midnight; a materialization that runs before then serves it early (the skew check
shows such rows).  Run materialization after the lag, as the daily pipeline does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.features.definitions import (
    ENTITY_SOURCE,
    FeatureError,
    FeatureSet,
    at_impression,
    context_values,
    declared_values,
    is_categorical,
)
from homefeed.features.store import Lookup
from homefeed.schema import DAY_US

_EPOCH = dt.date(1970, 1, 1)


def snapshot_day(version: str) -> dt.date:
    """The snapshot a materialized entity came from: its version is ``<feature set version>/<YYYY-MM-DD>``."""
    try:
        return dt.date.fromisoformat(version.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        raise FeatureError(f"online store version {version!r} does not name its snapshot day; rematerialize") from None


def expires_us(fs: FeatureSet, entity: str, version: str) -> int:
    """When the entity's materialized values expire, in microseconds: valid from the next midnight + lag + TTL."""
    feature = next(f for f in fs.features if f.entity == entity)
    valid_from = (snapshot_day(version) - _EPOCH).days * DAY_US + DAY_US
    return valid_from + int((feature.lag + feature.ttl).total_seconds() * 1_000_000)


def pair_keys(user_id: np.ndarray, other: pa.Array | np.ndarray) -> np.ndarray:
    """Store keys of a user x topic / creator pair, ``"<user_id>|<other>"``, as materialization writes them."""
    users = pc.cast(pa.array(np.asarray(user_id, np.int64)), pa.string())
    others = pc.cast(other if isinstance(other, pa.Array) else pa.array(other), pa.string())
    return pc.binary_join_element_wise(users, others, "|").to_numpy(zero_copy_only=False).astype(str)


def entities(fs: FeatureSet) -> list[str]:
    """The stored entities ``fs`` reads, in the join's order."""
    return [e for e in ENTITY_SOURCE if any(f.entity == e for f in fs.features)]


@dataclass(frozen=True)
class AtImpression:
    """What a served row knows of its impression before the policy places it, for the declared features that read
    the impression's own columns (`declared_values`, the twin of the offline join's `declared_sql`)."""

    request_index: np.ndarray  # per row: its request
    item_id: np.ndarray  # per row: the candidate
    served_features: pa.Array | None  # per request: its context features (None: no request sent any)
    columns: dict[str, pa.Array]  # per row: the impression columns a request knows (surface, country)


def assemble(
    fs: FeatureSet,
    lookups: dict[str, Lookup | None],
    ts_us: np.ndarray,
    created_us: np.ndarray,
    known: AtImpression | None = None,
) -> np.ndarray:
    """The model's input matrix, (rows x ``fs.columns``) float32, from one lookup per entity, aligned to the rows.

    ``lookups[entity]`` holds, per row, that row's key's stored vector (None: the entity could not be read, every
    value missing).  A value is used while ``ts`` is before the snapshot's expiry, else the feature's default, and
    each entity's ``_missing`` flag says whether a fresh value was found, as in the offline join.  Declared
    features of the impression are computed from ``known``; a category's column is NaN here (`hydrate`).
    """
    n = len(ts_us)
    columns = fs.columns
    out = np.empty((len(columns), n), np.float32)  # filled row-major by column, returned transposed (F order)
    index = {name: j for j, name in enumerate(columns)}
    ts = np.asarray(ts_us, np.int64)
    for entity in entities(fs):
        features = [f for f in fs.features if f.entity == entity]
        lookup = lookups.get(entity)
        if lookup is None:
            fresh = np.zeros(n, bool)
        else:
            if len(lookup.found) != n:
                raise FeatureError(f"lookup of {entity!r} has {len(lookup.found)} rows for {n} requests")
            fresh = lookup.found & (ts < expires_us(fs, entity, lookup.version)) if lookup.found.any() else lookup.found
        where = [index[f.name] for f in features]
        defaults = np.array([f.default for f in features], np.float32)
        if lookup is None or not fresh.any():
            out[where] = defaults[:, None]
        else:
            try:
                cols = [lookup.columns.index(f.name) for f in features]
            except ValueError:
                raise FeatureError(
                    f"the online store's {entity!r} lacks a feature of set {fs.name!r}; materialize that set"
                ) from None
            block = lookup.values[:, cols].T  # (features x rows)
            use = fresh[None, :] & ~np.isnan(block)
            out[where] = np.where(use, block, defaults[:, None])
        if fs.missing_flags:
            out[index[f"{entity}_missing"]] = (~fresh).astype(np.float32)
    for f in fs.features:
        if at_impression(f):  # a value of the impression itself: the request and the candidate give it
            if is_categorical(f):  # strings: the table `hydrate` builds carries them, the matrix a NaN
                out[index[f.name]] = np.nan
                continue
            if known is None:
                raise FeatureError(
                    f"declared feature {f.name!r} reads {f.source}: hydration needs the request's impression context"
                )
            value = declared_values(f, known.served_features, known.request_index, known.item_id, known.columns)
            out[index[f.name]] = value.to_numpy(zero_copy_only=False)
        elif f.entity == "context":
            value = context_values(f.name, ts, created_us)
            out[index[f.name]] = np.where(np.isnan(value), f.default, value).astype(np.float32)
    return out.T


def hydrate(fs: FeatureSet, matrix: np.ndarray, known: AtImpression | None) -> pa.Table:
    """The model's input table: `assemble`'s numbers as float32 columns, each category as strings (null: missing),
    as the dataset holds them."""
    columns = []
    for j, name in enumerate(fs.columns):
        f = fs.features[j] if j < len(fs.features) else None
        if f is not None and is_categorical(f):
            if known is None:
                raise FeatureError(f"declared feature {name!r} reads {f.source}: hydration needs the request's context")
            columns.append(declared_values(f, known.served_features, known.request_index, known.item_id, known.columns))
        else:
            columns.append(pa.array(matrix[:, j]))
    return pa.Table.from_arrays(columns, names=fs.columns)
