"""Point-in-time joins: each impression gets every feature's value as it was known at the impression.

A value is known from its snapshot's ``valid_from`` plus the feature's availability
lag, and is used until its TTL runs out; DuckDB's ASOF join picks, per impression
and source, the latest snapshot known at ``ts`` — never one computed later. The
same rule serves the skew check (recomputing what serving should have seen) and
the dataset builder. The join is a DuckDB query over the ETL's Parquet files, so
ten million impressions stream through it without being held in Python.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from homefeed.data.etl.engines import Engine
from homefeed.data.lake import Lake, register_view
from homefeed.features.definitions import (
    CATEGORY,
    CONTEXT_SQL,
    ENTITY_KEYS,
    ENTITY_SOURCE,
    Feature,
    FeatureError,
    FeatureSet,
    declared_sources,
    declared_sql,
    is_declared,
)
from homefeed.schema import DAY_US, TABLES

#: What an impression table must hold for the join (more columns pass through).
REQUIRED = ("request_id", "ts", "user_id", "item_id")


@dataclass(frozen=True)
class _Source:
    entity: str
    name: str  # the ETL output
    features: tuple[Feature, ...]
    group: int | None = None  # a declared snapshot's features sharing one lag and TTL

    @property
    def alias(self) -> str:
        return f"src_{self.entity}" if self.group is None else f"src_{self.name}_{self.group}"


def _sources(fs: FeatureSet) -> list[_Source]:
    out = []
    for entity, name in ENTITY_SOURCE.items():
        used = tuple(f for f in fs.features if f.entity == entity and f.source == name)
        if used:
            lags = {f.lag for f in used} | {f.ttl for f in used}
            if len({f.lag for f in used}) > 1 or len({f.ttl for f in used}) > 1:
                raise FeatureError(f"features of {name} must share one lag and TTL (found {sorted(map(str, lags))})")
            out.append(_Source(entity, name, used))
    return out


def _declared(fs: FeatureSet) -> list[_Source]:
    """The declared snapshots ``fs`` reads, one join per (snapshot, lag, TTL): each feature keeps its own."""
    out = []
    for entity, name, features in declared_sources(fs):
        timings = sorted({(f.lag, f.ttl) for f in features})
        for group, timing in enumerate(timings):
            out.append(_Source(entity, name, tuple(f for f in features if (f.lag, f.ttl) == timing), group))
    return out


def _seconds(td) -> int:  # noqa: ANN001 - a timedelta
    return int(td.total_seconds())


def source_files(
    fs: FeatureSet, etl: Lake, lake: Lake, start: dt.date | None = None, end: dt.date | None = None
) -> dict[str, list[Path]]:
    """The files a join of impressions with days in [start, end] reads, by view: each ETL source, then the items.

    A snapshot of day D is valid from D + 1 00:00 UTC and known ``lag`` later, so only the days from
    ``start - 1 - ceil((lag + ttl) / 1 day)`` to ``end - 1`` can give a fresh value to one of those
    impressions; leaving the others out changes no row, and keeps a snapshot computed after ``end`` from
    changing what a dataset says it read.  Items are those created by ``end``.  Unbounded: every file.
    """
    out: dict[str, list[Path]] = {}
    reads: dict[str, dt.timedelta] = {}
    for src in [*_sources(fs), *_declared(fs)]:
        reads[src.name] = max(reads.get(src.name, dt.timedelta(0)), src.features[0].lag + src.features[0].ttl)
    for name, reach in reads.items():
        first = last = None
        if start is not None:
            first = start - dt.timedelta(days=1 + math.ceil(reach / dt.timedelta(days=1)))
        if end is not None:
            last = end - dt.timedelta(days=1)
        files = etl.files(name, first, last)
        if not files:
            days = f" from {first or 'the start'} to {last or 'the end'}" if (first or last) else ""
            raise FeatureError(f"no {name} snapshots{days} under {etl.root}: run `homefeed data etl` first")
        _check_declared_columns(name, files, {f.column for s in _declared(fs) if s.name == name for f in s.features})
        out[name] = files
    items = lake.files("items", None, end)
    if not items:
        raise FeatureError(f"no items in the lake at {lake.root}: ingest items first")
    out["feature_items"] = items
    return out


def _check_declared_columns(name: str, files: list[Path], wanted: set[str]) -> None:
    """A declared snapshot computed before a feature was declared lacks its column: say so, not a binder error."""
    for path in files if wanted else []:
        if missing := sorted(wanted - set(pq.read_schema(path).names)):
            raise FeatureError(
                f"the {name} snapshot {path.parent.name} has no column for declared feature(s) {', '.join(missing)}: "
                "it was computed before they were declared; run `homefeed data etl` over those days "
                "(a changed declaration recomputes them)"
            )


def register_sources(
    con: duckdb.DuckDBPyConnection,
    fs: FeatureSet,
    etl: Lake,
    lake: Lake,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> None:
    """Views over the ETL snapshots the set reads and over the lake's items (topic, creator, creation time).

    ``start`` and ``end`` (the impressions' days) limit the views to the files :func:`source_files` names.
    """
    register_files(con, source_files(fs, etl, lake, start, end))


def register_files(con: duckdb.DuckDBPyConnection, sources: dict[str, list[Path]]) -> None:
    """The views of :func:`register_sources` over files already chosen (a dataset build registers what it hashed)."""
    con.execute("SET TimeZone = 'UTC'")
    for name, files in sources.items():
        register_view(con, name, files, "item_id, topic, creator_id, created_at" if name == "feature_items" else "*")


def _context(f: Feature) -> str:
    """Request-context features, in arithmetic both engines share (the serving path's twin is `context_values`);
    declared ones read the impression's own columns (`declared_sql`; its serving twin is `declared_values`)."""
    if is_declared(f):
        return declared_sql(f)
    return f"CAST(COALESCE({CONTEXT_SQL[f.name]}, {f.default!r}) AS FLOAT) AS {f.name}"


def query(
    fs: FeatureSet, impressions: str = "impressions", keep: tuple[str, ...] | None = None, portable: bool = False
) -> str:
    """SQL giving ``impressions``'s rows, their item's topic and creator, and every feature of ``fs``.

    ``keep`` names the impression columns to pass through (default: all of them; DuckDB only).
    ``portable`` replaces DuckDB's ASOF join by equi-joins any engine runs (Spark, after sqlglot):
    snapshots are daily and valid from midnight, so the latest one known at ``ts`` is valid from
    midnight of ``ts - lag``, or a day before that one if that row is missing, and so on while the
    TTL allows — one LEFT JOIN per candidate day, first fresh match wins.  Both forms give the same
    rows (tested); ASOF is the faster on DuckDB.
    """
    if keep is None and portable:
        raise FeatureError("a portable point-in-time join needs the impression columns to keep")
    hidden = "i.* EXCLUDE (_topic, _creator_id, _created_at)"
    passthrough = hidden if keep is None else ", ".join(f"i.{c}" for c in keep)
    base = (
        f"SELECT imp.*, it.topic AS _topic, it.creator_id AS _creator_id, it.created_at AS _created_at "
        f"FROM {impressions} imp LEFT JOIN feature_items it ON imp.item_id = it.item_id"
    )
    joins, cols = [], []
    for src in _sources(fs):
        picked = _portable(src, joins) if portable else _asof(src, joins)
        for f in src.features:
            cases = " ".join(f"WHEN {fresh} THEN COALESCE({a}.{f.column}, {f.default!r})" for a, fresh in picked)
            cols.append(f"CAST(CASE {cases} ELSE {f.default!r} END AS FLOAT) AS {f.name}")
        if fs.missing_flags:
            any_fresh = " OR ".join(fresh for _, fresh in picked)
            cols.append(f"CAST(CASE WHEN {any_fresh} THEN 0 ELSE 1 END AS TINYINT) AS {src.entity}_missing")
    cols += _declared_columns(fs, joins, portable)
    cols += [_context(f) for f in fs.features if f.entity == "context" or is_declared(f)]
    order = [*(f.name for f in fs.features), *fs.flags]
    select = {c.rsplit(" AS ", 1)[1]: c for c in cols}
    return (
        f"SELECT {passthrough}, i._topic AS topic, i._creator_id AS creator_id, "
        f"{', '.join(select[name] for name in order)}\nFROM ({base}) i\n" + "\n".join(joins)
    )


def _declared_columns(fs: FeatureSet, joins: list[str], portable: bool) -> list[str]:
    """The declared snapshots' features, by the built-in sources' rule, and one ``<snapshot>_missing`` flag each:
    set when no join of the snapshot found a fresh row.  A category stays a string, null where absent."""
    cols: list[str] = []
    fresh_by_name: dict[str, list[str]] = {}
    for src in _declared(fs):
        picked = _portable(src, joins) if portable else _asof(src, joins)
        fresh_by_name.setdefault(src.name, []).extend(fresh for _, fresh in picked)
        for f in src.features:
            if f.dtype == CATEGORY:
                cases = " ".join(f"WHEN {fresh} THEN {a}.{f.column}" for a, fresh in picked)
                cols.append(f"CAST(CASE {cases} ELSE NULL END AS VARCHAR) AS {f.name}")
            else:
                cases = " ".join(f"WHEN {fresh} THEN COALESCE({a}.{f.column}, {f.default!r})" for a, fresh in picked)
                cols.append(f"CAST(CASE {cases} ELSE {f.default!r} END AS FLOAT) AS {f.name}")
    if fs.missing_flags:
        for name, fresh in fresh_by_name.items():
            cols.append(f"CAST(CASE WHEN {' OR '.join(fresh)} THEN 0 ELSE 1 END AS TINYINT) AS {name}_missing")
    return cols


def _on(src: _Source, alias: str) -> str:
    return " AND ".join(f"i.{_impression_key(k)} = {alias}.{k}" for k in ENTITY_KEYS[src.entity])


def _asof(src: _Source, joins: list[str]) -> list[tuple[str, str]]:
    """One ASOF join: the latest snapshot known at ``ts``; fresh while younger than the TTL."""
    lag, ttl = _seconds(src.features[0].lag), _seconds(src.features[0].ttl)
    a = src.alias
    picked = ", ".join(f.column for f in src.features)
    joins.append(
        f"ASOF LEFT JOIN (SELECT {', '.join(ENTITY_KEYS[src.entity])}, valid_from + INTERVAL {lag} SECOND AS known_at, "
        f"{picked} FROM {src.name}) {a} ON {_on(src, a)} AND i.ts >= {a}.known_at"
    )
    return [(a, f"({a}.known_at IS NOT NULL AND i.ts < {a}.known_at + INTERVAL {ttl} SECOND)")]


def _portable(src: _Source, joins: list[str]) -> list[tuple[str, str]]:
    """Equi-joins on each candidate snapshot day, newest first, as many as the TTL can reach."""
    lag, ttl = _seconds(src.features[0].lag), _seconds(src.features[0].ttl)
    picked = ", ".join(f.column for f in src.features)
    out = []
    for back in range(-(-ttl // 86_400)):  # candidate valid_from: midnight of ts - lag, then each day the TTL reaches
        a = f"{src.alias}_{back}"
        valid = f"(EPOCH_US(i.ts) - {lag * 1_000_000}) // {DAY_US} - {back}"  # day number of that midnight
        joins.append(
            f"LEFT JOIN (SELECT {', '.join(ENTITY_KEYS[src.entity])}, EPOCH_US(valid_from) // {DAY_US} AS valid_day, "
            f"EPOCH_US(valid_from) AS valid_us, {picked} FROM {src.name}) {a} "
            f"ON {_on(src, a)} AND {a}.valid_day = {valid}"
        )
        known = f"({a}.valid_us + {lag * 1_000_000})"
        out.append(
            (
                a,
                f"({a}.valid_day IS NOT NULL AND EPOCH_US(i.ts) >= {known}"
                f" AND EPOCH_US(i.ts) < {known} + {ttl * 1_000_000})",
            )
        )
    return out


def _impression_key(key: str) -> str:
    return {"topic": "_topic", "creator_id": "_creator_id"}.get(key, key)


def join_frame(
    fs: FeatureSet, etl: Lake, lake: Lake, impressions: duckdb.DuckDBPyRelation | object, con: duckdb.DuckDBPyConnection
) -> duckdb.DuckDBPyRelation:
    """The point-in-time join of an in-memory impressions table (Arrow or a relation) as a DuckDB relation."""
    register_sources(con, fs, etl, lake)
    con.register("pit_impressions", impressions)
    missing = [c for c in REQUIRED if c not in con.sql("SELECT * FROM pit_impressions LIMIT 0").columns]
    if missing:
        raise FeatureError(f"impressions lack column(s) {', '.join(missing)} needed for the point-in-time join")
    return con.sql(query(fs, "pit_impressions"))


def write_joined(
    fs: FeatureSet,
    etl: Lake,
    lake: Lake,
    first: dt.date,
    last: dt.date,
    out: Path,
    engine: Engine,
    chunk_days: int = 7,
) -> list[Path]:
    """Join the lake's impressions of days [first, last] and write them to Parquet under ``out``, on any engine.

    Impressions go a week at a time, each chunk against only the snapshots it can
    read, so the join's hash tables stay a few days deep and memory stays flat
    however long the range (10M impressions: 3.4 GiB, against 19 GiB for one
    ASOF join over a month).  The portable form runs on both engines (and is the
    faster one on DuckDB at this size); Spark gets it through sqlglot.
    """
    days = [d for d in lake.dates("impressions") if first <= d <= last]
    if not days:
        raise FeatureError(f"no impressions in the lake from {first} to {last}")
    keep = tuple(TABLES["impressions"].names)
    written = []
    for i in range(0, len(days), chunk_days):
        a, b = days[i], days[min(i + chunk_days, len(days)) - 1]
        for name, files in source_files(fs, etl, lake, a, b).items():
            engine.register(name, files)
        engine.register("impressions", lake.files("impressions", a, b))
        target = out / f"days={a:%Y-%m-%d}"
        engine.export(query(fs, "impressions", keep=keep, portable=True), target, partition_by=None)
        written.append(target)
    return written
