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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from homefeed.features.definitions import (
    Feature,
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


@dataclass(frozen=True)
class _Block:
    """One stored entity's part of the matrix: where its features go, their defaults and their lag + TTL."""

    entity: str
    names: tuple[str, ...]
    where: np.ndarray  # column of each feature in the matrix
    defaults: np.ndarray  # (features x 1) float32: a number's default, NaN for a category's code
    lives_us: np.ndarray  # (features x 1) int64: lag + TTL of each feature
    flag: int | None  # the column of ``<entity>_missing``


@dataclass(frozen=True)
class _Plan:
    """What `assemble` needs of a feature set, worked out once per set (serving assembles every request)."""

    blocks: tuple[_Block, ...]
    impression: tuple[tuple[int, Feature], ...]  # declared features of the impression: (column, feature)
    context: tuple[tuple[int, Feature], ...]  # request-context features
    coded: tuple[tuple[int, str], ...]  # a snapshot's categories, stored as codes: (column, name)
    coded_sources: tuple[str, ...]  # the snapshots whose vocabularies those codes need


def _plan(fs: FeatureSet) -> _Plan:
    held = fs.__dict__.get("_assembly")
    if held is not None:
        return held
    index = {name: j for j, name in enumerate(fs.columns)}
    blocks = []
    for entity, _, _, features in stored(fs):
        blocks.append(
            _Block(
                entity,
                tuple(f.name for f in features),
                np.array([index[f.name] for f in features], np.int64),
                np.array([np.nan if is_categorical(f) else f.default for f in features], np.float32)[:, None],
                np.array([int((f.lag + f.ttl).total_seconds() * 1_000_000) for f in features], np.int64)[:, None],
                index[f"{entity}_missing"] if fs.missing_flags else None,
            )
        )
    impression = tuple((index[f.name], f) for f in fs.features if at_impression(f))
    context = tuple((index[f.name], f) for f in fs.features if not at_impression(f) and f.entity == "context")
    coded = tuple((index[f.name], f.name) for f in fs.features if is_categorical(f) and not at_impression(f))
    sources = tuple(sorted({f.source for f in fs.features if is_categorical(f) and not at_impression(f)}))
    plan = _Plan(tuple(blocks), impression, context, coded, sources)
    fs.__dict__["_assembly"] = plan  # a frozen dataclass: its __dict__ still takes a cache, as `stored` does
    return plan


def reads_impression(fs: FeatureSet) -> bool:
    """Whether ``fs`` has declared features of the impression (hydration then needs an `AtImpression`)."""
    return bool(_plan(fs).impression)


def coded_sources(fs: FeatureSet) -> tuple[str, ...]:
    """The declared snapshots whose categories ``fs`` reads as stored codes (their vocabularies map them back)."""
    return _plan(fs).coded_sources


def assemble(
    fs: FeatureSet,
    lookups: dict[str, Lookup | None],
    ts_us: np.ndarray,
    created_us: np.ndarray,
    known: AtImpression | None = None,
) -> np.ndarray:
    """The model's input matrix, (rows x ``fs.columns``) float32, from one lookup per entity, aligned to the rows.

    ``lookups[entity]`` holds, per row, that row's key's stored vector (None: the entity could not be read, every
    value missing).  A value is used while ``ts`` is before its feature's expiry (the snapshot's day, then lag +
    TTL), else the feature's default, and each entity's ``_missing`` flag says whether a fresh value was found (any
    of its features alive), as in the offline join.  Declared features of the impression are computed from
    ``known``; a category's column is NaN here (`hydrated`).
    """
    n = len(ts_us)
    plan = _plan(fs)
    out = np.empty((len(fs.columns), n), np.float32)  # filled row-major by column, returned transposed (F order)
    ts = np.asarray(ts_us, np.int64)
    for block in plan.blocks:
        lookup = lookups.get(block.entity)
        fresh = None
        if lookup is not None:
            if len(lookup.found) != n:
                raise FeatureError(f"lookup of {block.entity!r} has {len(lookup.found)} rows for {n} requests")
            if lookup.found.any():
                valid_from = (snapshot_day(lookup.version) - _EPOCH).days * DAY_US + DAY_US
                alive = ts[None, :] < valid_from + block.lives_us  # (features x rows)
                fresh = lookup.found & alive.any(axis=0)
        if fresh is None or not fresh.any():
            out[block.where] = block.defaults
            fresh = np.zeros(n, bool)
        else:
            try:
                cols = [lookup.columns.index(name) for name in block.names]
            except ValueError:
                raise FeatureError(
                    f"the online store's {block.entity!r} lacks a feature of set {fs.name!r}; materialize that set"
                ) from None
            block_values = lookup.values[:, cols].T  # (features x rows)
            use = fresh[None, :] & alive & ~np.isnan(block_values)
            out[block.where] = np.where(use, block_values, block.defaults)
        if block.flag is not None:
            out[block.flag] = ~fresh
    for j, f in plan.impression:  # a value of the impression itself: the request and the candidate give it
        if is_categorical(f):  # strings: `hydrated` carries them, the matrix a NaN
            out[j] = np.nan
            continue
        if known is None:
            raise FeatureError(
                f"declared feature {f.name!r} reads {f.source}: hydration needs the request's impression context"
            )
        value = declared_values(f, known.served_features, known.request_index, known.item_id, known.columns)
        out[j] = value.to_numpy(zero_copy_only=False)
    for j, f in plan.context:
        value = context_values(f.name, ts, created_us)
        out[j] = np.where(np.isnan(value), f.default, value)
    return out.T


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
    for j, name in _plan(fs).coded:
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


#: The impression's own columns a served model may read besides its features (the NN embeds them).
IMPRESSION_COLUMNS = ("user_id", "item_id", "country", "topic", "surface")


@dataclass(frozen=True)
class Hydrated:
    """A served batch's model inputs: the numbers as one matrix, each category as strings.

    What `hydrate`'s table holds, without building it: a GBDT reads the matrix as it is (building the table and
    reading it back took ~1.2 ms of a 500-candidate request), a model that needs the table asks for `table`.
    """

    columns: list[str]
    matrix: np.ndarray  # (rows x columns) float32; a category's column is NaN
    categories: dict[str, pa.Array]  # per categorical column: its strings, null where absent
    #: The impression's own columns (`IMPRESSION_COLUMNS`), as the dataset holds them; made only when a table is
    #: asked for.
    impression: Callable[[], dict[str, pa.Array]] | None = None

    def table(self) -> pa.Table:
        """The model's input table, as the dataset holds it (float32 numbers, categories as strings)."""
        columns = [
            self.categories[name] if name in self.categories else pa.array(self.matrix[:, j])
            for j, name in enumerate(self.columns)
        ]
        names = list(self.columns)
        for name, column in (self.impression() if self.impression is not None else {}).items():
            if name not in names:
                names.append(name)
                columns.append(column)
        return pa.Table.from_arrays(columns, names=names)


def hydrated(
    fs: FeatureSet,
    matrix: np.ndarray,
    known: AtImpression | None,
    vocab: dict[str, np.ndarray] | None = None,
    impression: Callable[[], dict[str, pa.Array]] | None = None,
) -> Hydrated:
    """`assemble`'s matrix with each category as strings (null: missing) — a snapshot's from its stored codes and
    ``vocab`` (`vocabulary`), one of the impression from ``known``."""
    strings = categories(fs, matrix, vocab or {})
    for _, f in _plan(fs).impression:
        if is_categorical(f):
            if known is None:
                raise FeatureError(
                    f"declared feature {f.name!r} reads {f.source}: hydration needs the request's context"
                )
            strings[f.name] = declared_values(
                f, known.served_features, known.request_index, known.item_id, known.columns
            )
    return Hydrated(fs.columns, matrix, strings, impression)


def hydrate(
    fs: FeatureSet, matrix: np.ndarray, known: AtImpression | None, vocab: dict[str, np.ndarray] | None = None
) -> pa.Table:
    """The model's input table, as the dataset holds it (`hydrated`, as a table)."""
    return hydrated(fs, matrix, known, vocab).table()
