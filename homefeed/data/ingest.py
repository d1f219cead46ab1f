"""Ingestion: files in, contract-checked rows into the lake, every failing row into quarantine.

The invariant, for every file: rows in = rows written + duplicates skipped +
rows quarantined.  A file that cannot be parsed at all is refused by name (and
line, where there is one) before anything is written; a malformed line of a
JSON Lines file is a quarantined row, not a refused file.  Re-ingesting a file
adds nothing: rows are deduplicated on each table's event key against the lake.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from homefeed.data.contracts import coerce, reasons_at, validate
from homefeed.data.lake import EVENT_KEY, Lake, partition_range
from homefeed.errors import HomefeedError
from homefeed.files import atomic_write_parquet
from homefeed.schema import TABLES, TIMESTAMP

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")

QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64()),  # 1-based data row (JSON line, CSV record after the header, Parquet row)
        pa.field("table", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string()),  # the row as it arrived, as JSON
        pa.field("quarantined_at", TIMESTAMP, nullable=False),
    ]
)


class IngestError(HomefeedError, ValueError):
    """A whole file could not be read; nothing from it was written."""


@dataclass
class IngestReport:
    source: str
    table: str
    rows_in: int = 0
    written: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    partitions: dict[dt.date, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.written + self.duplicates + self.quarantined


#: A line whose first non-blank character does not open a JSON object.
NOT_AN_OBJECT = re.compile(rb"^[ \t\r]*[^{\s]", re.MULTILINE)


def _objects_only(data: bytes) -> bool:
    """Whether every non-blank line opens a JSON object: two counts when each line starts with ``{`` (files a
    machine wrote; a third of the time Arrow takes to parse), else the pattern (blank lines, indentation)."""
    if data.startswith(b"{") and data.count(b"\n{") == data.count(b"\n") - data.endswith(b"\n"):
        return True
    return NOT_AN_OBJECT.search(data) is None


def _read_jsonl(path: Path) -> tuple[pa.Table, np.ndarray | None, list[tuple[int, str]]]:
    """Rows of a JSON Lines file, their line numbers, and the lines that are not JSON objects."""
    data = path.read_bytes()
    # Arrow's reader takes a ``null`` line for a row of nulls (and crashed on a file of only ``null``, pyarrow 26),
    # so it gets only files whose every non-blank line opens an object; anything else takes the checked path.
    if _objects_only(data):
        try:
            return pa_json.read_json(pa.BufferReader(data)), None, []
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    # Slow path, only for files with broken lines: find them, keep the rest.
    rows, lines, bad = [], [], []
    # Text as reading the file in text mode would give it: bad bytes replaced, universal newlines.
    fh = io.StringIO(data.decode("utf-8", errors="replace"), newline=None)
    for number, text in enumerate(fh, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError:
            bad.append((number, text.rstrip("\n")))
            continue
        if not isinstance(row, dict):
            bad.append((number, text.rstrip("\n")))
            continue
        rows.append({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})
        lines.append(number)
    keys = sorted({k for row in rows for k in row})
    if not keys:  # only `{}` lines: rows without columns, each still a row to account for
        empty = pa.Table.from_struct_array(pa.array([{}] * len(rows), pa.struct([])))
        return empty, np.array(lines, dtype=np.int64), bad
    columns = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types or huge ints: keep as text
            columns[key] = pa.array([_text(v) for v in values], pa.string())
    return pa.table(columns), np.array(lines, dtype=np.int64), bad


def _text(value: object) -> str | None:
    return None if value is None else value if isinstance(value, str) else json.dumps(value)


def read_file(path: str | Path, fmt: Format) -> tuple[pa.Table, np.ndarray | None, list[tuple[int, str]]]:
    """Parse a file: (rows, 1-based line of each row, malformed lines).  Raises IngestError if unreadable.

    The line numbers are None when row i is line i + 1 (every format but a JSON
    Lines file with broken lines).
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise IngestError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    try:
        if fmt == "parquet":
            return pq.read_table(path), None, []
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
            # Every column stays text: the contract decides types row by row.
            options = pa_csv.ConvertOptions(strings_can_be_null=True, column_types=dict.fromkeys(header, pa.string()))
            return pa_csv.read_csv(path, convert_options=options), None, []
        return _read_jsonl(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError, csv.Error) as exc:
        where = _csv_bad_line(path) if fmt == "csv" else None
        at = f" at line {where}" if where else ""
        raise IngestError(f"{path}: cannot be read as {fmt}{at}: {' '.join(str(exc).split())}") from None


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


def _matching(rows: pa.Table, columns: list[str], files: list[Path]) -> np.ndarray:
    """Indices of ``rows`` whose ``columns`` equal those of some row in the Parquet ``files``.

    An exact semi-join in Polars (both cores) that reads only the key columns of
    the files, which callers prune to the partitions the rows can touch.  Stored
    rows whose first key column (the request id) the batch never names are
    dropped while scanning, before the join builds its table.
    """
    if not files or rows.num_rows == 0:
        return np.empty(0, dtype=np.int64)
    batch = pl.from_arrow(rows.select(columns)).with_row_index("__row")
    wanted = batch[columns[0]].unique().implode()
    stored = pl.scan_parquet([str(f) for f in files], hive_partitioning=False).select(columns)
    stored = stored.filter(pl.col(columns[0]).is_in(wanted))
    return batch.lazy().join(stored, on=columns, how="semi").collect()["__row"].to_numpy()


def _first_of_key(keys: pa.Table) -> np.ndarray:
    """Mask of rows that are the first of their key in the batch.

    Exact, and cheap when keys are distinct (the usual case): rows are grouped by
    a 64-bit hash of the key, and only rows whose hash repeats — duplicates, or
    in principle a collision — are compared by the full key.
    """
    frame = pl.from_arrow(keys)
    hashes = frame.hash_rows()
    first = np.ones(keys.num_rows, dtype=bool)
    if hashes.n_unique() == keys.num_rows:
        return first
    repeated = np.flatnonzero(hashes.is_duplicated().to_numpy())
    first[repeated] = frame[repeated].select(pl.struct(pl.all()).is_first_distinct()).to_series().to_numpy()
    return first


def _dedupe(table: str, rows: pa.Table, lake: Lake) -> np.ndarray:
    """Mask of rows that are new: first of their key in the batch and absent from the lake."""
    keys = list(EVENT_KEY[table])
    new = _first_of_key(rows.select(keys))
    new[_matching(rows, keys, lake.files(table, *partition_range(table, rows)))] = False
    return new


def _orphans(rows: pa.Table, lake: Lake) -> np.ndarray:
    """Engagements with no logged impression of the same request and item (looked up a day back too)."""
    start, end = partition_range("engagements", rows)
    files = lake.files("impressions", start - dt.timedelta(days=1), end)
    orphan = np.ones(rows.num_rows, dtype=bool)
    orphan[_matching(rows, ["request_id", "item_id"], files)] = False
    return orphan


def _keep(rows: pa.Table, mask: np.ndarray) -> pa.Table:
    return rows if mask.all() else rows.filter(pa.array(mask))


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise IngestError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")


def ingest(
    path: str | Path,
    table: str,
    fmt: Format,
    lake: Lake,
    quarantine_root: str | Path,
    now: dt.datetime | None = None,
) -> IngestReport:
    """Validate one file against ``table``'s contract; clean new rows to the lake, failures to quarantine."""
    _check_table(table)
    path = Path(path)
    raw, lines, malformed = read_file(path, fmt)
    return ingest_table(raw, table, lake, quarantine_root, source=path, now=now, lines=lines, malformed=malformed)


def ingest_table(
    raw: pa.Table,
    table: str,
    lake: Lake,
    quarantine_root: str | Path,
    source: str | Path,
    now: dt.datetime | None = None,
    lines: np.ndarray | None = None,
    malformed: Sequence[tuple[int, str]] = (),
) -> IngestReport:
    """Ingest rows already in memory, as read from ``source``: the contract, dedupe, quarantine and lake steps.

    ``lines`` gives the 1-based line of each row in ``source`` (default: row i is
    line i + 1); ``malformed`` lists (line, text) of lines that were not rows at
    all, each quarantined as ``malformed:not_a_json_object``.
    """
    _check_table(table)
    now = now or dt.datetime.now(dt.UTC)
    report = IngestReport(source=str(source), table=table, rows_in=raw.num_rows + len(malformed))

    rows, reasons = coerce(table, raw)
    reasons = pc.coalesce(reasons, validate(table, rows, now))
    ok = pc.is_null(reasons).to_numpy(zero_copy_only=False, writable=True)
    if table == "engagements" and ok.any():
        passed = np.flatnonzero(ok)
        orphans = passed[_orphans(_keep(rows, ok), lake)]
        reasons = pc.coalesce(reasons, reasons_at(len(ok), orphans, ["orphan:no_matching_impression"] * len(orphans)))
        ok[orphans] = False
    clean = _keep(rows, ok)
    new = _dedupe(table, clean, lake) if clean.num_rows else np.zeros(0, dtype=bool)
    report.duplicates = int((~new).sum())

    if not ok.all() or malformed:
        quarantine = _quarantine_rows(str(source), table, raw, lines, np.flatnonzero(~ok), reasons, malformed, now)
        report.quarantined = quarantine.num_rows
        report.reasons = dict(Counter(quarantine["reason"].to_pylist()))
        digest = hashlib.sha256(f"{Path(source).resolve()}:{now.isoformat()}".encode()).hexdigest()[:12]
        target = Path(quarantine_root) / table / f"date={now:%Y-%m-%d}" / f"{Path(source).stem}-{digest}.parquet"
        atomic_write_parquet(target, quarantine)
    report.partitions = lake.append(table, _keep(clean, new), [str(source)])
    report.written = sum(report.partitions.values())
    return report


def _quarantine_rows(
    source: str,
    table: str,
    raw: pa.Table,
    lines: np.ndarray | None,
    bad: np.ndarray,
    reasons: pa.Array,
    malformed: Sequence[tuple[int, str]],
    now: dt.datetime,
) -> pa.Table:
    # A table without columns (every line was `{}`) has rows but no records to list.
    records = raw.take(pa.array(bad, pa.int64())).to_pylist() if raw.num_columns else [{}] * len(bad)
    raw_rows = [json.dumps(r, default=str, sort_keys=True) for r in records]
    line_numbers = (bad + 1 if lines is None else lines[bad]).tolist() + [n for n, _ in malformed]
    n = len(line_numbers)
    return pa.Table.from_arrays(
        [
            pa.array([source] * n, pa.string()),
            pa.array(line_numbers, pa.int64()),
            pa.array([table] * n, pa.string()),
            pa.array(
                reasons.take(pa.array(bad, pa.int64())).to_pylist() + ["malformed:not_a_json_object"] * len(malformed),
                pa.string(),
            ),
            pa.array(raw_rows + [text for _, text in malformed], pa.string()),
            pa.array([now] * n, TIMESTAMP),
        ],
        schema=QUARANTINE,
    )
