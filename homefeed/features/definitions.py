"""Feature definitions: every feature declared once — entity, source, type, default, lag, version — in named sets.

The catalogue is generated from the ETL's declared outputs (:mod:`homefeed.data.etl.jobs`),
so a column added to a job becomes a feature with the same name everywhere:
offline joins, the online store, the skew check and the model's inputs.
Request-context features (the item's age at the request, the hour) are computed
from the impression itself and are exact at any time.

A feature whose value is missing takes its declared default, and each source has
an ``<entity>_missing`` flag (no snapshot for this user / item / pair), so a
cold-start item or a late ETL run is visible to the model and to the monitors
instead of looking like an item nobody saved.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.config import EtlSettings, FeatureSettings
from homefeed.config.stages import DECLARED_MAP, DeclaredFeature
from homefeed.data.etl.declared import DECLARED_OUTPUTS, snapshot_declared
from homefeed.data.etl.jobs import Params, steps
from homefeed.data.open_bandit import logged_item_id_sql, logged_item_ids
from homefeed.errors import HomefeedError
from homefeed.schema import DAY_US

Entity = Literal["user", "item", "creator", "user_topic", "user_creator", "user_item", "context"]
#: The dtype of a categorical feature's column: its value as a string (null where missing) in the dataset, the
#: offline join and the hydrated serving table; the models encode it (:mod:`homefeed.train.categories`).
CATEGORY = "string"

#: How each entity's source is keyed, and which impression columns (after joining the item) key it.
ENTITY_KEYS: dict[str, tuple[str, ...]] = {
    "user": ("user_id",),
    "item": ("item_id",),
    "creator": ("creator_id",),
    "user_topic": ("user_id", "topic"),
    "user_creator": ("user_id", "creator_id"),
    "user_item": ("user_id", "item_id"),  # declared features only
}
#: The ETL output each entity's features come from.
ENTITY_SOURCE = {
    "user": "user_profile",
    "item": "item_stats",
    "creator": "creator_stats",
    "user_topic": "user_topic",
    "user_creator": "user_creator",
}


class FeatureError(HomefeedError, ValueError):
    """A feature or feature set that does not exist or is declared wrongly."""


@dataclass(frozen=True)
class Feature:
    name: str
    entity: Entity
    source: str  # an ETL output, or "request" for context features
    column: str  # the source's column (or the context expression's name)
    description: str
    dtype: str = "float32"
    default: float = 0.0
    lag: dt.timedelta = dt.timedelta(hours=1)  # how long after ``valid_from`` the value can be read
    ttl: dt.timedelta = dt.timedelta(hours=36)  # a value older than this is missing, offline and online
    version: int = 1
    definition: str = ""  # a declared snapshot feature's declaration (what its ETL column computes), as JSON


@dataclass(frozen=True)
class FeatureSet:
    name: str
    features: tuple[Feature, ...]
    missing_flags: bool = True

    # The set is immutable, so what is derived from it is computed once (serving asks for it on every request);
    # the properties hand out fresh lists, so no caller can change the cached ones.

    @cached_property
    def version(self) -> str:
        """Changes whenever any feature's definition does: a dataset or model names the exact set it used."""
        payload = json.dumps([_identity(f) for f in self.features], sort_keys=True, default=str)
        return f"{self.name}@{hashlib.sha256(payload.encode()).hexdigest()[:10]}"

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def flags(self) -> list[str]:
        """The ``<entity>_missing`` columns this set adds, one per joined source."""
        return list(self._flags)

    @property
    def columns(self) -> list[str]:
        """Every model input column, in a fixed order."""
        return list(self._columns)

    @cached_property
    def _flags(self) -> tuple[str, ...]:
        if not self.missing_flags:
            return ()
        built_in = [f"{e}_missing" for e, s in ENTITY_SOURCE.items() if any(f.source == s for f in self.features)]
        return (*built_in, *(f"{source}_missing" for _, source, _ in declared_sources(self)))

    @cached_property
    def _columns(self) -> tuple[str, ...]:
        return (*self.names, *self._flags)


