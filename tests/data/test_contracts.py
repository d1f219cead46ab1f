"""Contracts: the fast vectorized pass finds exactly the rows, and reasons, that pandera on the whole table finds."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homefeed.data import ingest as ingest_module
from homefeed.data.contracts import coerce, contract, validate
from homefeed.schema import TABLES

NOW = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)


def pandera_reasons(table: str, rows: pa.Table) -> list[str | None]:
    """The reference: pandera validating the whole table; each row's first failure, as ingestion has always named it."""
    reasons: list[str | None] = [None] * rows.num_rows
    schema = contract(table, NOW)
    try:
        schema.validate(pl.from_arrow(rows.select(list(schema.columns))), lazy=True)
    except pa_pl.errors.SchemaErrors as exc:
        cases = exc.failure_cases.filter(pl.col("index").is_not_null())
        cases = cases.with_columns(
            reason=pl.concat_str([pl.col("column"), pl.lit(":"), pl.col("check").str.replace("not_nullable", "null")])
        ).unique(subset="index", keep="first", maintain_order=True)
        for index, reason in zip(cases["index"].to_list(), cases["reason"].to_list(), strict=True):
            reasons[index] = reason
    return reasons


def maybe(values: st.SearchStrategy, null_share: int = 8) -> st.SearchStrategy:
    """Mostly ``values``, sometimes null."""
    return st.one_of(values, st.none()) if null_share else values


timestamps = st.one_of(
    st.datetimes(min_value=dt.datetime(2025, 12, 1), max_value=dt.datetime(2026, 4, 3)),
    st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1)),
).map(lambda t: t.replace(tzinfo=dt.UTC))
floats = st.one_of(st.floats(min_value=-0.5, max_value=1.5), st.floats(allow_nan=True, allow_infinity=True))
texts = st.text(alphabet="ab-1 ", max_size=3)
ints = st.integers(min_value=-3, max_value=5)

COLUMN_VALUES = {
    "impressions": {
        "request_id": texts,
        "ts": timestamps,
        "user_id": ints,
        "item_id": ints,
        "surface": texts,
        "position": ints,
        "country": texts,
        "model_version": texts,
        "score": floats,
        "propensity": floats,
    },
    "engagements": {
        "ts": timestamps,
        "user_id": ints,
        "item_id": ints,
        "request_id": texts,
        "action": st.sampled_from(["closeup", "click", "save", "hide", "report", "like", ""]),
        "dwell": floats,
    },
}


@st.composite
def canonical_rows(draw: st.DrawFn, table: str) -> pa.Table:
    n = draw(st.integers(min_value=1, max_value=25))
    schema = TABLES[table]
    columns = []
    for f in schema:
        values = COLUMN_VALUES[table].get(f.name)
        data = [None] * n if values is None else draw(st.lists(maybe(values), min_size=n, max_size=n))
        columns.append(pa.array(data, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), table=st.sampled_from(["impressions", "engagements"]))
def test_the_fast_pass_names_every_failing_row_as_pandera_does(data, table):
    rows = data.draw(canonical_rows(table))
    assert validate(table, rows, NOW).to_pylist() == pandera_reasons(table, rows)


def test_a_row_with_several_problems_is_named_by_its_first_column():
    raw = pa.table(
        {
            "request_id": ["r1", "r2", "r3"],
            "ts": ["2026-03-02T00:00:00+00:00", "yesterday", "2026-03-02T00:00:00+00:00"],
            "user_id": ["1", "x", "3"],
            "item_id": ["1", "2", "3"],
            "surface": ["home", "home", "home"],
            "position": ["1", "second", "2"],
            "model_version": ["m", "m", "m"],
        }
    )
    rows, reasons = coerce("impressions", raw)
    assert reasons.to_pylist() == [None, "type:ts", None]
    assert rows.schema.equals(TABLES["impressions"])
    _, reasons = coerce("impressions", raw.drop_columns(["surface"]))
    assert reasons.to_pylist() == ["missing_column:surface", "type:ts", "missing_column:surface"]


@pytest.mark.parametrize("collide", [False, True])
def test_in_file_dedupe_is_exact_even_when_every_hash_collides(monkeypatch, collide):
    rng = np.random.default_rng(4)
    keys = pa.table({"request_id": rng.choice(["a", "b", "c"], 500), "position": rng.integers(1, 6, 500)})
    if collide:  # a colliding hash must not make two distinct events one
        constant = lambda self, *args, **kwargs: pl.Series(np.zeros(self.height, np.uint64))  # noqa: E731
        monkeypatch.setattr(pl.DataFrame, "hash_rows", constant)
    first = ingest_module._first_of_key(keys)
    expected = pl.from_arrow(keys).select(pl.struct(pl.all()).is_first_distinct()).to_series().to_numpy()
    assert (first == expected).all()
    assert first.sum() == 15
