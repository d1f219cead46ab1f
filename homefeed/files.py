"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every stage writes through these, so an interrupted step leaves the previous
good state in place and re-running it is safe.  A killed process can still
leave its temporary file or folder behind; :func:`sweep_atomic_dirs` (and the
lake's own sweep) remove them, under a :func:`lock`, on the next run.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

#: Fixed writer settings so the same table always gives the same bytes.
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "write_statistics": True}


def parquet_options(schema: pa.Schema) -> dict:
    """:data:`PARQUET_OPTIONS` plus per-column encodings for ``schema``.

    Timestamps and 64-bit ids are delta-encoded (bit-packed differences) rather
    than given a dictionary that the writer builds and then abandons for a
    high-cardinality column: event logs are nearly time-ordered and ids are
    bounded, so on a day of simulated impressions ``ts`` is written 4x faster
    and 10x smaller and ``item_id`` 4x faster.  Every other column (surfaces,
    countries, actions, request ids, map keys) keeps dictionary encoding.
    """
    delta = tuple(f.name for f in schema if pa.types.is_timestamp(f.type) or pa.types.is_int64(f.type))
    return {
        **PARQUET_OPTIONS,
        "use_dictionary": [p for p in _leaf_paths(schema.remove_metadata()) if p not in delta],
        "column_encoding": dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
    }


@functools.lru_cache(maxsize=64)
def _leaf_paths(schema: pa.Schema) -> tuple[str, ...]:
    """The Parquet column paths of ``schema`` (a map ``m`` is ``m.key_value.key`` and ``m.key_value.value``)."""
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer)
    meta = pq.read_metadata(pa.BufferReader(buffer.getvalue())).schema
    return tuple(meta.column(i).path for i in range(len(meta)))


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_parquet(target: str | Path, table: pa.Table) -> None:
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, **parquet_options(table.schema))


def ensure_replaceable(target: Path, allowed: set[str] | None = None) -> None:
    """Raise FileExistsError unless ``target`` is absent or a directory holding only ``allowed`` entries."""
    if not target.exists():
        return
    if not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a directory")
    if allowed is not None:
        foreign = sorted(p.name for p in target.iterdir() if p.name not in allowed)
        if foreign:
            raise FileExistsError(f"{target}: not empty and not written by homefeed (found {', '.join(foreign[:3])})")


@contextmanager
def atomic_dir(target: str | Path, allowed: set[str] | None = None) -> Iterator[Path]:
    """Yield a fresh directory beside ``target`` that replaces ``target`` only if the block succeeds.

    An existing ``target`` is replaced only if every entry in it is named in
    ``allowed`` (when given): we never delete a directory we did not write.
    """
    target = Path(target)
    ensure_replaceable(target, allowed)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    old = target.parent / f".{target.name}.old"
    try:
        yield tmp
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def lock(path: str | Path) -> FileLock:
    """A lock for one writer at a time, held while a ``with`` block runs; re-entrant within a process.

    An OS file lock from ``filelock`` (``flock`` on Unix, ``LockFileEx`` on Windows) rather than a lock file
    created and deleted by hand: the kernel releases it when its process dies, so a killed writer never
    leaves it held, and a second writer simply waits.  One instance per path in a process (``is_singleton``),
    so a function holding it may call another that takes it again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, is_singleton=True)


def sweep_atomic_dirs(parent: str | Path, prefixes: tuple[str, ...] = ()) -> list[Path]:
    """Undo what killed :func:`atomic_dir` blocks left in ``parent``: call with the lock of its writers held.

    A temporary folder (``.<name>.*.tmp``) goes; a replaced folder kept aside (``.<name>.old``) is put back
    when the process died before its replacement was renamed in, and goes otherwise.  Folders named with
    one of ``prefixes`` (a writer's own scratch folders, such as spill space) go too.
    """
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        name = entry.name
        if name.startswith(".") and name.endswith(".old") and entry.is_dir():
            target = parent / name[1:].removesuffix(".old")
            if not target.exists():
                os.replace(entry, target)
                continue
        elif not (name.startswith(".") and name.endswith(".tmp")) and not name.startswith(prefixes or ("\0",)):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def sha256_file(path: str | Path) -> str:
    """A file's SHA-256, read in blocks: how manifests, datasets and models say which bytes they hold."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
