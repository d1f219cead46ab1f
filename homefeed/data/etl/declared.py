"""Declared features of users, items and user x item pairs, as ETL snapshots (``[[features.declared]]``).

One output per entity (``user_declared``, ``item_declared``, ``user_item_declared``), one column per declared
feature, under the built-in outputs' contract: the snapshot of day D holds what was known at the end of D and is
valid from D + 1 00:00 UTC, so the point-in-time join, the online store and the skew check read it like any other.

- **attributes** (``users.<column>``, ``users.attributes[key]``, ``items.<column>``, ``items.content[key]``): the
  entity's latest row whose time (sign-up, creation; a row without one counts from the start) is by the end of D;
  ``raw`` as a DOUBLE, ``categorical`` as a string (the models encode it).
- **aggregations** over the entity's impressions or engagements of days D - window_days + 1 to D: ``count`` (of
  engagements, optionally of one ``action``), ``rate`` (engagements of ``action`` per impression), ``mean`` and
  ``last`` (of a column or a map key).  An entity keeps a row while an event lies in its longest window extended
  by the TTL, so a count falls to zero (not to the last day's stale value) when its events leave the window.

The SQL is DuckDB's dialect over the run's input views, transpiled for Spark like every other job.  Values a map
can hold but no row does, and ``raw`` over text that is not a number, are refused by :func:`check_declared`
before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from homefeed.config.stages import DECLARED_SOURCES, DeclaredFeature
from homefeed.data.etl.shapes import day_of, double, exact_sum
from homefeed.data.lake import register_view
from homefeed.errors import HomefeedError
from homefeed.schema import TIME_COLUMN

#: Each snapshot entity's output and keys.
DECLARED_OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "user": ("user_declared", ("user_id",)),
    "item": ("item_declared", ("item_id",)),
    "user_item": ("user_item_declared", ("user_id", "item_id")),
}


class DeclaredError(HomefeedError, ValueError):
    """A declared feature that the data cannot give: a map key no row has, a ``raw`` value that is no number."""


def snapshot_declared(declared: Iterable[DeclaredFeature]) -> tuple[DeclaredFeature, ...]:
    """The declarations the ETL computes: user, item and user_item features not known at the impression."""
    return tuple(d for d in declared if d.entity in DECLARED_OUTPUTS and not d.at_impression)


def presence_days(d: DeclaredFeature) -> int:
    """How many days of events keep an entity's row for aggregation ``d``: its window, and the TTL beyond it."""
    assert d.window_days is not None
    assert d.ttl_hours is not None
    return d.window_days + math.ceil(d.ttl_hours / 24)


def value_sql(d: DeclaredFeature, alias: str) -> str:
    """The value ``d`` reads from one row of its source table ``alias`` (a map's key reads null where absent)."""
    column = d.column
    assert column is not None
    _, map_column = DECLARED_SOURCES[d.table]
    if column != map_column:
        return f"{alias}.{column}"
    key = _quoted(d.key) if d.key is not None else _cross_key(d, alias)
    return f"CASE WHEN list_contains(map_keys({alias}.{column}), {key}) THEN {alias}.{column}[{key}] END"


def _cross_key(d: DeclaredFeature, alias: str) -> str:
    assert d.cross is not None
    return f"REPLACE({_quoted(d.cross)}, '{{item_id}}', CAST({alias}.item_id AS VARCHAR))"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _is_text(d: DeclaredFeature) -> bool:
    """Whether the source value is text (so ``raw`` casts it, checked to be numbers first)."""
    return d.table == "users" or d.column in ("topic", "surface", "country")


def output_schema(entity: str, features: list[DeclaredFeature]) -> pa.Schema:
    _, keys = DECLARED_OUTPUTS[entity]
    fields = [pa.field(k, pa.int64()) for k in keys]
    fields += [pa.field(d.name, pa.string() if d.transformation == "categorical" else pa.float64()) for d in features]
    return pa.schema(fields)


def entity_sql(entity: str, features: list[DeclaredFeature], first: int, end: int) -> str:
    """The snapshot rows (keys, ``dn``, one column per feature) of ``entity`` for every day of ``snapshot_days``.

    ``first`` and ``end`` are the day numbers of the events the run reads.
    """
    _, keys = DECLARED_OUTPUTS[entity]
    attrs = [d for d in features if not d.is_aggregation]
    aggs = [d for d in features if d.is_aggregation]
    parts: list[tuple[str, str]] = []  # (CTE name, CTE body)
    if attrs:
        parts.append(("attr", _attributes_sql(entity, keys, attrs)))
    if aggs:
        parts.append(("agg", _aggregations_sql(keys, aggs, first, end)))
        parts += [
            (f"last_{i}", _last_sql(keys, d, first, end)) for i, d in enumerate(aggs) if d.transformation == "last"
        ]
    k = ", ".join(keys)
    present = " UNION ".join(f"SELECT {k}, dn FROM {name}" for name in ("attr", "agg") if name in dict(parts))
    parts.append(("present", present))
    cols, joins = [], []
    for name, _ in parts[:-1]:
        on = " AND ".join(f"p.{c} = {name}.{c}" for c in (*keys, "dn"))
        joins.append(f"LEFT JOIN {name} ON {on}")
    for d in features:
        if not d.is_aggregation:
            cols.append(f"attr.{d.name}")
        elif d.transformation == "last":
            cols.append(f"last_{aggs.index(d)}.v AS {d.name}")
        elif d.transformation == "count":
            cols.append(f"COALESCE(agg.{d.name}, {double(0.0)}) AS {d.name}")
        else:
            cols.append(f"agg.{d.name}")
    ctes = ",\n".join(f"{name} AS ({body})" for name, body in parts)
    return (
        f"WITH {ctes}\nSELECT {', '.join(f'p.{c}' for c in keys)}, p.dn, {', '.join(cols)}\nFROM present p "
        + " ".join(joins)
    )