def _identity(f: Feature) -> dict:
    d = asdict(f)
    d.pop("description")
    if not d["definition"]:  # built-in features keep the identity (and sets their version) they always had
        d.pop("definition")
    return d


_ACTION_WORDS = {
    "closeup": "closeups",
    "click": "clicks",
    "save": "saves",
    "hide": "hides",
    "report": "reports",
    "impressions": "impressions",
    "exposure": "position-normalized exposure (impressions weighted by the slot's examination)",
    "requests": "feed requests",
    "active_days": "days with a visit",
    "items": "distinct items shown",
    "negatives": "hides and reports",
}


def _describe(entity: str, column: str) -> str:
    whose = {"item": "the item", "creator": "the creator's items", "user": "the user"}.get(entity, "")
    if column == "age_days":
        return "days since the item was created, at the snapshot"
    if column == "tenure_days":
        return "days since the user signed up, at the snapshot"
    if column == "positive_share":
        return f"share of the user's decayed positive engagements that went to this {entity.split('_')[1]}"
    if column == "affinity":
        return "decayed positive engagements per decayed impression, smoothed towards the user's own rate"
    if column.endswith("_decayed"):
        what = column.removesuffix("_decayed")
        return f"{what} of this user with this {entity.split('_')[1]}, exponentially decayed"
    for stem, words in _ACTION_WORDS.items():
        if column.startswith(f"{stem}_rate_"):
            days = column.removeprefix(f"{stem}_rate_").removesuffix("d")
            return f"{words} per exposure of {whose} over {days} day(s), smoothed towards the global rate"
        days = column.removeprefix(f"{stem}_").removesuffix("d")
        if column.startswith(f"{stem}_") and days.isdigit():
            return f"{words} of {whose} over the last {days} day(s)"
    return column.replace("_", " ")


def catalogue(etl: EtlSettings, settings: FeatureSettings | None = None) -> dict[str, Feature]:
    """Every feature the ETL's outputs (as configured) and the request context provide, by name."""
    settings = settings or FeatureSettings()
    lag, ttl = dt.timedelta(minutes=settings.lag_minutes), dt.timedelta(hours=settings.ttl_hours)
    probe = Params.from_settings(etl, dt.date(2000, 1, 1), dt.date(2000, 1, 1))
    outputs = {s.name: s for s in steps(probe) if s.is_output}
    found: dict[str, Feature] = {}
    for entity, source in ENTITY_SOURCE.items():
        step = outputs[source]
        assert step.schema is not None
        for f in step.schema:
            if f.name in ENTITY_KEYS[entity] or f.name in ("creator_id", "topic"):
                continue
            name = f"{entity}_{f.name}"
            found[name] = Feature(name, entity, source, f.name, _describe(entity, f.name), lag=lag, ttl=ttl)  # type: ignore[arg-type]
    for name, description in CONTEXT.items():
        found[name] = Feature(name, "context", "request", name, description, lag=dt.timedelta(0), ttl=dt.timedelta(0))
    snapshot = snapshot_declared(settings.declared)
    for d in settings.declared:
        if d.name in found:
            raise FeatureError(f"declared feature {d.name!r}: a built-in feature has that name")
        if d in snapshot:
            found[d.name] = _snapshot_feature(d, settings)
            continue
        found[d.name] = _at_impression(d)
    return found


