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
    FeatureError,
    FeatureSet,
    at_impression,
    context_values,
    declared_values,
    is_categorical,
)
from homefeed.features.materialize import stored
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
    """When the entity's materialized values expire, in microseconds: valid from the next midnight + lag + TTL
    (of its longest-lived feature: a declared snapshot's features may each have their own)."""
    features = next(f for e, _, _, f in stored(fs) if e == entity)
    valid_from = (snapshot_day(version) - _EPOCH).days * DAY_US + DAY_US
    return valid_from + max(int((f.lag + f.ttl).total_seconds() * 1_000_000) for f in features)


def pair_keys(user_id: np.ndarray, other: pa.Array | np.ndarray) -> np.ndarray:
    """Store keys of a user x topic / creator pair, ``"<user_id>|<other>"``, as materialization writes them."""
    users = pc.cast(pa.array(np.asarray(user_id, np.int64)), pa.string())
    others = pc.cast(other if isinstance(other, pa.Array) else pa.array(other), pa.string())
    return pc.binary_join_element_wise(users, others, "|").to_numpy(zero_copy_only=False).astype(str)


def entities(fs: FeatureSet) -> list[str]:
    """The stored entities ``fs`` reads, in the join's order (declared snapshots under their own names)."""
    return [e for e, _, _, _ in stored(fs)]


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
    for entity, _, _, features in stored(fs):
        lookup = lookups.get(entity)
        if lookup is None:
            fresh = np.zeros(n, bool)
        else:
            if len(lookup.found) != n:
                raise FeatureError(f"lookup of {entity!r} has {len(lookup.found)} rows for {n} requests")
            fresh = lookup.found & (ts < expires_us(fs, entity, lookup.version)) if lookup.found.any() else lookup.found
        where = [index[f.name] for f in features]
        # a category's code, NaN (no category) where absent; a number's default
        defaults = np.array([np.nan if is_categorical(f) else f.default for f in features], np.float32)
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
            use = fresh[None, :] & ~np.isnan(block) & _alive(features, lookup.version, ts)
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


def _alive(features: list, version: str, ts: np.ndarray) -> np.ndarray:
    """(features x rows): whether each feature's own lag + TTL still holds at ``ts`` (declared ones may differ)."""
    valid_from = (snapshot_day(version) - _EPOCH).days * DAY_US + DAY_US
    until = np.array([valid_from + int((f.lag + f.ttl).total_seconds() * 1_000_000) for f in features], np.int64)
    return ts[None, :] < until[:, None]


def vocabulary(keys: np.ndarray, lookup: Lookup) -> dict[str, np.ndarray]:
    """A declared snapshot's categories, by feature: the strings indexed by the codes its vectors hold.

    ``keys`` and ``lookup`` are the ``<snapshot>_vocab`` entity's (``"<feature>=<category>"`` → code), as
    materialization wrote them.
    """
    out: dict[str, list[tuple[int, str]]] = {}
    codes = lookup.values[:, 0].astype(np.int64)
    for key, code in zip(keys.tolist(), codes.tolist(), strict=True):
        name, _, category = str(key).partition("=")
        out.setdefault(name, []).append((code, category))
    vocab = {}
    for name, pairs in out.items():
        pairs.sort()
        if [c for c, _ in pairs] != list(range(len(pairs))):
            raise FeatureError(f"the online store's categories of {name!r} are not numbered 0..n-1; rematerialize")
        vocab[name] = np.array([v for _, v in pairs], dtype=object)
    return vocab


def categories(fs: FeatureSet, matrix: np.ndarray, vocab: dict[str, np.ndarray]) -> dict[str, pa.Array]:
    """The categorical features of ``matrix`` (their codes) as the strings the models read, null where absent."""
    out = {}
    coded = {f.name for f in fs.features if is_categorical(f) and not at_impression(f)}
    for j, name in enumerate(fs.columns):
        if name not in coded:
            continue
        codes = matrix[:, j]
        known = vocab.get(name, np.array([], dtype=object))
        ok = ~np.isnan(codes)
        idx = np.where(ok, codes, 0).astype(np.int64)
        if ok.any() and idx[ok].max() >= len(known):
            raise FeatureError(f"a stored code of {name!r} has no category in the online store; rematerialize")
        values = np.empty(len(codes), dtype=object)
        values[ok] = known[idx[ok]]
        out[name] = pa.array(values, pa.string(), mask=~ok)
    return out


def hydrate(
    fs: FeatureSet, matrix: np.ndarray, known: AtImpression | None, vocab: dict[str, np.ndarray] | None = None
) -> pa.Table:
    """The model's input table, as the dataset holds it: `assemble`'s numbers as float32 columns, each category as
    strings (null: missing) — a snapshot's from its stored codes and ``vocab`` (`vocabulary`), one of the impression
    from ``known``."""
    strings = categories(fs, matrix, vocab or {})
    columns = []
    for j, name in enumerate(fs.columns):
        f = fs.features[j] if j < len(fs.features) else None
        if name in strings:
            columns.append(strings[name])
        elif f is not None and is_categorical(f):
            if known is None:
                raise FeatureError(f"declared feature {name!r} reads {f.source}: hydration needs the request's context")
            columns.append(declared_values(f, known.served_features, known.request_index, known.item_id, known.columns))
        else:
            columns.append(pa.array(matrix[:, j]))
    return pa.Table.from_arrays(columns, names=fs.columns)
