"""Materialization puts in the online store exactly what the point-in-time join would give right after a snapshot."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from homefeed.config import EtlSettings
from homefeed.data.etl import snapshot_lake
from homefeed.data.lake import Lake
from homefeed.features.definitions import ENTITY_SOURCE, FeatureError, feature_set
from homefeed.features.materialize import ShrinkError, entity_keys, materialize
from homefeed.features.pit import join_frame
from homefeed.schema import TIMESTAMP
from tests.conftest import etl_world

START = dt.date(2026, 3, 2)
ETL = EtlSettings(windows=[1, 7])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Lake, Lake]:
    root = tmp_path_factory.mktemp("materialize")
    return etl_world(root, ETL, days=5, seed=12, users=1_000, items_per_day=200, creators=80)


def test_the_store_serves_what_the_offline_join_gives_after_the_snapshot(world, backend):
    lake, etl = world
    fs = feature_set("default", ETL)
    done = {m.entity: m for m in materialize(fs, etl, backend.store)}
    assert set(done) == {"user", "item", "creator", "user_topic", "user_creator"}
    last = START + dt.timedelta(days=4)
    assert {m.snapshot for m in done.values()} == {last}

    # Requests just after the last snapshot became known, for a sample of logged (user, item) pairs.
    shown = lake.read("impressions", last, last).slice(0, 400)
    after = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(2), dt.UTC)
    asked = shown.select(["request_id", "user_id", "item_id"]).append_column(
        "ts", pa.array([after] * shown.num_rows, TIMESTAMP)
    )
    con = duckdb.connect()
    offline = join_frame(fs, etl, lake, asked, con).order("request_id, item_id").to_arrow_table()
    con.close()
    items = offline["item_id"].to_numpy()
    users = offline["user_id"].to_numpy()
    pairs = pa.table({"user_id": offline["user_id"], "topic": offline["topic"]})
    item_l, user_l, topic_l = backend.store.read_many(
        [("item", items), ("user", users), ("user_topic", entity_keys("user_topic", pairs))]
    )
    for lookup, entity in ((item_l, "item"), (user_l, "user"), (topic_l, "user_topic")):
        flag = offline[f"{entity}_missing"].to_numpy() == 1
        np.testing.assert_array_equal(~lookup.found, flag, err_msg=entity)
        for j, name in enumerate(lookup.columns):
            want = offline[name].to_numpy()[~flag]
            np.testing.assert_array_equal(lookup.values[~flag, j], want, err_msg=name)
    assert item_l.version == done["item"].version and fs.version in item_l.version


def test_materializing_an_older_day_replaces_the_entity(world, backend):
    _, etl = world
    fs = feature_set("default", ETL)
    materialize(fs, etl, backend.store)
    first_day = START
    done = {m.entity: m for m in materialize(fs, etl, backend.store, as_of=first_day, force=True)}  # much smaller
    assert done["item"].snapshot == first_day
    day0 = etl.read("item_stats", first_day, first_day)
    later_only = np.setdiff1d(
        etl.read("item_stats", START + dt.timedelta(days=4))["item_id"].to_numpy(), day0["item_id"].to_numpy()
    )
    assert later_only.size and not backend.store.read("item", later_only[:50]).found.any()


def test_no_snapshot_is_a_clear_error(world, backend, tmp_path):
    with pytest.raises(FeatureError, match="no user_profile snapshot"):
        materialize(feature_set("default", ETL), Lake(tmp_path / "none"), backend.store)


def test_an_empty_or_much_smaller_snapshot_does_not_replace_a_populated_store(world, backend, tmp_path):
    """An ETL run past the lake's data once left empty last days, and materializing emptied the store (465 → 0)."""
    _, etl = world
    fs = feature_set("default", ETL)
    materialize(fs, etl, backend.store)
    last = START + dt.timedelta(days=4)
    held = backend.store.read_all("user")[0].size
    # A later day whose snapshots are empty, as a careless range once wrote them.
    shrunk = snapshot_lake(tmp_path / "etl")
    shutil.copytree(etl.root, shrunk.root, dirs_exist_ok=True)
    empty = last + dt.timedelta(days=1)
    for source in ENTITY_SOURCE.values():
        rows = shrunk.read(source, last, last)
        shrunk.commit(source, empty, shrunk.stage(source, empty, rows.slice(0, 0), ["empty"]))
    with pytest.raises(
        ShrinkError, match=rf"snapshot of {empty} holds 0 user keys where the online store holds {held:,}"
    ):
        materialize(fs, shrunk, backend.store)
    assert backend.store.read_all("user")[0].size == held  # nothing was written, not even the entities before it
    # A much smaller one (a fifth of the users) is refused too; --force loads it.
    rows = shrunk.read("user_profile", last, last)
    shrunk.commit("user_profile", empty, shrunk.stage("user_profile", empty, rows.slice(0, held // 5), ["small"]))
    with pytest.raises(ShrinkError, match="pass --force"):
        materialize(fs, shrunk, backend.store)
    done = {m.entity: m.keys for m in materialize(fs, shrunk, backend.store, force=True)}
    assert done["user"] == held // 5 and done["item"] == 0