def _at_impression(d: DeclaredFeature) -> Feature:
    """A declared feature the impression itself carries: a context value, or the user x item cross.

    The column read is ``[key]`` for a key of the map (``[prefix{item_id}suffix]`` for the cross: the key named by
    the shown item), ``<reduction>`` for a reduction over the map's values, else the impression column itself.
    """
    if not d.at_impression:
        raise FeatureError(f"declared feature {d.name!r}: {d.entity} {d.transformation} features are not built yet")
    _, _, column = d.source.partition(".")
    categorical = d.transformation == "categorical"
    if categorical and column not in CATEGORY_COLUMNS:
        raise FeatureError(
            f"declared feature {d.name!r}: a category is read from "
            f"{', '.join(f'impressions.{c}' for c in CATEGORY_COLUMNS)}, not {d.source}"
            f"{f'[{d.key!r}]' if d.key else ''}: a number's text differs between engines, so declare it raw"
        )
    if not categorical and column in TEXT_COLUMNS:
        raise FeatureError(f"declared feature {d.name!r}: {d.source} is text, not a number: declare it categorical")
    if d.cross is not None:
        what = f"[{d.cross}]"
    else:
        what = f"[{d.key}]" if d.key is not None else f"<{d.transformation}>" if column == DECLARED_MAP else column
    description = d.description or _declared_description(d.source, d.key, d.transformation, d.cross)
    return Feature(
        d.name,
        d.entity,  # type: ignore[arg-type]
        d.source,
        what,
        description,
        dtype=CATEGORY if categorical else "float32",
        default=d.default,
        lag=dt.timedelta(0),
        ttl=dt.timedelta(0),
    )


#: The impression columns a declared category may read: strings and integers, whose text every engine agrees on.
CATEGORY_COLUMNS = ("surface", "country", "position")
#: The impression columns that hold text: a category, never a number.
TEXT_COLUMNS = ("surface", "country")


#: Columns a ``mean`` or ``last`` can average or pick: numbers (a map's values are).
_NUMBER_COLUMNS = {"position", "score", "propensity", "dwell", "served_features"}


def _snapshot_feature(d: DeclaredFeature, settings: FeatureSettings) -> Feature:
    """A declared user, item or user_item feature, read from its entity's ``<entity>_declared`` ETL snapshot."""
    if d.transformation == "categorical" and d.table == "items" and d.column == "content":
        raise FeatureError(
            f"declared feature {d.name!r}: items.content holds numbers, whose text differs between engines: "
            "declare it raw"
        )
    if d.transformation in ("mean", "last") and d.column not in _NUMBER_COLUMNS:
        raise FeatureError(
            f"declared feature {d.name!r}: {d.transformation} reads a number; {d.source} is not one (numbers: "
            "impressions.position, .score, .propensity, a key of impressions.served_features, engagements.dwell)"
        )
    lag = settings.lag_minutes if d.lag_minutes is None else d.lag_minutes
    ttl = d.ttl_hours or settings.ttl_hours
    source, _ = DECLARED_OUTPUTS[d.entity]
    return Feature(
        d.name,
        d.entity,  # type: ignore[arg-type]
        source,
        d.name,
        d.description or _snapshot_description(d),
        dtype=CATEGORY if d.transformation == "categorical" else "float32",
        default=d.default,
        lag=dt.timedelta(minutes=lag),
        ttl=dt.timedelta(hours=ttl),
        definition=d.model_dump_json(exclude={"description", "default", "lag_minutes", "ttl_hours"}),
    )


def _snapshot_description(d: DeclaredFeature) -> str:
    what = d.source + (f"[{d.key!r}]" if d.key else "") + (f"[{d.cross!r}]" if d.cross else "")
    if not d.is_aggregation:
        kind = "as a category" if d.transformation == "categorical" else "as a number"
        return f"{what} {kind}, from the {d.entity}'s latest row (declared)"
    whose = {"user": "the user's", "item": "the item's", "user_item": "this user's with this item's"}[d.entity]
    of = f" {d.action}" if d.action else ""
    days = f"over {d.window_days} day(s)"
    if d.transformation == "count":
        return f"{whose}{of} {d.table} {days} (declared)"
    if d.transformation == "rate":
        return f"{whose} {d.action}s per impression {days} (declared)"
    return f"the {'mean' if d.transformation == 'mean' else 'latest'} {what} of {whose}{of} {d.table} {days} (declared)"


def is_snapshot_declared(f: Feature) -> bool:
    """Whether ``f`` was declared in the project file and comes from an ``<entity>_declared`` ETL snapshot."""
    return any(f.source == source for source, _ in DECLARED_OUTPUTS.values())


