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
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from homefeed.data.contracts import coerce, validate
from homefeed.data.lake import EVENT_KEY, Lake, partition_dates
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


class IngestError(ValueError):
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


def _read_jsonl(path: Path) -> tuple[pa.Table, list[int], list[tuple[int, str]]]:
    """Rows of a JSON Lines file, their line numbers, and the lines that are not JSON objects."""
    try:
        table = pa_json.read_json(path)
        return table, list(range(1, table.num_rows + 1)), []
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Slow path, only for files with broken lines: find them, keep the rest.
    rows, lines, bad = [], [], []
    with path.open("r", encoding="utf-8", errors="replace") as fh:
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
        return pa.Table.from_struct_array(pa.array([{}] * len(rows), pa.struct([]))), lines, bad
    columns = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types or huge ints: keep as text
            columns[key] = pa.array([_text(v) for v in values], pa.string())
    table = pa.table(columns)
    return table, lines, bad


def _text(value: object) -> str | None:
    return None if value is None else value if isinstance(value, str) else json.dumps(value)


def read_file(path: str | Path, fmt: Format) -> tuple[pa.Table, list[int], list[tuple[int, str]]]:
    """Parse a file: (rows, 1-based line of each row, malformed lines).  Raises IngestError if unreadable."""
    path = Path(path)
    if fmt not in FORMATS:
        raise IngestError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    try:
        if fmt == "parquet":
            table = pq.read_table(path)
            return table, list(range(1, table.num_rows + 1)), []
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
            # Every column stays text: the contract decides types row by row.
            options = pa_csv.ConvertOptions(strings_can_be_null=True, column_types=dict.fromkeys(header, pa.string()))
            table = pa_csv.read_csv(path, convert_options=options)
            return table, list(range(1, table.num_rows + 1)), []
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
    """Indices of ``rows`` whose ``columns`` equal those of some row in the Parquet ``files``."""
    if not files or rows.num_rows == 0:
        return np.empty(0, dtype=np.int64)
    con = duckdb.connect()
    try:
        con.register("batch", rows.select(columns).append_column("__row", pa.array(np.arange(rows.num_rows))))
        on = " and ".join(f"b.{c} = e.{c}" for c in columns)
        query = f"select b.__row from batch b semi join read_parquet({[str(f) for f in files]!r}) e on {on}"
        return con.sql(query).fetchnumpy()["__row"]
    finally:
        con.close()


def _dedupe(table: str, rows: pa.Table, lake: Lake) -> np.ndarray:
    """Mask of rows that are new: first of their key in the batch and absent from the lake."""
    keys = list(EVENT_KEY[table])
    con = duckdb.connect()
    try:
        con.register("batch", rows.select(keys).append_column("__row", pa.array(np.arange(rows.num_rows))))
        query = f"select __row from batch qualify row_number() over (partition by {', '.join(keys)} order by __row) = 1"
        first = con.sql(query).fetchnumpy()["__row"]
    finally:
        con.close()
    dates = partition_dates(table, rows).to_pylist()
    new = np.zeros(rows.num_rows, dtype=bool)
    new[first] = True
    new[_matching(rows, keys, lake.files(table, min(dates), max(dates)))] = False
    return new


def _orphans(rows: pa.Table, lake: Lake) -> np.ndarray:
    """Engagements with no logged impression of the same request and item (looked up a day back too)."""
    dates = partition_dates("engagements", rows).to_pylist()
    files = lake.files("impressions", min(dates) - dt.timedelta(days=1), max(dates))
    orphan = np.ones(rows.num_rows, dtype=bool)
    orphan[_matching(rows, ["request_id", "item_id"], files)] = False
    return orphan


def ingest(
    path: str | Path,
    table: str,
    fmt: Format,
    lake: Lake,
    quarantine_root: str | Path,
    now: dt.datetime | None = None,
) -> IngestReport:
    """Validate one file against ``table``'s contract; clean new rows to the lake, failures to quarantine."""
    if table not in TABLES:
        raise IngestError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    path = Path(path)
    raw, lines, malformed = read_file(path, fmt)
    return ingest_table(raw, path, table, lake, quarantine_root, now, lines=lines, malformed=malformed)


def ingest_table(
    raw: pa.Table,
    source: str | Path,
    table: str,
    lake: Lake,
    quarantine_root: str | Path,
    now: dt.datetime | None = None,
    *,
    lines: list[int] | None = None,
    malformed: list[tuple[int, str]] | None = None,
) -> IngestReport:
    """The same contract, quarantine, dedupe and lake path for rows already in memory (an adapter's output).

    ``source`` is the file the rows came from (recorded in quarantine and manifests); ``lines`` is each
    row's 1-based line in it (default 1..n).
    """
    if table not in TABLES:
        raise IngestError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    now = now or dt.datetime.now(dt.UTC)
    path = Path(source)
    lines = list(range(1, raw.num_rows + 1)) if lines is None else lines
    malformed = malformed or []
    report = IngestReport(source=str(path), table=table, rows_in=raw.num_rows + len(malformed))

    rows, reasons = coerce(table, raw)
    contract_reasons = validate(table, rows, now)
    reasons = np.where(reasons == "", contract_reasons, reasons)
    ok = reasons == ""
    if table == "engagements" and ok.any():
        orphan = np.zeros(len(ok), dtype=bool)
        orphan[np.flatnonzero(ok)] = _orphans(rows.filter(pa.array(ok)), lake)
        reasons[orphan] = "orphan:no_matching_impression"
        ok &= ~orphan
    clean = rows.filter(pa.array(ok))
    new = _dedupe(table, clean, lake) if clean.num_rows else np.zeros(0, dtype=bool)
    report.duplicates = int((~new).sum())

    bad = np.flatnonzero(~ok)
    quarantine = _quarantine_rows(path, table, raw, lines, bad, reasons, malformed, now)
    report.quarantined = quarantine.num_rows
    report.reasons = dict(Counter(quarantine["reason"].to_pylist()))
    if quarantine.num_rows:
        digest = hashlib.sha256(f"{path.resolve()}:{now.isoformat()}".encode()).hexdigest()[:12]
        target = Path(quarantine_root) / table / f"date={now:%Y-%m-%d}" / f"{path.stem}-{digest}.parquet"
        atomic_write_parquet(target, quarantine)
    report.partitions = lake.append(table, clean.filter(pa.array(new)), [str(path)])
    report.written = sum(report.partitions.values())
    return report


def _quarantine_rows(
    path: Path,
    table: str,
    raw: pa.Table,
    lines: list[int],
    bad: np.ndarray,
    reasons: np.ndarray,
    malformed: list[tuple[int, str]],
    now: dt.datetime,
) -> pa.Table:
    # A table without columns (every line was `{}`) has rows but no records to list.
    records = raw.take(pa.array(bad, pa.int64())).to_pylist() if raw.num_columns else [{}] * len(bad)
    raw_rows = [json.dumps(r, default=str, sort_keys=True) for r in records]
    line_numbers = [lines[i] for i in bad.tolist()] + [n for n, _ in malformed]
    n = len(line_numbers)
    return pa.Table.from_arrays(
        [
            pa.array([str(path)] * n, pa.string()),
            pa.array(line_numbers, pa.int64()),
            pa.array([table] * n, pa.string()),
            pa.array([str(r) for r in reasons[bad]] + ["malformed:not_a_json_object"] * len(malformed), pa.string()),
            pa.array(raw_rows + [text for _, text in malformed], pa.string()),
            pa.array([now] * n, TIMESTAMP),
        ],
        schema=QUARANTINE,
    )
