"""Ingestion: files in, contract-checked rows into the lake, every failing row into quarantine.

The invariant, for every file: rows in = rows written + duplicates skipped +
rows quarantined.  A file that cannot be parsed at all is refused by name (and
line, where there is one) before anything is written; a malformed line of a
JSON Lines file (not JSON, not an object, not valid UTF-8) is a quarantined
row, not a refused file.  Re-ingesting a file adds nothing, to the lake or to
the quarantine: rows are deduplicated on each table's event key against the
lake (an entity's key in every partition, an impression's within
:data:`~homefeed.data.lake.RELOG_DAYS` of its day), and a quarantined row
already held for the same source, line and reason is not written again.

An engagement is checked against its impression row by row, whatever else the
file holds: one logged on the engagement's day or the day before, no later
than the engagement, to the same user.

Concurrent ingests are safe: the comparison with the lake, the quarantine
write and the append happen under the table's lock (:meth:`Lake.lock`); the
parsing and the contract, where the time goes, run before it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.data.contracts import coerce, reasons_at, validate
from homefeed.data.lake import ENTITIES, EVENT_KEY, RELOG_DAYS, Lake, partition_range
from homefeed.data.readers import CHUNK_BYTES, Format, IngestError, Malformed, read_chunks
from homefeed.files import atomic_write_parquet
from homefeed.schema import TABLES, TIMESTAMP

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

    def add(self, other: IngestReport) -> None:
        """Count another chunk of the same source in."""
        self.rows_in += other.rows_in
        self.written += other.written
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.reasons = dict(Counter(self.reasons) + Counter(other.reasons))
        self.partitions = dict(Counter(self.partitions) + Counter(other.partitions))


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
    stored = _scan(files, columns, batch[columns[0]])
    return batch.lazy().join(stored, on=columns, how="semi").collect()["__row"].to_numpy()


def _scan(files: list[Path], columns: list[str], wanted: pl.Series) -> pl.LazyFrame:
    """``columns`` of the Parquet ``files``, only rows whose first column is among ``wanted``.

    Paths are taken as they are (``glob=False``): a project folder named ``logs[1]`` is not a pattern.
    """
    stored = pl.scan_parquet([str(f) for f in files], hive_partitioning=False, glob=False).select(columns)
    return stored.filter(pl.col(columns[0]).is_in(wanted.unique().implode()))


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
    """Mask of rows that are new: first of their key in the batch and absent from the lake.

    Where a stored row with the same key can be: an entity (user, item) anywhere, since a re-sent row with
    another time would land in another partition and the tables hold one row per key; an impression logged
    again within :data:`RELOG_DAYS` of its day; an engagement (its time is part of its key) only in its own.
    """
    keys = list(EVENT_KEY[table])
    new = _first_of_key(rows.select(keys))
    if table in ENTITIES:
        files = lake.files(table)
    else:
        first, last = partition_range(table, rows)
        reach = dt.timedelta(days=RELOG_DAYS if table == "impressions" else 0)
        files = lake.files(table, first - reach, last + reach)
    new[_matching(rows, keys, files)] = False
    return new


#: Why an engagement does not follow an impression of its own.
ORPHAN = "orphan:no_matching_impression"
BEFORE_IMPRESSION = "ts:before_impression"
OTHER_USER = "user_id:not_the_impressions_user"


def _unmatched(rows: pa.Table, lake: Lake) -> tuple[np.ndarray, list[str]]:
    """Engagements that do not follow an impression of theirs, and why, judged row by row.

    An engagement needs an impression of the same request and item, logged on the engagement's day or the
    day before (its partition, or the one before), no later than the engagement, to the same user.  Each
    row is looked up in its own two days, so the answer does not depend on what else the file holds.
    """
    start, end = partition_range("engagements", rows)
    files = lake.files("impressions", start - dt.timedelta(days=1), end)
    n = rows.num_rows
    if not files:
        return np.arange(n), [ORPHAN] * n
    columns = ["request_id", "item_id", "ts", "user_id"]
    batch = pl.from_arrow(rows.select(columns)).with_row_index("__row")
    stored = _scan(files, columns, batch["request_id"]).rename({"ts": "imp_ts", "user_id": "imp_user"})
    day = pl.col("ts").dt.epoch("d")
    matches = (
        batch.lazy()
        .join(stored, on=["request_id", "item_id"], how="inner")
        .select(
            "__row",
            found=pl.col("imp_ts").dt.epoch("d").is_between(day - 1, day),
            after=pl.col("imp_ts") <= pl.col("ts"),
            same_user=pl.col("imp_user") == pl.col("user_id"),
        )
        .collect()
    )
    # Per match, then per row the best match wins: each assignment below overwrites with a better verdict.
    index = matches["__row"].to_numpy()
    found = matches["found"].to_numpy()
    after = found & matches["after"].to_numpy()
    same = after & matches["same_user"].to_numpy()
    reason = np.full(n, ORPHAN, dtype=object)
    reason[index[found]] = BEFORE_IMPRESSION
    reason[index[after]] = OTHER_USER
    reason[index[same]] = None
    bad = np.flatnonzero(reason != None)  # noqa: E711 - an element-wise comparison
    return bad, reason[bad].tolist()


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
    chunk_bytes: int = CHUNK_BYTES,
) -> IngestReport:
    """Validate one file against ``table``'s contract; clean new rows to the lake, failures to quarantine.

    The file is read a chunk at a time (CSV and JSON Lines: about ``chunk_bytes``), each chunk ingested before the
    next is read, so memory holds one chunk.  A row repeated in a later chunk is a duplicate of the one the lake
    now holds, exactly as within a chunk, and the report adds the chunks up: rows in = written + duplicates +
    quarantined for the file.
    """
    _check_table(table)
    path = Path(path)
    now = now or dt.datetime.now(dt.UTC)
    report = IngestReport(source=str(path), table=table)
    for chunk in read_chunks(path, fmt, chunk_bytes):
        report.add(
            ingest_table(
                chunk.rows, table, lake, quarantine_root, path, now=now, lines=chunk.lines, malformed=chunk.malformed
            )
        )
    return report


def ingest_table(
    raw: pa.Table,
    table: str,
    lake: Lake,
    quarantine_root: str | Path,
    source: str | Path,
    now: dt.datetime | None = None,
    lines: np.ndarray | None = None,
    malformed: Sequence[Malformed] = (),
) -> IngestReport:
    """Ingest rows already in memory, as read from ``source``: the contract, dedupe, quarantine and lake steps.

    ``lines`` gives the 1-based line of each row in ``source`` (default: row i is
    line i + 1); ``malformed`` lists (line, text, reason) of lines that were not rows
    at all, each quarantined with its reason.
    """
    _check_table(table)
    now = now or dt.datetime.now(dt.UTC)
    report = IngestReport(source=str(source), table=table, rows_in=raw.num_rows + len(malformed))

    rows, reasons = coerce(table, raw)
    reasons = pc.coalesce(reasons, validate(table, rows, now))
    ok = pc.is_null(reasons).to_numpy(zero_copy_only=False, writable=True)
    if table == "engagements" and ok.any():
        passed = np.flatnonzero(ok)
        unmatched, why = _unmatched(_keep(rows, ok), lake)
        reasons = pc.coalesce(reasons, reasons_at(len(ok), passed[unmatched], why))
        ok[passed[unmatched]] = False
    clean = _keep(rows, ok)

    with lake.lock(table):  # from the comparison with the lake to the append: no other writer in between
        new = _dedupe(table, clean, lake) if clean.num_rows else np.zeros(0, dtype=bool)
        report.duplicates = int((~new).sum())
        if not ok.all() or malformed:
            quarantine = _quarantine_rows(str(source), table, raw, lines, np.flatnonzero(~ok), reasons, malformed, now)
            report.quarantined = quarantine.num_rows
            report.reasons = dict(Counter(quarantine["reason"].to_pylist()))
            _store_quarantine(Path(quarantine_root), table, str(source), quarantine, now)
        report.partitions = lake.append(table, _keep(clean, new), [str(source)])
    report.written = sum(report.partitions.values())
    return report


#: What makes a quarantined row the same one again: re-ingesting a file does not quarantine it twice.
QUARANTINE_KEY = ["source", "line", "reason", "raw"]


def _store_quarantine(root: Path, table: str, source: str, rows: pa.Table, now: dt.datetime) -> None:
    """Write the quarantined rows not already held for ``source`` (a file ingested again) to a new file.

    Called with the table's lock held, so a temporary file found here is a killed ingest's, and goes.
    """
    held = []
    if (root / table).is_dir():
        for leftover in (root / table).rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        held = sorted((root / table).rglob("*.parquet"))
    if held:
        stored = _scan(held, QUARANTINE_KEY, pl.Series([source]))
        fresh = pl.from_arrow(rows).join(stored.collect(), on=QUARANTINE_KEY, how="anti", nulls_equal=True)
        if fresh.is_empty():
            return
        rows = fresh.to_arrow().cast(QUARANTINE)
    # The first line in the name too: the chunks of one file, quarantined at one ``now``, get a file each.
    first = pc.min(rows["line"]).as_py()
    digest = hashlib.sha256(f"{Path(source).resolve()}:{now.isoformat()}:{first}".encode()).hexdigest()[:12]
    atomic_write_parquet(root / table / f"date={now:%Y-%m-%d}" / f"{Path(source).stem}-{digest}.parquet", rows)


def _quarantine_rows(
    source: str,
    table: str,
    raw: pa.Table,
    lines: np.ndarray | None,
    bad: np.ndarray,
    reasons: pa.Array,
    malformed: Sequence[Malformed],
    now: dt.datetime,
) -> pa.Table:
    # A table without columns (every line was `{}`) has rows but no records to list.
    records = raw.take(pa.array(bad, pa.int64())).to_pylist() if raw.num_columns else [{}] * len(bad)
    raw_rows = [json.dumps(r, default=str, sort_keys=True) for r in records]
    line_numbers = (bad + 1 if lines is None else lines[bad]).tolist() + [n for n, _, _ in malformed]
    n = len(line_numbers)
    return pa.Table.from_arrays(
        [
            pa.array([source] * n, pa.string()),
            pa.array(line_numbers, pa.int64()),
            pa.array([table] * n, pa.string()),
            pa.array(
                reasons.take(pa.array(bad, pa.int64())).to_pylist() + [reason for _, _, reason in malformed],
                pa.string(),
            ),
            pa.array(raw_rows + [text for _, text, _ in malformed], pa.string()),
            pa.array([now] * n, TIMESTAMP),
        ],
        schema=QUARANTINE,
    )