def declared_sources(fs: FeatureSet) -> list[tuple[str, str, tuple[Feature, ...]]]:
    """(entity, ETL output, features) of each declared snapshot ``fs`` reads, in entity order.

    Each is also the online store's entity for those features, with ``<output>_missing`` as its flag.
    """
    out = []
    for entity, (source, _) in DECLARED_OUTPUTS.items():
        used = tuple(f for f in fs.features if f.source == source)
        if used:
            out.append((entity, source, used))
    return out


def _declared_description(source: str, key: str | None, transformation: str, cross: str | None = None) -> str:
    if cross is not None:
        return f"{source}[{cross!r}], the key named by the shown item, as logged with the impression (declared)"
    if transformation == "categorical":
        return f"{source} as a category, as logged with the impression (declared)"
    if key is not None:
        return f"{source}[{key!r}], as logged with the impression (declared)"
    if transformation == "raw":
        return f"{source}, as logged with the impression (declared)"
    what = {"count_nonzero": "how many values are non-zero", "sum": "the sum of the values", "max": "the largest value"}
    return f"{what[transformation]} of {source}, as logged with the impression (declared)"


def is_declared(f: Feature) -> bool:
    """Whether ``f`` was declared in the project file from the impression's own columns."""
    return f.source.startswith("impressions.")


def at_impression(f: Feature) -> bool:
    """Whether ``f`` is read from the impression's own row (no snapshot, no lag): the point-in-time join computes it
    from the row (`declared_sql`), serving from the request and the candidate (`declared_values`)."""
    return is_declared(f) and f.ttl == dt.timedelta(0)


def is_categorical(f: Feature) -> bool:
    """Whether ``f``'s column holds a category (a string, null where missing) rather than a number."""
    return f.dtype == CATEGORY


def declared_sql(f: Feature) -> str:
    """A declared feature as SQL over the joined impression ``i``, in DuckDB's dialect, which sqlglot writes as Spark's.

    A number takes its default where the value is absent; a category stays null there (the models' shared bucket).
    Every function here means the same on both engines once transpiled (``array_length`` → ``SIZE``, ``list_max`` →
    ``ARRAY_MAX``; ``list_sum`` by the Spark engine's own rewrite); a null map is tested first because Spark's
    ``SIZE(NULL)`` is -1 outside ANSI mode.  Tested: both engines write the same values.
    """
    values = f"map_values(i.{DECLARED_MAP})"
    if f.column.startswith("["):
        value = f"i.{DECLARED_MAP}[{declared_key_sql(f)}]"
    elif f.column.startswith("<"):
        value = {
            "count_nonzero": (
                f"CASE WHEN i.{DECLARED_MAP} IS NOT NULL THEN array_length(list_filter({values}, lambda x: x <> 0)) END"
            ),
            "sum": f"list_sum({values})",
            "max": f"list_max({values})",
        }[f.column[1:-1]]
    else:
        value = f"i.{f.column}"
    if is_categorical(f):
        return f"CAST({value} AS VARCHAR) AS {f.name}"
    return f"CAST(COALESCE({value}, {f.default!r}) AS FLOAT) AS {f.name}"


def declared_key_sql(f: Feature) -> str:
    """The map key a declared ``[key]`` feature reads, as SQL over the impression ``i``: the key itself, or for the
    cross the key named by the shown item (its id as its own logs name it, `logged_item_id_sql`)."""
    key = f.column[1:-1]
    if "{item_id}" not in key:
        return _quoted(key)
    prefix, _, suffix = key.partition("{item_id}")
    return f"CONCAT({_quoted(prefix)}, CAST({logged_item_id_sql('i.item_id')} AS VARCHAR), {_quoted(suffix)})"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: Impression columns a served request cannot give a model: the policy decides them after the model has scored.
DECIDED_AFTER_SCORING = ("position", "score", "propensity")


