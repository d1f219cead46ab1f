"""The embedded online store: one SQLite file, one table per entity, in WAL mode.

It needs no service, so it is the default on one machine.  Reads of N keys are
one query each (the keys go in as one JSON array and come back in their order,
NULL where missing; integer ids are the table's rowid) inside one read transaction, so ``read_many`` sees one
consistent snapshot while a materialization writes.  Expiry is a column:
expired rows read as missing and ``purge`` deletes them.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from homefeed.features.store import (
    EntityMeta,
    Keys,
    Lookup,
    OnlineStore,
    StoreError,
    check_entity,
    check_ids,
    check_layout,
    check_write,
    coerce_keys,
    decode_rows,
    empty_lookup,
    encode_rows,
    key_array,
    list_keys,
)

_META = """create table if not exists _entities (
    entity text primary key, columns text not null, key_type text not null,
    version text not null, generation integer not null, updated_at real not null)"""


def _table(entity: str) -> str:
    return f'"f_{check_entity(entity)}"'


def _list_table(entity: str) -> str:
    return f'"l_{check_entity(entity)}"'


def _create_list(table: str) -> str:
    columns = "key integer, id integer, ts integer, primary key (key, id)"
    return f"create table if not exists {table} ({columns}) without rowid"


def _create(table: str, key_type: str) -> str:
    """Integer ids are the rowid (the fastest lookup SQLite has); string keys a clustered text primary key."""
    if key_type == "int":
        return f"create table if not exists {table} (key integer primary key, value blob, expires_at real)"
    return f"create table if not exists {table} (key text primary key, value blob, expires_at real) without rowid"


class SqliteStore(OnlineStore):
    """Feature vectors in a SQLite file; ``clock`` (unix seconds) is injectable so tests can expire rows."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.location = str(path)
        self._clock = clock
        self._lock = threading.Lock()  # one connection, shared by a server's threads
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._con.execute("pragma journal_mode = wal")
            self._con.execute("pragma synchronous = normal")
            self._con.execute("pragma mmap_size = 8589934592")  # read pages in place, not through read() calls
            self._con.execute("pragma cache_size = -65536")  # 64 MiB
            self._con.execute(_META)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the online store at {path}: {exc}") from None

    @contextmanager
    def _transaction(self, mode: str = "deferred") -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._con.execute(f"begin {mode}")
                try:
                    yield self._con
                except BaseException:
                    self._con.execute("rollback")
                    raise
                self._con.execute("commit")
            except sqlite3.Error as exc:
                raise StoreError(f"online store at {self.location}: {exc}") from None

    def _meta(self, con: sqlite3.Connection, entity: str) -> EntityMeta | None:
        row = con.execute(
            "select columns, version, key_type, generation, updated_at from _entities where entity = ?", (entity,)
        ).fetchone()
        if row is None:
            return None
        return EntityMeta(tuple(json.loads(row[0])), row[1], row[2], row[3], row[4])

    def meta(self, entity: str) -> EntityMeta | None:
        check_entity(entity)
        with self._transaction() as con:
            return self._meta(con, entity)

    def write(
        self,
        entity: str,
        keys: Keys,
        values: np.ndarray,
        columns: Sequence[str],
        version: str,
        ttl_seconds: float | None = None,
        replace: bool = False,
    ) -> None:
        table = _table(entity)
        keys, key_type, values, columns = check_write(keys, values, columns, ttl_seconds)
        order = np.argsort(keys, kind="stable")  # B-tree inserts in key order are several times faster
        keys, values = keys[order], values[order]
        with self._transaction("immediate") as con:
            old = self._meta(con, entity)
            generation = old.generation + 1 if old else 1  # never reset, so caches always see a change
            if replace:
                con.execute(f"drop table if exists {table}")
                old = None
            else:
                check_layout(entity, old, columns, key_type)
            key_type = key_type or (old.key_type if old else "int")
            con.execute(_create(table, key_type))
            now = self._clock()
            expires = None if ttl_seconds is None else now + ttl_seconds
            con.executemany(
                f"insert or replace into {table} (key, value, expires_at) values (?, ?, ?)",
                zip(keys.tolist(), encode_rows(values), itertools.repeat(expires), strict=False),
            )
            con.execute(
                "insert or replace into _entities values (?, ?, ?, ?, ?, ?)",
                (entity, json.dumps(columns), key_type, version, generation, now),
            )

    def read_many(self, requests: Sequence[tuple[str, Keys]]) -> list[Lookup]:
        prepared = [(entity, _table(entity), key_array(keys)[0]) for entity, keys in requests]
        out = []
        with self._transaction() as con:
            now = self._clock()
            for entity, table, keys in prepared:
                meta = self._meta(con, entity)
                if meta is None:
                    raise StoreError(f"no entity {entity!r} in the online store at {self.location}")
                if not len(keys):
                    out.append(empty_lookup(meta))
                    continue
                keys, possible = coerce_keys(keys, meta.key_type)
                wanted = keys.tolist()
                for i in np.flatnonzero(~possible):
                    wanted[i] = None  # JSON null joins nothing
                # the keys go in as one JSON array and come back in their order, NULL where missing or expired
                rows = con.execute(
                    f"select case when t.expires_at is null or t.expires_at > ? then t.value end "
                    f"from json_each(?) j left join {table} t on t.key = j.value order by j.key",
                    (now, json.dumps(wanted)),
                ).fetchall()
                values, found = decode_rows([r[0] for r in rows], len(meta.columns), entity)
                out.append(Lookup(values, found, meta.columns, meta.version))
        return out

    def read_all(self, entity: str) -> tuple[np.ndarray, Lookup]:
        table = _table(entity)
        with self._transaction() as con:
            meta = self._meta(con, entity)
            if meta is None:
                raise StoreError(f"no entity {entity!r} in the online store at {self.location}")
            rows = con.execute(
                f"select key, value from {table} where expires_at is null or expires_at > ?", (self._clock(),)
            ).fetchall()
        keys = np.array([r[0] for r in rows], dtype=np.int64 if meta.key_type == "int" else str)
        values, found = decode_rows([r[1] for r in rows], len(meta.columns), entity)
        return keys, Lookup(values, found, meta.columns, meta.version)

    def add_ids(self, entity: str, keys: Keys, ids: np.ndarray, ts: np.ndarray, keep: int) -> None:
        keys, ids, ts = check_ids(keys, ids, ts, keep)
        table = _list_table(entity)
        if not len(keys):
            return
        with self._transaction("immediate") as con:
            con.execute(_create_list(table))
            con.executemany(
                f"insert into {table} (key, id, ts) values (?, ?, ?) "
                "on conflict (key, id) do update set ts = max(ts, excluded.ts)",
                zip(keys.tolist(), ids.tolist(), ts.tolist(), strict=True),
            )
            touched = json.dumps(np.unique(keys).tolist())
            over = con.execute(
                f"select key from {table} where key in (select value from json_each(?)) "
                "group by key having count(*) > ?",
                (touched, keep),
            ).fetchall()
            for (key,) in over:  # only lists past `keep` are trimmed: one statement each
                con.execute(
                    f"delete from {table} where key = ? and id not in "
                    f"(select id from {table} where key = ? order by ts desc, id desc limit ?)",
                    (key, key, keep),
                )

    def read_ids(self, entity: str, keys: Keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.read_lists([entity], keys)[0]

    def read_lists(self, entities: Sequence[str], keys: Keys) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        keys = list_keys(keys)
        found = self._one_key_lists(entities, int(keys[0])) if len(keys) == 1 else self._lists(entities, keys)
        out = []
        for rows in found:
            if not rows:
                out.append((np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)))
                continue
            index, counts, ids, ts = zip(*rows, strict=True)
            owner = np.repeat(np.array(index, np.int64), np.array(counts, np.int64))
            out.append((owner, _integers(ids), _integers(ts)))
        return out

    def _one_key_lists(self, entities: Sequence[str], key: int) -> list[list]:
        """A service call's lists in one statement (one implicit snapshot), not five (begin, a select each, commit).

        A list nobody added to yet has no table, which fails the statement: the missing tables are created empty
        (what a missing table reads as anyway) and the statement runs again; where they cannot be (a read-only
        file), `_lists` reads each list on its own.
        """
        query = " union all ".join(
            f"select {i}, count(*), group_concat(id), group_concat(ts) from {_list_table(e)} where key = ?"
            for i, e in enumerate(entities)
        )
        for attempt in (1, 2):
            try:
                with self._lock:
                    rows = self._con.execute(query, (key,) * len(entities)).fetchall()
                break
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc) or attempt == 2:
                    raise StoreError(f"online store at {self.location}: {exc}") from None
                try:
                    with self._transaction("immediate") as con:
                        for entity in entities:
                            con.execute(_create_list(_list_table(entity)))
                except StoreError:  # a store this process may not write to: each list in its own statement
                    return self._lists(entities, np.array([key], np.int64))
            except sqlite3.Error as exc:
                raise StoreError(f"online store at {self.location}: {exc}") from None
        found: list[list] = [[] for _ in entities]
        for i, count, ids, ts in rows:
            if count:
                found[i] = [(0, count, ids, ts)]
        return found

    def _lists(self, entities: Sequence[str], keys: np.ndarray) -> list[list]:
        """Many keys' lists (the simulator's batches), one snapshot: per list, one row per key that has one."""
        found: list[list] = []
        if not len(keys):
            return [[] for _ in entities]
        wanted = json.dumps(keys.tolist())
        with self._transaction() as con:  # one snapshot of every list
            for entity in entities:
                # one row per key, its ids and times as text: a row per id made a request's 200-item seen list
                # cost ~0.3 ms in Python tuples; the text is parsed by NumPy in one go
                query = (
                    f"select j.key, count(*), group_concat(t.id), group_concat(t.ts) from json_each(?) j "
                    f"join {_list_table(entity)} t on t.key = j.value group by j.key"
                )
                try:
                    found.append(con.execute(query, (wanted,)).fetchall())
                except sqlite3.OperationalError as exc:  # a list nobody added to yet
                    if "no such table" not in str(exc):
                        raise
                    found.append([])
        return found

    def drop(self, entity: str) -> None:
        table = _table(entity)
        with self._transaction("immediate") as con:
            con.execute(f"drop table if exists {table}")
            con.execute("delete from _entities where entity = ?", (entity,))

    def purge(self) -> int:
        with self._transaction("immediate") as con:
            now = self._clock()
            entities = [r[0] for r in con.execute("select entity from _entities").fetchall()]
            deleted = 0
            for entity in entities:
                cur = con.execute(f"delete from {_table(entity)} where expires_at <= ?", (now,))
                deleted += cur.rowcount
        return deleted

    def close(self) -> None:
        with self._lock:
            self._con.close()


def _integers(texts: Sequence[str]) -> np.ndarray:
    """Comma-separated integers (``group_concat``'s text) as one int64 array."""
    return np.fromstring(",".join(texts), np.int64, sep=",")