def _attributes_sql(entity: str, keys: tuple[str, ...], attrs: list[DeclaredFeature]) -> str:
    """Every entity whose row's time is by the end of a snapshot day, with its latest row's values."""
    table = "users" if entity == "user" else "items"
    when = TIME_COLUMN[table]
    k = ", ".join(f"t.{c}" for c in keys)
    values = []
    for d in attrs:
        value = value_sql(d, "t")
        if d.transformation == "categorical":
            values.append(f"CAST({value} AS VARCHAR) AS {d.name}")
        else:
            values.append(
                f"TRY_CAST({value} AS DOUBLE) AS {d.name}" if _is_text(d) else f"CAST({value} AS DOUBLE) AS {d.name}"
            )
    names = ", ".join(d.name for d in attrs)
    return f"""SELECT {", ".join(keys)}, dn, {names} FROM (
  SELECT {k}, d.dn, {", ".join(values)},
    ROW_NUMBER() OVER (PARTITION BY {k}, d.dn ORDER BY t.{when} DESC NULLS LAST) AS rk
  FROM {table} t JOIN snapshot_days d ON t.{when} IS NULL OR {day_of(f"t.{when}")} <= d.dn
) z WHERE rk = 1"""


def _event_filter(d: DeclaredFeature, alias: str) -> str:
    """Whether an event row of ``d``'s table counts for ``d`` (an engagement of its action)."""
    if d.table == "engagements" and d.action is not None:
        return f"{alias}.action = {_quoted(d.action)}"
    return "TRUE"


def _aggregations_sql(keys: tuple[str, ...], aggs: list[DeclaredFeature], first: int, end: int) -> str:
    """Windowed counts, rates and means per entity and snapshot day: event rows → daily sums → window sums.

    Every impression and engagement of the entity marks it present, so ``last`` values and rates with no event in
    their own window read null (their default) while the entity stays in the snapshot.
    """
    k = ", ".join(keys)
    tables = ("impressions", "engagements")
    selects = []
    for table in tables:
        cols = []
        for i, d in enumerate(aggs):
            a = b = "NULL"
            counted = _event_filter(d, "e")
            if d.transformation == "count" and d.table == table:  # of rows, or of a column's non-null values
                counted += f" AND {value_sql(d, 'e')} IS NOT NULL" if d.column is not None else ""
                a, b = f"CASE WHEN {counted} THEN 1 ELSE 0 END", "0"
            elif d.transformation == "rate":
                a = f"CASE WHEN {counted} THEN 1 ELSE 0 END" if table == "engagements" else "0"
                b = "1" if table == "impressions" else "0"
            elif d.transformation == "mean" and d.table == table:
                value = value_sql(d, "e")
                a = f"CASE WHEN {counted} THEN CAST({value} AS DOUBLE) END"
                b = f"CASE WHEN {counted} AND {value} IS NOT NULL THEN 1 ELSE 0 END"
            else:
                a, b = ("0", "0") if d.transformation != "mean" else ("NULL", "0")
            kind = "DOUBLE" if d.transformation == "mean" else "BIGINT"
            cols += [f"CAST({a} AS {kind}) AS a_{i}", f"CAST({b} AS BIGINT) AS b_{i}"]
        selects.append(
            f"SELECT {', '.join(f'e.{c}' for c in keys)}, {day_of('e.ts')} AS dn, {', '.join(cols)} "
            f"FROM {table} e WHERE {day_of('e.ts')} BETWEEN {first} AND {end}"
        )
    daily_cols = []
    for i, d in enumerate(aggs):
        a = exact_sum(f"a_{i}") if d.transformation == "mean" else f"CAST(SUM(a_{i}) AS BIGINT)"
        daily_cols += [f"{a} AS a_{i}", f"CAST(SUM(b_{i}) AS BIGINT) AS b_{i}"]
    daily = f"SELECT {k}, dn, {', '.join(daily_cols)} FROM ({' UNION ALL '.join(selects)}) ev GROUP BY {k}, dn"
    span = max(presence_days(d) for d in aggs)
    out = []
    for i, d in enumerate(aggs):
        inside = f"x.dn > d.dn - {d.window_days}"
        a, b = f"CASE WHEN {inside} THEN x.a_{i} ELSE 0 END", f"CASE WHEN {inside} THEN x.b_{i} ELSE 0 END"
        if d.transformation == "count":
            out.append(f"CAST(SUM({a}) AS DOUBLE) AS {d.name}")
        elif d.transformation == "rate":
            out.append(f"CAST(SUM({a}) AS DOUBLE) / NULLIF(CAST(SUM({b}) AS DOUBLE), {double(0.0)}) AS {d.name}")
        elif d.transformation == "mean":
            mean_a = f"CASE WHEN {inside} THEN x.a_{i} ELSE {double(0.0)} END"
            out.append(f"{exact_sum(mean_a)} / NULLIF(CAST(SUM({b}) AS DOUBLE), {double(0.0)}) AS {d.name}")
        else:
            out.append(f"CAST(SUM({b}) AS BIGINT) AS _last_{i}")  # present; the value comes from last_<i>
    grouped = ", ".join(f"x.{c}" for c in keys)
    return f"""SELECT {grouped}, d.dn, {", ".join(out)}
FROM ({daily}) x JOIN snapshot_days d ON x.dn BETWEEN d.dn - {span - 1} AND d.dn
GROUP BY {grouped}, d.dn"""