def declared_values(
    f: Feature, served: pa.Array | None, request_index: np.ndarray, item_id: np.ndarray, columns: dict[str, pa.Array]
) -> pa.Array:
    """... and with Arrow for the serving path, with the SQL's arithmetic: one value per row.

    ``served`` holds each *request*'s ``served_features`` map (its context features; None: no request carried
    any) and ``request_index`` each row's request, so a map is read once per request however many candidates it
    has; ``item_id`` is each row's candidate, ``columns`` the impression columns a request knows (surface,
    country), per row.  A number comes back as float32 with the default where absent, a category as a string
    (null where absent).
    """
    n = len(item_id)
    if f.column.startswith(("[", "<")):
        value = _map_value(f, served, np.asarray(request_index, np.int64), item_id)
    elif f.column in columns:
        value = columns[f.column]
    elif f.column in DECIDED_AFTER_SCORING:
        raise FeatureError(
            f"declared feature {f.name!r} reads {f.source}, which the policy decides after the model has scored: "
            "a model using it cannot be served"
        )
    else:
        raise FeatureError(f"declared feature {f.name!r} reads {f.source}, which a served request does not carry")
    if len(value) != n:
        raise FeatureError(f"declared feature {f.name!r}: {len(value)} values for {n} rows")
    if is_categorical(f):
        return pc.cast(value, pa.string())
    return pc.fill_null(pc.cast(value, pa.float32()), pa.scalar(f.default, pa.float32()))


def _map_value(f: Feature, served: pa.Array | None, ri: np.ndarray, item_id: np.ndarray) -> pa.Array:
    """A key's value (the cross's: the key named by each row's item), or a reduction over the values, per row."""
    n = len(ri)
    if served is None:
        return pa.nulls(n, pa.float64())
    m = len(served)
    if n and (ri.min() < 0 or ri.max() >= m):
        raise FeatureError(f"declared feature {f.name!r}: a row's request is not among the {m} requests' maps")
    served = served.cast(pa.map_(pa.string(), pa.float64()))
    offsets = served.offsets.to_numpy()
    parent = np.repeat(np.arange(m), np.diff(offsets))  # each entry's request (list_parent_indices aborts on maps)
    keys, values = served.keys, served.items
    if len(keys) != len(parent):  # a slice: its entries only
        keys, values = keys.slice(offsets[0], len(parent)), values.slice(offsets[0], len(parent))
    x = values.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls as NaN: absent, as in SQL
    present = ~np.isnan(x)
    key = f.column[1:-1]
    if f.column.startswith("[") and "{item_id}" in key:  # per row: the entry of its request named by its item
        prefix, _, suffix = key.partition("{item_id}")
        named = np.char.add(np.char.add(prefix, logged_item_ids(item_id).astype(str)), suffix)
        wanted = pc.binary_join_element_wise(pc.cast(pa.array(ri), pa.string()), pa.array(named, pa.string()), "\x1f")
        held = pc.binary_join_element_wise(pc.cast(pa.array(parent), pa.string()), keys, "\x1f")
        at = pc.index_in(wanted, value_set=held).to_numpy(zero_copy_only=False)
        hit = ~np.isnan(at)
        at = np.where(hit, at, 0).astype(np.int64)
        out = np.where(hit, x[at] if len(x) else 0.0, np.nan)
        return pa.array(np.nan_to_num(out), mask=np.isnan(out))
    if f.column.startswith("["):  # per request: its entry of this key
        match = pc.fill_null(pc.equal(keys, pa.scalar(key, pa.string())), False)
        match = np.flatnonzero(match.to_numpy(zero_copy_only=False))
        per = np.full(m, np.nan)
        per[parent[match]] = x[match]
    elif key == "count_nonzero":  # a null map: absent; otherwise how many present values are non-zero
        per = np.bincount(parent[present & (x != 0)], minlength=m).astype(np.float64)
        per[served.is_null().to_numpy(zero_copy_only=False)] = np.nan
    else:
        some = np.bincount(parent[present], minlength=m) > 0  # no value (an empty or null map): absent, as in SQL
        if key == "sum":
            per = np.bincount(parent[present], weights=x[present], minlength=m)
        else:
            per = np.full(m, -np.inf)
            np.maximum.at(per, parent[present], x[present])
        per[~some] = np.nan
    out = per[ri]
    return pa.array(np.nan_to_num(out), mask=np.isnan(out))


