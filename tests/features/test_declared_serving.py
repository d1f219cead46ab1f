"""Declared user, item and user_item features served: the online store's hydrated values equal the offline join's.

The hand-written lake of ``test_declared_entities``, its day-2 snapshots materialized into each store backend,
read back per request as serving reads them, and assembled (numbers) and decoded (categories as strings).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from homefeed.features.definitions import CATEGORY, FeatureError, FeatureSet, catalogue
from homefeed.features.materialize import VOCAB, materialize
from homefeed.features.pit import join_frame
from homefeed.features.skew import skew
from homefeed.features.store import pair_keys
from homefeed.features.vectors import assemble, entities, hydrate, vocabulary
from tests.features.test_declared_entities import (
    DECLARED,
    ETL,
    I1,
    I2,
    NAMES,
    START,
    U1,
    U2,
    U3,
    at,
    probe,
    run,
    settings,
    tiny,
)

__all__ = ["tiny"]  # the module fixture, shared


def declared_set() -> FeatureSet:
    cat = catalogue(ETL, settings())
    return FeatureSet("declared", tuple(cat[n] for n in NAMES))


def served(store, fs: FeatureSet, impressions: pa.Table) -> pa.Table:
    users, items = impressions["user_id"].to_numpy(), impressions["item_id"].to_numpy()
    keys = {"user_declared": users, "item_declared": items, "user_item_declared": pair_keys(users, items)}
    wanted = [(e, keys[e]) for e in entities(fs)]
    lookups = dict(zip(entities(fs), store.read_many(wanted), strict=True))
    ts = impressions["ts"].cast(pa.int64()).to_numpy()
    matrix = assemble(fs, lookups, ts, np.zeros(len(ts), np.int64))
    vocab = {}
    for source in {f.source for f in fs.features if f.dtype == CATEGORY}:
        vocab |= vocabulary(*store.read_all(source + VOCAB))
    return hydrate(fs, matrix, None, vocab)


def test_hydrated_values_equal_the_offline_join_for_the_same_user_item_and_time(tiny, backend):
    lake, etl = tiny
    fs = declared_set()
    done = materialize(fs, etl, backend.store, as_of=START + dt.timedelta(days=2))
    assert {m.entity for m in done} == {"user_declared", "item_declared", "user_item_declared"}
    pairs = [(U1, I1), (U2, I2), (U2, I1), (U3, I1), (U1, I2)]
    impressions = probe(*[(u, i, t) for t in (at(3, 1.5), at(3, 23)) for u, i in pairs])
    online = served(backend.store, fs, impressions)
    con = duckdb.connect()
    try:
        offline = join_frame(fs, etl, lake, impressions, con).order("request_id").to_arrow_table()
    finally:
        con.close()
    online = online.append_column("request_id", impressions["request_id"]).sort_by("request_id")
    for name in fs.columns:
        want = offline[name]
        got = online[name]
        if pa.types.is_string(want.type):
            assert got.to_pylist() == want.to_pylist(), name
        else:
            np.testing.assert_array_equal(
                got.to_numpy().astype(np.float32), want.to_numpy().astype(np.float32), err_msg=name
            )
    assert online["user_a"].to_pylist()[:4] == ["x", "y", "y", None]
    assert set(online["user_declared_missing"].to_pylist()) == {0.0, 1.0}


def test_the_skew_check_compares_declared_numbers_and_leaves_categories_out(tiny):
    lake, etl = tiny
    fs = declared_set()
    impressions = probe((U1, I1, at(3, 12)), (U2, I2, at(3, 12)))
    con = duckdb.connect()
    try:
        offline = join_frame(fs, etl, lake, impressions, con).to_arrow_table()
    finally:
        con.close()
    numbers = [c for c in fs.columns if not pa.types.is_string(offline[c].type)]
    logged = pa.array(
        [[(c, float(offline[c][r].as_py())) for c in numbers] for r in range(offline.num_rows)],
        pa.map_(pa.string(), pa.float64()),
    )
    rows = offline.select(["request_id", "ts", "user_id", "item_id"]).append_column("served_features", logged)
    found = {s.feature: s for s in skew(rows, fs, etl, lake)}
    assert set(found) == set(numbers) and not any(s.flagged for s in found.values())
    assert "user_a" not in found


def test_materializing_a_snapshot_older_than_a_declaration_is_refused_before_writing(tiny, tmp_path, backend):
    lake, _ = tiny
    etl = run(lake, tmp_path / "etl", settings(DECLARED[:2]))
    with pytest.raises(FeatureError, match=r"no column for declared feature\(s\) user_country"):
        materialize(declared_set(), etl, backend.store)
    assert backend.store.meta("item_declared") is None and backend.store.meta("user_declared") is None
