"""The lake: canonical tables as Parquet partitioned by table and date, with a manifest per partition.

A partition is ``<root>/<table>/date=YYYY-MM-DD/``; its ``_manifest.json`` lists
the committed files with their rows, checksum and source files, so any stage can
say exactly what it read, and a file a crash left behind without a manifest
entry is never read.  Events are partitioned by the day of their timestamp;
users, a slowly growing dimension, by the month they signed up.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from homefeed.files import atomic_write_parquet, atomic_write_text, sha256_file
from homefeed.schema import SCHEMA_VERSION, TABLES, TIME_COLUMN

#: Tables partitioned by month of their time column rather than by day.
MONTHLY = {"users"}
#: Columns that identify one event: re-ingesting a row with the same key adds nothing.
EVENT_KEY = {
    "users": ("user_id",),
    "items": ("item_id",),
    "impressions": ("request_id", "position"),
    "engagements": ("request_id", "item_id", "action", "ts"),
}
MANIFEST = "_manifest.json"


@dataclass
class PartFile:
    name: str
    rows: int
    sha256: str
    sources: list[str]
    written_at: str


@dataclass
class Manifest:
    table: str
    date: str
    schema_version: int = SCHEMA_VERSION
    files: list[PartFile] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = [PartFile(**f) for f in data.pop("files")]
        data.pop("rows", None)
        return cls(**data, files=files)

    def dumps(self) -> str:
        return json.dumps({**asdict(self), "rows": self.rows}, indent=1, sort_keys=True)


def _write_part(path: Path, rows: pa.Table, sources: list[str]) -> PartFile:
    """Write one data file atomically and describe it for the manifest."""
    atomic_write_parquet(path, rows)
    return PartFile(
        name=path.name,
        rows=rows.num_rows,
        sha256=sha256_file(path),
        sources=sources,
        written_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def partition_dates(table: str, rows: pa.Table) -> pa.Array:
    """The partition date of each row."""
    days = pc.cast(rows[TIME_COLUMN[table]], pa.date32())
    if table in MONTHLY:
        days = pc.floor_temporal(days, unit="month")
    return days.combine_chunks() if isinstance(days, pa.ChunkedArray) else days


def partition_range(table: str, rows: pa.Table) -> tuple[dt.date, dt.date]:
    """The first and last partition date of non-empty ``rows``, from their min and max time (no date per row)."""
    column = TIME_COLUMN[table]
    bounds = pc.min_max(rows[column])
    ends = pa.table({column: pa.array([bounds["min"].as_py(), bounds["max"].as_py()], rows.schema.field(column).type)})
    first, last = partition_dates(table, ends).to_pylist()
    return first, last


class Lake:
    """Reads and writes canonical tables under ``root``; every write is atomic and recorded in a manifest."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def partition(self, table: str, date: dt.date) -> Path:
        return self.root / table / f"date={date:%Y-%m-%d}"

    def manifest(self, table: str, date: dt.date) -> Manifest:
        path = self.partition(table, date) / MANIFEST
        return Manifest.load(path) if path.exists() else Manifest(table=table, date=f"{date:%Y-%m-%d}")

    def dates(self, table: str) -> list[dt.date]:
        base = self.root / table
        if not base.exists():
            return []
        found = [dt.date.fromisoformat(p.name[5:]) for p in base.glob("date=*") if (p / MANIFEST).exists()]
        return sorted(found)

    def files(self, table: str, start: dt.date | None = None, end: dt.date | None = None) -> list[Path]:
        """Committed files of ``table`` with partition dates in [start, end]."""
        out = []
        for date in self.dates(table):
            if (start is None or date >= start) and (end is None or date <= end):
                part = self.partition(table, date)
                out.extend(part / f.name for f in self.manifest(table, date).files)
        return out

    def read(self, table: str, start: dt.date | None = None, end: dt.date | None = None) -> pa.Table:
        """The rows of ``table`` in partitions [start, end]; a canonical table exactly as the schema types it."""
        files = self.files(table, start, end)
        schema = TABLES.get(table)
        if not files:
            return schema.empty_table() if schema is not None else pa.table({})
        return ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table()

    def append(self, table: str, rows: pa.Table, sources: list[str]) -> dict[dt.date, int]:
        """Add canonical ``rows`` to their partitions: one new file and a new manifest per partition touched."""
        if rows.num_rows == 0:
            return {}
        first, last = partition_range(table, rows)
        dates = None if first == last else partition_dates(table, rows)  # one partition: no date per row needed
        written: dict[dt.date, int] = {}
        for date in [first] if dates is None else pc.unique(dates).to_pylist():
            part_rows = rows if dates is None else rows.filter(pc.equal(dates, pa.scalar(date, pa.date32())))
            manifest = self.manifest(table, date)
            name = f"part-{len(manifest.files):05d}.parquet"
            path = self.partition(table, date) / name
            manifest.files.append(_write_part(path, part_rows, sorted(sources)))
            atomic_write_text(path.parent / MANIFEST, manifest.dumps())
            written[date] = part_rows.num_rows
        return written

    def stage(self, table: str, date: dt.date, rows: pa.Table, sources: list[str]) -> PartFile:
        """Write ``rows`` as a new file of the partition that no reader sees until :meth:`commit` names it."""
        name = f"part-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}.parquet"
        return _write_part(self.partition(table, date) / name, rows, sources)

    def commit(self, table: str, date: dt.date, staged: PartFile) -> None:
        """Make a staged file the whole partition, for derived tables where a re-run recomputes rather than adds.

        The manifest switches to the new file in one rename, so a reader sees the
        old partition or the new one, never a mix; files it no longer names go.
        """
        part = self.partition(table, date)
        atomic_write_text(part / MANIFEST, Manifest(table=table, date=f"{date:%Y-%m-%d}", files=[staged]).dumps())
        for stale in part.glob("part-*.parquet"):
            if stale.name != staged.name:
                stale.unlink(missing_ok=True)

    def checksums(self, files: list[Path]) -> dict[str, str]:
        """``table/date=D/name`` → SHA-256 of committed ``files`` (from :meth:`files`), as their manifests record.

        Keys are relative to the root, so a copy of the lake elsewhere names the same inputs.
        """
        manifests: dict[Path, dict[str, str]] = {}
        out = {}
        for path in files:
            part = path.parent
            if part not in manifests:
                manifest = Manifest.load(part / MANIFEST)
                manifests[part] = {f.name: f.sha256 for f in manifest.files}
            out[f"{part.parent.name}/{part.name}/{path.name}"] = manifests[part][path.name]
        return out

    def verify(self, table: str, date: dt.date) -> list[str]:
        """Files of a partition whose bytes no longer match their manifest checksum."""
        part = self.partition(table, date)
        return [
            f.name
            for f in self.manifest(table, date).files
            if not (part / f.name).exists() or sha256_file(part / f.name) != f.sha256
        ]