#: Request-context features: computed from the impression (and the item's creation time) at request time.
CONTEXT = {
    "context_item_age_hours": "hours between the item's creation and the request",
    "context_hour_of_day": "hour of the request, UTC",
    "context_day_of_week": "day of the week of the request (0 = Sunday), UTC",
}
#: The same features as SQL over the joined impression ``i`` (the point-in-time join, both engines; Spark numbers
#: weekdays from 1, hence the arithmetic) ...
CONTEXT_SQL = {
    "context_item_age_hours": "(EPOCH_US(i.ts) - EPOCH_US(i._created_at)) / 3600000000.0",
    "context_hour_of_day": "hour(i.ts)",
    "context_day_of_week": f"(EPOCH_US(i.ts) // {DAY_US} + 4) % 7",  # 1970-01-01 was a Thursday; Sunday = 0
}


def context_values(name: str, ts_us: np.ndarray, created_us: np.ndarray) -> np.ndarray:
    """... and in NumPy for the serving path, with the SQL's arithmetic (float64, then cast to float32 by callers).

    Both forms live here, side by side, so online and offline cannot drift apart; a test serves requests and
    compares the vectors with the offline join's.
    """
    ts = np.asarray(ts_us, np.int64)
    if name == "context_item_age_hours":
        return (ts - np.asarray(created_us, np.int64)).astype(np.float64) / 3600000000.0
    if name == "context_hour_of_day":
        return ((ts // 3_600_000_000) % 24).astype(np.float64)
    if name == "context_day_of_week":
        return ((ts // DAY_US + 4) % 7).astype(np.float64)
    raise FeatureError(f"unknown context feature {name!r}; expected one of {', '.join(CONTEXT)}")


def _default_set(cat: dict[str, Feature], windows: list[int]) -> list[str]:
    """About fifty features: each source's volumes and rates across the windows, the pairs' affinities."""
    long = windows[-1]
    mid = windows[len(windows) // 2] if len(windows) > 2 else long
    names = [f"item_impressions_{w}d" for w in windows] + [f"item_exposure_{mid}d"]
    names += [f"item_{a}_rate_{w}d" for a in ("closeup", "click", "save") for w in windows]
    names += [f"item_hide_rate_{w}d" for w in sorted({mid, long})] + [f"item_report_rate_{long}d", "item_age_days"]
    names += [f"creator_items_{long}d", f"creator_impressions_{long}d"]
    names += [f"creator_{a}_rate_{w}d" for a in ("closeup", "click", "save") for w in sorted({mid, long})]
    names += [f"creator_hide_rate_{long}d", f"creator_report_rate_{long}d"]
    names += [f"user_{m}_{w}d" for m in ("impressions", "requests", "active_days") for w in sorted({mid, long})]
    names += [f"user_{a}_{long}d" for a in ("closeup", "click", "save")]
    names += [f"user_negatives_{w}d" for w in sorted({mid, long})] + ["user_tenure_days"]
    for pair in ("user_topic", "user_creator"):
        names += [f"{pair}_{c}" for c in ("affinity", "positive_share", "saves_decayed", "negatives_decayed")]
    names += ["user_topic_impressions_decayed", *CONTEXT]
    names += [f.name for f in cat.values() if is_declared(f) or is_snapshot_declared(f)]  # declared to be used
    return [n for n in names if n in cat]


def feature_set(name: str, etl: EtlSettings, settings: FeatureSettings | None = None) -> FeatureSet:
    """A named set: ``default`` (built in), ``all``, or one declared under ``[features.sets]`` in the config."""
    settings = settings or FeatureSettings()
    cat = catalogue(etl, settings)
    if name == "default":
        names = _default_set(cat, list(etl.windows))
    elif name == "all":
        names = list(cat)
    elif name in settings.sets:
        names = list(settings.sets[name])
    else:
        known = ["default", "all", *settings.sets]
        raise FeatureError(f"unknown feature set {name!r}; expected one of {', '.join(known)}")
    unknown = [n for n in names if n not in cat]
    if unknown:
        raise FeatureError(
            f"feature set {name!r}: unknown feature(s) {', '.join(unknown)}; `homefeed features list --all` shows them"
        )
    if len(set(names)) != len(names):
        raise FeatureError(f"feature set {name!r}: a feature is listed twice")
    return FeatureSet(name, tuple(cat[n] for n in names), missing_flags=settings.missing_flags)


#: Every entity a feature can belong to: each is also the name of a feature group.
ENTITIES: tuple[str, ...] = ("item", "creator", "user", "user_topic", "user_creator", "user_item", "context")
#: Longest first: ``user_topic_affinity`` is ``user_topic``'s, not ``user``'s.
_BY_PREFIX = sorted(ENTITIES, key=len, reverse=True)
_GLOB = set("*?[")


def entity_of(column: str) -> str | None:
    """The entity a model input column belongs to, read from its name (``<entity>_…``), or None for another input.

    Every catalogue feature is named ``<entity>_<source column>`` and every flag ``<entity>_missing``, so the
    longest entity prefix is the feature's entity.
    """
    return next((e for e in _BY_PREFIX if column.startswith(f"{e}_")), None)


def group_columns(name: str, columns: list[str]) -> list[str]:
    """The columns of ``columns`` that the feature group ``name`` names, in their order.

    A group is an entity (``item``, ``creator``, ``user``, ``user_topic``, ``user_creator``, ``context``: all its
    features and its ``<entity>_missing`` flag), or a glob over column names (``*_28d``, ``item_ctr*``; a name
    without wildcards is one column).  A group that matches none of ``columns`` is a `FeatureError` that lists the
    groups there are.
    """
    if name in ENTITIES:
        found = [c for c in columns if entity_of(c) == name]
    else:
        found = [c for c in columns if fnmatch.fnmatchcase(c, name)]
    if not found:
        what = "entity" if name in ENTITIES else ("glob" if _GLOB & set(name) else "feature group")
        raise FeatureError(f"{what} {name!r} matches none of the {len(columns)} input columns; {_known(columns)}")
    return found


def drop_groups(names: list[str], columns: list[str]) -> tuple[list[str], list[str]]:
    """``columns`` without every group in ``names``: (the columns kept, the columns dropped), each in order.

    No group, an unknown group, or groups that together leave no column are each a `FeatureError`.
    """
    if not names:
        raise FeatureError(f"name at least one feature group to drop; {_known(columns)}")
    dropped = {c for name in names for c in group_columns(name, columns)}
    kept = [c for c in columns if c not in dropped]
    if not kept:
        groups = ", ".join(repr(n) for n in names)
        raise FeatureError(f"dropping {groups} leaves the model no input columns; {_known(columns)}")
    return kept, [c for c in columns if c in dropped]


def entity_groups(columns: list[str]) -> dict[str, int]:
    """The entity groups ``columns`` has, in `ENTITIES` order, with how many columns each holds."""
    sizes = {e: sum(entity_of(c) == e for c in columns) for e in ENTITIES}
    return {e: n for e, n in sizes.items() if n}


def _known(columns: list[str]) -> str:
    """The groups ``columns`` has, with their sizes, for an error message."""
    listed = ", ".join(f"{e} ({n})" for e, n in entity_groups(columns).items())
    return f"groups: {listed}, or a glob over feature names such as '*_7d' (`homefeed features list` shows them)"


__all__ = [
    "CATEGORY",
    "CATEGORY_COLUMNS",
    "CONTEXT",
    "CONTEXT_SQL",
    "ENTITIES",
    "ENTITY_KEYS",
    "ENTITY_SOURCE",
    "Feature",
    "FeatureError",
    "FeatureSet",
    "at_impression",
    "catalogue",
    "context_values",
    "declared_key_sql",
    "declared_sources",
    "declared_sql",
    "declared_values",
    "drop_groups",
    "entity_groups",
    "entity_of",
    "feature_set",
    "group_columns",
    "is_categorical",
    "is_declared",
    "is_snapshot_declared",
]