def _last_sql(keys: tuple[str, ...], d: DeclaredFeature, first: int, end: int) -> str:
    """The latest non-null value in the window: each day's latest event (ties: the larger value), then the latest
    day with one."""
    k = ", ".join(keys)
    ek = ", ".join(f"e.{c}" for c in keys)
    value = f"CAST({value_sql(d, 'e')} AS DOUBLE)"
    day = day_of("e.ts")
    per_day = f"""SELECT {k}, dn, v FROM (
    SELECT {ek}, {day} AS dn, {value} AS v,
      ROW_NUMBER() OVER (PARTITION BY {ek}, {day} ORDER BY e.ts DESC, {value} DESC) AS r
    FROM {d.table} e
    WHERE {day} BETWEEN {first} AND {end} AND {_event_filter(d, "e")} AND {value} IS NOT NULL
  ) t WHERE r = 1"""
    xk = ", ".join(f"x.{c}" for c in keys)
    return f"""SELECT {k}, dn, v FROM (
  SELECT {xk}, d.dn, x.v, ROW_NUMBER() OVER (PARTITION BY {xk}, d.dn ORDER BY x.dn DESC) AS rk
  FROM ({per_day}) x JOIN snapshot_days d ON x.dn BETWEEN d.dn - {d.window_days - 1} AND d.dn
) z WHERE rk = 1"""


def check_declared(declared: tuple[DeclaredFeature, ...], inputs: dict[str, list[Path]]) -> None:
    """Refuse, before anything is computed, a declaration the run's inputs cannot give.

    A key of a map that no row of the table holds (a typo gives a column of defaults otherwise), and ``raw`` over
    text with a value that is no number (say ``categorical``).  Read with DuckDB from the files the run reads,
    whichever engine computes the snapshots.
    """
    if not declared:
        return
    con = duckdb.connect()
    try:
        for d in declared:
            files = inputs.get(d.table, [])
            where = f"declared feature {d.name!r}"
            if not files:
                if not d.is_aggregation:
                    raise DeclaredError(f"{where}: the lake holds no {d.table} for {d.source}: ingest them first")
                continue
            register_view(con, "src", files)
            _, map_column = DECLARED_SOURCES[d.table]
            if d.key is not None and d.column == map_column:
                [(found,)] = con.execute(
                    f"SELECT count(*) FROM src WHERE map_contains({map_column}, ?)", [d.key]
                ).fetchall()
                if not found:
                    keys = [
                        k
                        for (k,) in con.execute(
                            f"SELECT DISTINCT unnest(map_keys({map_column})) AS k FROM src ORDER BY k LIMIT 6"
                        ).fetchall()
                    ]
                    listed = f"keys there include {', '.join(map(repr, keys[:5]))}" if keys else "no row has any key"
                    raise DeclaredError(f"{where}: no row of {d.table} has the key {d.key!r} in {map_column}; {listed}")
            if d.transformation == "raw" and _is_text(d):
                value = value_sql(d, "src")
                bad = con.execute(
                    f"SELECT {value} FROM src WHERE {value} IS NOT NULL AND TRY_CAST({value} AS DOUBLE) IS NULL LIMIT 1"
                ).fetchall()
                if bad:
                    raise DeclaredError(
                        f"{where}: {d.source}{f'[{d.key!r}]' if d.key else ''} holds {bad[0][0]!r}, not a number: "
                        'declare it transformation = "categorical"'
                    )
    finally:
        con.close()


__all__ = [
    "DECLARED_OUTPUTS",
    "DeclaredError",
    "check_declared",
    "entity_sql",
    "output_schema",
    "presence_days",
    "snapshot_declared",
    "value_sql",
]
