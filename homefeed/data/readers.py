"""Readers: a log file in, its rows as Arrow, and the lines that are not rows (with why) — nothing else.

One function per format behind :func:`read_chunks`; :mod:`homefeed.data.ingest` checks what they return.  A
file that cannot be parsed at all is an :class:`IngestError` naming it (and its line, for CSV); a JSON Lines
line that is not a JSON object, or any row whose text is not valid UTF-8, is a malformed line that ingestion
quarantines.  Invalid UTF-8 is caught here because Arrow's JSON and Parquet readers keep string bytes as they
are, and a bad byte stored in the lake makes every later read of its day fail (Polars panics on it).

CSV and JSON Lines are read in bounded memory: each is cut at line ends into pieces of about
:data:`CHUNK_BYTES` (Arrow parses each CSV piece with the header line put back in front), so ingestion holds
one chunk, never the file (the 12-million-row Open Bandit ``bts/all``).  A CSV file that cannot be parsed is
still refused before anything is written: a file of more than one piece is parsed once through, keeping
nothing, before its chunks are handed out.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from homefeed.errors import HomefeedError

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")


class IngestError(HomefeedError, ValueError):
    """A whole file could not be read; nothing from it was written."""


#: A line whose first non-blank character does not open a JSON object.
NOT_AN_OBJECT = re.compile(rb"^[ \t\r]*[^{\s]", re.MULTILINE)


def _objects_only(data: bytes) -> bool:
    """Whether every non-blank line opens a JSON object: two counts when each line starts with ``{`` (files a
    machine wrote; a third of the time Arrow takes to parse), else the pattern (blank lines, indentation)."""
    if data.startswith(b"{") and data.count(b"\n{") == data.count(b"\n") - data.endswith(b"\n"):
        return True
    return NOT_AN_OBJECT.search(data) is None


#: Reasons for lines of a JSON Lines file that are not rows at all.
NOT_AN_OBJECT_REASON = "malformed:not_a_json_object"
INVALID_UTF8 = "malformed:invalid_utf8"
#: (1-based line, the line's text, reason) of a line that is not a row.
Malformed = tuple[int, str, str]


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")  # C speed; Arrow's JSON reader would store the bytes as they are, unreadable later
    except UnicodeDecodeError:
        return False
    return True


#: Bytes of a file read at a time: each chunk goes through the contract and into the lake before the next is read.
CHUNK_BYTES = 32 << 20


@dataclass
class Chunk:
    """Rows of a file read together, the 1-based line of each, and the lines among them that are not rows."""

    rows: pa.Table
    lines: np.ndarray
    malformed: list[Malformed]


def _numbered(rows: pa.Table, first: int) -> np.ndarray:
    """Line numbers of rows that are consecutive lines from ``first``."""
    return np.arange(first, first + rows.num_rows, dtype=np.int64)


def _line_breaks(data: bytes) -> int:
    """Lines ended in ``data`` as universal newlines count them (``\n``, ``\r\n`` or a lone ``\r``)."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _jsonl_chunks(path: Path, chunk_bytes: int) -> Iterator[Chunk]:
    """A JSON Lines file in pieces of about ``chunk_bytes``, each cut after a line's end.

    A newline byte never occurs inside a UTF-8 sequence, so no character is split between two pieces.
    """
    first, rest = 1, b""
    with path.open("rb") as fh:
        while True:
            block = fh.read(chunk_bytes)
            data = rest + block
            cut = data.rfind(b"\n") + 1 if block else len(data)
            piece, rest = data[:cut], data[cut:]
            if piece or (not block and first == 1):  # an empty file is one empty chunk
                yield _parse_jsonl(piece, first)
                first += _line_breaks(piece)
            if not block:
                return


def _parse_jsonl(data: bytes, first: int) -> Chunk:
    """Rows of JSON Lines text whose first line is line ``first``, and the lines that are not rows (with why)."""
    # Arrow's reader takes a ``null`` line for a row of nulls (and crashed on a file of only ``null``, pyarrow 26),
    # and keeps invalid UTF-8 as it is, so it gets only valid UTF-8 whose every non-blank line opens an object;
    # anything else takes the checked path.
    if _objects_only(data) and _utf8(data):
        try:
            rows = pa_json.read_json(pa.BufferReader(data))
            if rows.num_rows == _line_breaks(data) + (not data.endswith((b"\n", b"\r"))) - (not data):
                return Chunk(rows, _numbered(rows, first), [])
            # blank lines: the rows are the non-blank lines, numbered as the slow path numbers them
            text = io.StringIO(data.decode("utf-8"), newline=None)
            numbers = [n for n, line in enumerate(text, start=first) if line.strip()]
            return Chunk(rows, np.array(numbers, dtype=np.int64), [])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    # Slow path, only for pieces with broken lines: find them, keep the rest.
    rows, lines, bad = [], [], []
    # Universal newlines as in text mode; a bad byte becomes a lone surrogate, so its line can be told apart.
    fh = io.StringIO(data.decode("utf-8", errors="surrogateescape"), newline=None)
    for number, text in enumerate(fh, start=first):
        if not text.strip():
            continue
        text = text.rstrip("\n")
        try:
            row = json.loads(text)
        except ValueError:
            row = None  # not JSON: its reason below
        if not isinstance(row, dict):
            bad.append((number, _printable(text), NOT_AN_OBJECT_REASON if _valid(text) else INVALID_UTF8))
            continue
        if not _valid(json.dumps(row, ensure_ascii=False)):  # bad bytes, or a ``\ud800`` escape: no UTF-8 text
            bad.append((number, _printable(text), INVALID_UTF8))
            continue
        rows.append({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})
        lines.append(number)
    numbers = np.array(lines, dtype=np.int64)
    keys = sorted({k for row in rows for k in row})
    if not keys:  # only `{}` lines: rows without columns, each still a row to account for
        return Chunk(pa.Table.from_struct_array(pa.array([{}] * len(rows), pa.struct([]))), numbers, bad)
    columns = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types or huge ints: keep as text
            columns[key] = pa.array([_text(v) for v in values], pa.string())
    return Chunk(pa.table(columns), numbers, bad)


def _valid(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate from a bad byte or an escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """A line as quarantine can store it: bad bytes as ``\\xff``, lone escaped surrogates as ``\\ud800``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") if not _valid(text) else text


def _text(value: object) -> str | None:
    return None if value is None else value if isinstance(value, str) else json.dumps(value)


def _csv_pieces(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    """A CSV file as pieces of about ``chunk_bytes`` cut after a line's end, each headed by the header line.

    Cut here rather than by Arrow's streaming reader, which reads ahead of its consumer without bound (the whole
    1 GB file in memory before the first batch was used).  Arrow's parser takes every line end as a record's end
    (``newlines_in_values`` is off), so a cut after one never splits a record it would have read whole.
    """
    with pa.input_stream(str(path), compression="detect") as stream:  # ``.gz`` decompressed as it is read
        header, rest = b"", b""
        while True:
            block = stream.read(chunk_bytes)
            data = rest + block
            if not header:
                end = data.find(b"\n") + 1
                if not end and block:
                    rest = data
                    continue
                header, data = (data[:end], data[end:]) if end else (data, b"")
                first = True
            cut = data.rfind(b"\n") + 1 if block else len(data)
            piece, rest = data[:cut], data[cut:]
            if piece or first:  # a file of a header only is one piece of no rows
                yield header + piece
                first = False
            if not block:
                return


def csv_blocks(
    path: Path,
    convert: pa_csv.ConvertOptions,
    chunk_bytes: int = CHUNK_BYTES,
    check: Callable[[pa.Table, int], None] | None = None,
) -> Iterator[pa.Table]:
    """A CSV file's rows, about ``chunk_bytes`` of it at a time, parsed by Arrow (``.gz`` decompressed).

    The whole file is parsed (and its values converted) before the first block is handed out, keeping nothing
    but a file of one block: a bad record late in a big file refuses the file before any row of it is written.
    ``check(block, rows before it)`` sees every block of that first pass (a caller's own rules, its own
    statistics).  Arrow's errors propagate to the caller, which names the file.
    """

    def blocks() -> Iterator[pa.Table]:
        for piece in _csv_pieces(path, chunk_bytes):
            yield pa_csv.read_csv(pa.BufferReader(piece), convert_options=convert)

    first, count, seen = None, 0, 0
    for block in blocks():  # the check: every block parses
        if check is not None:
            check(block, seen)
        count, seen = count + 1, seen + block.num_rows
        first = block if count == 1 else None
    if count == 1:
        yield first  # type: ignore[misc]
        return
    yield from blocks()


def read_chunks(path: str | Path, fmt: Format, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Parse a file a chunk at a time: rows, the 1-based line of each, malformed lines.  Raises IngestError if
    unreadable, before the first chunk for a file that cannot be parsed at all.

    A Parquet file is one chunk (it is already compact; its row groups are read whole).
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise IngestError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    try:
        if fmt == "parquet":
            rows, lines, malformed = _utf8_rows(pq.read_table(path))
            yield Chunk(rows, _numbered(rows, 1) if lines is None else lines, malformed)
            return
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
            # Every column stays text: the contract decides types row by row.
            options = pa_csv.ConvertOptions(strings_can_be_null=True, column_types=dict.fromkeys(header, pa.string()))
            first = 1
            for rows in csv_blocks(path, options, chunk_bytes):
                yield Chunk(rows, _numbered(rows, first), [])
                first += rows.num_rows
            return
        yield from _jsonl_chunks(path, chunk_bytes)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError, csv.Error) as exc:
        where = _csv_bad_line(path) if fmt == "csv" else None
        at = f" at line {where}" if where else ""
        raise IngestError(f"{path}: cannot be read as {fmt}{at}: {' '.join(str(exc).split())}") from None


def _utf8_rows(table: pa.Table) -> tuple[pa.Table, np.ndarray | None, list[Malformed]]:
    """A Parquet file's rows whose text is valid UTF-8, and the others as malformed lines.

    Parquet readers take string bytes as they are; a bad byte stored in the lake would crash every later
    read of the day (Polars panics on it), so it is checked here, once, for the cost of one pass (~30 ns a row).
    """
    try:
        table.validate(full=True)
        return table, None, []
    except pa.ArrowInvalid:
        pass
    bad = np.zeros(table.num_rows, dtype=bool)  # row by row, only on this failure path
    for column in table.columns:
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            bad |= [not _valid_slice(column, i) for i in range(table.num_rows)]
    good = np.flatnonzero(~bad)
    malformed = [(int(i) + 1, _row_text(table, int(i)), INVALID_UTF8) for i in np.flatnonzero(bad)]
    return table.take(pa.array(good)), good + 1, malformed


def _valid_slice(column: pa.ChunkedArray, i: int) -> bool:
    try:
        column.slice(i, 1).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _row_text(table: pa.Table, i: int) -> str:
    """A row with invalid UTF-8 as JSON text: bad bytes of a string cell as ``\\xff``, a bad nested cell noted."""
    row = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        cell = column.slice(i, 1)
        if _valid_slice(column, i):
            row[name] = cell.to_pylist()[0]
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            raw = cell.cast(pa.binary()).to_pylist()[0]
            row[name] = raw.decode("utf-8", "backslashreplace")
        else:
            row[name] = "<invalid UTF-8>"
    return json.dumps(row, default=str, sort_keys=True)


def _csv_bad_line(path: Path) -> int | None:
    """The line of the first CSV record that breaks the file's shape (failure path only)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            width = len(next(reader, []))
            for record in reader:
                if len(record) != width:
                    return reader.line_num
    except (csv.Error, UnicodeDecodeError):
        return None
    return None
