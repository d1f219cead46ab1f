"""Data contracts: what a row of each canonical table must be, checked per row, never per file.

Types come from :mod:`homefeed.schema`; value rules (allowed actions, positions
>= 1, propensity in (0, 1], timestamps in a sane range) are pandera checks run
on Polars (vectorized, zero-copy from Arrow).  Coercion from loosely typed
input (CSV text, JSON numbers) is done here column by column so a bad value
fails its row, not the file: every failing row gets a reason code and goes to
quarantine; nothing is dropped silently.

Speed: ingestion runs at millions of rows a second, so the clean case must cost
one vectorized pass.  Columns already of their canonical type are not touched;
each pandera check runs once over its column to find the rows that may fail,
and pandera's full validation (and its reason codes) runs on those rows only.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.schema import ACTIONS, SAFETY_LABELS, TABLES

#: Timestamps outside [EARLIEST, now + FUTURE_SLACK] are clock bugs, not events.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
FUTURE_SLACK = dt.timedelta(days=1)


def holdable_days(now: dt.datetime | None = None) -> tuple[dt.date, dt.date]:
    """The first and last day an event the contracts accept can fall on: no partition of the lake lies outside."""
    return EARLIEST.date(), ((now or dt.datetime.now(dt.UTC)) + FUTURE_SLACK).date()


def _finite(data: pa_pl.PolarsData) -> pl.LazyFrame:
    """Not NaN, not infinite (Polars orders NaN above every number, so ``ge`` alone lets it through)."""
    return data.lazyframe.select(pl.col(data.key).is_finite())


_NESTED = (pa.types.is_map, pa.types.is_list, pa.types.is_struct)


def _is_nested(t: pa.DataType) -> bool:
    return any(check(t) for check in _NESTED)


def _rules(table: str) -> dict[str, list[pa_pl.Check]]:
    """Value rules beyond type and nullability, per table and column."""
    return {
        "users": {"country": [pa_pl.Check.str_length(min_value=1)]},
        "items": {"safety_label": [pa_pl.Check.isin(SAFETY_LABELS)]},
        "impressions": {
            "request_id": [pa_pl.Check.str_length(min_value=1)],
            "position": [pa_pl.Check.ge(1)],
            "propensity": [pa_pl.Check.gt(0.0), pa_pl.Check.le(1.0)],
            "surface": [pa_pl.Check.str_length(min_value=1)],
        },
        "engagements": {
            "request_id": [pa_pl.Check.str_length(min_value=1)],
            "action": [pa_pl.Check.isin(ACTIONS)],
            "dwell": [pa_pl.Check(_finite, name="finite"), pa_pl.Check.ge(0.0)],
        },
    }[table]


def contract(table: str, now: dt.datetime | None = None) -> pa_pl.DataFrameSchema:
    """The pandera schema of the scalar columns of ``table`` (nested payload columns carry no row rules)."""
    latest = (now or dt.datetime.now(dt.UTC)) + FUTURE_SLACK
    rules = _rules(table)
    columns = {}
    for f in TABLES[table]:
        if _is_nested(f.type):
            continue
        checks = list(rules.get(f.name, []))
        if pa.types.is_timestamp(f.type):
            checks.append(pa_pl.Check.in_range(EARLIEST, latest))
        columns[f.name] = pa_pl.Column(nullable=f.nullable, checks=checks)
    return pa_pl.DataFrameSchema(columns, name=table, strict=False)


def _cast_scalar(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast a column; returns the cast values and a mask of rows whose value could not be cast."""
    try:
        return pc.cast(column, target, safe=True), np.zeros(len(column), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    # Row by row only on this failure path: the rows that do not cast become nulls and are flagged.
    values = column.to_pylist()
    out, bad = [], np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(pa.scalar(v).cast(target, safe=True).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError, ValueError):
            out.append(None)
            bad[i] = True
    return pa.array(out, target), bad


def _cast_nested(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Nested payloads (maps, lists) from Arrow, or from JSON text as CSV cells carry them."""
    if column.type.equals(target):
        return column, np.zeros(len(column), dtype=bool)
    values = column.to_pylist()
    out, bad = [], np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        try:
            if isinstance(v, str):
                v = json.loads(v) if v.strip() else None
            if isinstance(v, dict) and pa.types.is_map(target):
                v = list(v.items())
            out.append(pa.scalar(v, target).as_py() if v is not None else None)
        except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            out.append(None)
            bad[i] = True
    return pa.array(out, target), bad


def reasons_at(n: int, index: np.ndarray, labels: np.ndarray | list[str]) -> pa.Array:
    """A reason per row: ``labels[k]`` for row ``index[k]``, null (the row passes) elsewhere.

    Reasons travel as one Arrow string column, null for a clean row, so that the
    common case (nothing failed) costs nothing and the first failure of a row
    wins with one ``pc.coalesce``.
    """
    if len(index) == 0:
        return pa.nulls(n, pa.string())
    names, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    code = np.zeros(n, dtype=np.int32)
    code[index] = codes + 1
    return pa.array([None, *names.tolist()], pa.string()).take(pa.array(code))


def coerce(table: str, raw: pa.Table) -> tuple[pa.Table, pa.Array]:
    """Bring ``raw`` to the canonical schema of ``table``.

    Returns the canonical table (failed cells null) and, per row, the reason
    ``type:<column>`` / ``missing_column:<column>`` for the first column that
    could not be coerced (null where none).  A column already of its canonical
    type costs nothing.
    """
    schema = TABLES[table]
    n = raw.num_rows
    failures: list[tuple[np.ndarray, str]] = []  # (rows, reason), in column order: the first one wins
    columns = []
    for f in schema:
        if f.name not in raw.column_names:
            if not f.nullable:
                failures.append((np.ones(n, dtype=bool), f"missing_column:{f.name}"))
            columns.append(pa.nulls(n, f.type))
            continue
        column = raw.column(f.name)
        if column.type.equals(f.type):
            columns.append(column)
            continue
        column = column.combine_chunks()
        if pa.types.is_null(column.type) or column.null_count == n:  # an absent payload: no values to parse
            cast, bad = pa.nulls(n, f.type), np.zeros(n, dtype=bool)
        elif _is_nested(f.type):
            cast, bad = _cast_nested(column, f.type)
        else:
            if pa.types.is_string(column.type) and not pa.types.is_string(f.type):
                column = pc.utf8_trim_whitespace(column)
                column = pc.if_else(pc.equal(column, ""), pa.nulls(n, column.type), column)  # empty CSV cell
            cast, bad = _cast_scalar(column, f.type)
        if bad.any():
            failures.append((bad, f"type:{f.name}"))
        columns.append(cast)
    rows = pa.Table.from_arrays(columns, schema=schema)
    if not failures:
        return rows, pa.nulls(n, pa.string())
    first = np.zeros(n, dtype=np.int32)  # 1 + index of the first failure of each row, 0 for none
    for i, (bad, _) in reversed(list(enumerate(failures))):
        first[bad] = i + 1
    return rows, pa.array([None, *(reason for _, reason in failures)], pa.string()).take(pa.array(first))


def _suspects(schema: pa_pl.DataFrameSchema, rows: pa.Table) -> np.ndarray:
    """Rows that may break a rule: a superset of pandera's failures, in one cheap pass.

    Nulls come from Arrow's validity bitmaps (free when a column has none); the
    value rules are pandera's own ``Check`` objects, called on the columns that
    carry them, so there is no second copy of any rule to drift from the first.
    """
    suspect = np.zeros(rows.num_rows, dtype=bool)
    checked = [name for name, column in schema.columns.items() if column.checks]
    frame = pl.from_arrow(rows.select(checked)).lazy() if checked else None
    for name, column in schema.columns.items():
        values = rows.column(name)
        if not column.nullable:  # pandera: null, and NaN in a float column, fail `not_nullable`
            if values.null_count:
                suspect |= pc.is_null(values).to_numpy(zero_copy_only=False)
            if pa.types.is_floating(values.type):
                suspect |= pc.fill_null(pc.is_nan(values), False).to_numpy(zero_copy_only=False)
        for check in column.checks:
            try:
                passed = check(frame, name).check_output.collect().to_series()
            except Exception:  # a check that cannot run: let pandera judge every row, as it always has
                return np.ones(rows.num_rows, dtype=bool)
            suspect |= ~passed.fill_null(False).to_numpy()
    return suspect


def validate(table: str, rows: pa.Table, now: dt.datetime | None = None) -> pa.Array:
    """Per row, the first contract rule it breaks as ``'<column>:<check>'`` (null for a clean row).

    pandera judges, but only the suspect rows: every rule is evaluated once,
    vectorized, over the whole table (:func:`_suspects`), and the full pandera
    validation, with its error reporting, runs on the few rows that may fail.
    Rules are per row, so a row's reason is the same as if the whole table had
    been validated.
    """
    n = rows.num_rows
    schema = contract(table, now)
    suspect = np.flatnonzero(_suspects(schema, rows)) if n else np.empty(0, dtype=np.int64)
    if len(suspect) == 0:
        return pa.nulls(n, pa.string())
    frame = pl.from_arrow(rows.select(list(schema.columns)).take(pa.array(suspect)))
    try:
        schema.validate(frame, lazy=True)
    except pa_pl.errors.SchemaErrors as exc:
        cases = exc.failure_cases.filter(pl.col("index").is_not_null())
        cases = cases.with_columns(
            reason=pl.concat_str([pl.col("column"), pl.lit(":"), pl.col("check").str.replace("not_nullable", "null")])
        ).unique(subset="index", keep="first", maintain_order=True)
        return reasons_at(n, suspect[cases["index"].to_numpy()], cases["reason"].to_numpy())
    return pa.nulls(n, pa.string())
