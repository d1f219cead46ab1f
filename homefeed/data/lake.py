"""The lake: canonical tables as Parquet partitioned by table and date, with a manifest per partition.

A partition is ``<root>/<table>/date=YYYY-MM-DD/``; its ``_manifest.json`` lists
the committed files with their rows, checksum and source files, so any stage can
say exactly what it read, and a file a crash left behind without a manifest
entry is never read.  Events are partitioned by the day of their timestamp;
users, a slowly growing dimension, by the month they signed up.

What is guaranteed, and how (the README's *Reliability* section lists the tests):

- **One writer per table at a time.** Writers hold the table's lock
  (:func:`homefeed.files.lock`: an OS lock the kernel releases when a killed
  process dies, so a crash never leaves a table locked) from the moment they
  compare their rows with the stored ones until the new manifest is in place.
  Two ingests into one day therefore neither lose rows nor store one twice.
- **Readers need no lock.** A manifest is replaced in one rename and a file it
  names is never changed or removed, so a reader sees the partition before a
  write or after it.
- **Damage is an error, never an empty partition.** A partition's first write
  leaves a marker (``_new``) until its manifest exists; a folder holding data
  files with neither is a lost manifest, a :class:`DamagedStateError` naming the
  folder, as is a corrupt manifest or a missing file.  Reads that feed a
  computation (the ETL, the dataset build) also check every file's SHA-256
  against its manifest (:meth:`Lake.checksums` with ``verify``).
- **A killed writer's leftovers go** the next time the table is written
  (:meth:`Lake.sweep`, under the lock): temporary files, files no manifest
  names, partitions whose first write never committed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from filelock import FileLock

from homefeed.errors import DamagedStateError
from homefeed.files import atomic_write_parquet, atomic_write_text, lock, sha256_file
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
#: Entity tables hold one row per key, whichever partition a re-sent row's time would put it in.
ENTITIES = frozenset({"users", "items"})
#: How many days either side of its own an impression logged again (a retry, a replayed log) is looked for.
RELOG_DAYS = 1
MANIFEST = "_manifest.json"
#: Marks a partition whose first write has not committed yet (a killed write leaves it for :meth:`Lake.sweep`).
NEW = "_new"
LOCKS = ".locks"
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_PART = re.compile(r"^part-.*\.parquet$")

#: What to do about a damaged partition of the lake: ingested data cannot be recomputed, only restored.
LAKE_REPAIR = (
    "restore it from a backup, or remove the folder {partition} and ingest that day's source files again "
    "(a manifest's `sources` name them)"
)


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


#: The partition of rows whose time is unknown (a user with no sign-up time): the epoch, never a real day.
UNKNOWN_TIME = dt.date(1970, 1, 1)


def partition_dates(table: str, rows: pa.Table) -> pa.Array:
    """The partition date of each row; `UNKNOWN_TIME` for a row whose (nullable) time column is null."""
    days = pc.cast(rows[TIME_COLUMN[table]], pa.date32())
    if table in MONTHLY:
        days = pc.floor_temporal(days, unit="month")
    days = pc.fill_null(days, pa.scalar(UNKNOWN_TIME, pa.date32()))
    return days.combine_chunks() if isinstance(days, pa.ChunkedArray) else days


def partition_range(table: str, rows: pa.Table) -> tuple[dt.date, dt.date]:
    """The first and last partition date of non-empty ``rows``, from their min and max time (no date per row)."""
    column = TIME_COLUMN[table]
    bounds = pc.min_max(rows[column])
    ends = [v for v in (bounds["min"].as_py(), bounds["max"].as_py()) if v is not None]
    if rows[column].null_count:
        ends = [dt.datetime(1970, 1, 1, tzinfo=dt.UTC), *ends]
    ends = [ends[0], ends[-1]]
    first, last = partition_dates(table, pa.table({column: pa.array(ends, rows.schema.field(column).type)})).to_pylist()
    return first, last


def register_view(con: duckdb.DuckDBPyConnection, name: str, files: Iterable[Path], columns: str = "*") -> None:
    """A DuckDB view over Parquet ``files``, their paths passed as values, never spliced into SQL text.

    A project root may hold any character (an apostrophe, a quote and a semicolon); DuckDB quotes the paths
    itself when it keeps the view's definition.
    """
    relation = con.read_parquet([str(f) for f in files])
    (relation if columns == "*" else relation.project(columns)).create_view(name, replace=True)


class Lake:
    """Reads and writes canonical tables under ``root``; every write is atomic and recorded in a manifest.

    ``repair`` says what to do about a damaged partition, with ``{partition}``, ``{table}`` and ``{date}``
    filled in: the lake's own data can only be restored, an ETL output can be recomputed.
    """

    def __init__(self, root: str | Path, repair: str = LAKE_REPAIR):
        self.root = Path(root)
        self.repair = repair

    def partition(self, table: str, date: dt.date) -> Path:
        return self.root / table / f"date={date:%Y-%m-%d}"

    def lock(self, name: str) -> FileLock:
        """The lock of one writer at a time on ``name`` (a table, or a job over this root): :func:`files.lock`."""
        return lock(self.root / LOCKS / f"{name}.lock")

    def damaged(self, table: str, date: dt.date, problem: str) -> DamagedStateError:
        """The error for a partition a reader cannot trust: what is wrong, and what to do about it."""
        part = self.partition(table, date)
        todo = self.repair.format(partition=part, table=table, date=f"{date:%Y-%m-%d}")
        return DamagedStateError(f"{part}: {problem}; {todo}")

    def manifest(self, table: str, date: dt.date) -> Manifest:
        """The partition's manifest; an empty one for a partition never written (or not committed yet)."""
        part = self.partition(table, date)
        path = part / MANIFEST
        try:
            return Manifest.load(path)
        except FileNotFoundError:
            if self._lost_manifest(part):
                raise self.damaged(table, date, f"holds data files but no {MANIFEST} (deleted?)") from None
            return Manifest(table=table, date=f"{date:%Y-%m-%d}")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self.damaged(table, date, f"{MANIFEST} is corrupt ({type(exc).__name__}: {exc})") from None

    def stamp(self, table: str, since: dt.date) -> tuple:
        """A cheap token of ``table``'s committed partitions from ``since`` on: it changes whenever one is written.

        A manifest is only ever replaced by a rename, so its inode and time say it changed without reading it:
        the service checks its catalogue this way every few seconds (~0.2 ms, against ~1 ms listing and reading
        the manifests), and reads the lake only when the token moved.
        """
        base = self.root / table
        out = []
        try:
            entries = list(os.scandir(base))
        except FileNotFoundError:
            return ()
        for entry in entries:
            match = _PARTITION.match(entry.name)
            if match is None or match.group(1) < f"{since:%Y-%m-%d}":
                continue
            try:
                st = os.stat(os.path.join(entry.path, MANIFEST))
            except FileNotFoundError:
                continue
            out.append((match.group(1), st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(sorted(out))

    def _lost_manifest(self, part: Path) -> bool:
        """Whether a partition folder without a manifest holds data files that no first write is creating.

        The marker goes only after the manifest is written, so a marker seen gone with the manifest still
        absent means none was ever written by a first write: the manifest was lost.
        """
        if (part / MANIFEST).exists() or (part / NEW).exists() or not part.is_dir():
            return False
        if not any(_PART.match(p.name) for p in part.iterdir()):
            return False
        return not (part / MANIFEST).exists()

    def dates(self, table: str) -> list[dt.date]:
        """Dates of the committed partitions of ``table``; a partition that lost its manifest is an error."""
        base = self.root / table
        if not base.exists():
            return []
        found = []
        for p in base.iterdir():
            if not (match := _PARTITION.match(p.name)):
                continue
            date = dt.date.fromisoformat(match.group(1))
            if (p / MANIFEST).exists():
                found.append(date)
            elif self._lost_manifest(p):
                raise self.damaged(table, date, f"holds data files but no {MANIFEST} (deleted?)")
        return sorted(found)

    def files(self, table: str, start: dt.date | None = None, end: dt.date | None = None) -> list[Path]:
        """Committed files of ``table`` with partition dates in [start, end]; a file its manifest names must exist."""
        out = []
        for date in self.dates(table):
            if (start is None or date >= start) and (end is None or date <= end):
                part = self.partition(table, date)
                for f in self.manifest(table, date).files:
                    if not (part / f.name).is_file():
                        raise self.damaged(table, date, f"{f.name} is named in its {MANIFEST} but missing")
                    out.append(part / f.name)
        return out

    def read(self, table: str, start: dt.date | None = None, end: dt.date | None = None) -> pa.Table:
        """The rows of ``table`` in partitions [start, end]; a canonical table exactly as the schema types it."""
        files = self.files(table, start, end)
        schema = TABLES.get(table)
        if not files:
            return schema.empty_table() if schema is not None else pa.table({})
        try:
            return ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table()
        except (pa.ArrowInvalid, OSError) as exc:
            # Which file: the checksums say (only on this failure path, where the time does not matter).
            self.checksums(files, verify=True)
            raise DamagedStateError(f"{self.root / table}: cannot be read ({exc})") from None

    def append(self, table: str, rows: pa.Table, sources: list[str]) -> dict[dt.date, int]:
        """Add canonical ``rows`` to their partitions: one new file and a new manifest per partition touched.

        Holds the table's lock; a caller that first compares its rows with the stored ones (ingestion's
        dedupe) holds it across both, so no other writer slips in between.
        """
        if rows.num_rows == 0:
            return {}
        first, last = partition_range(table, rows)
        dates = None if first == last else partition_dates(table, rows)  # one partition: no date per row needed
        targets = [first] if dates is None else pc.unique(dates).to_pylist()
        written: dict[dt.date, int] = {}
        with self.lock(table):
            self.sweep(table, targets)
            for date in targets:
                part_rows = rows if dates is None else rows.filter(pc.equal(dates, pa.scalar(date, pa.date32())))
                manifest = self.manifest(table, date)
                part = self._open(table, date)
                taken = {f.name for f in manifest.files}
                n = len(manifest.files)
                while (name := f"part-{n:05d}.parquet") in taken:
                    n += 1
                manifest.files.append(_write_part(part / name, part_rows, sorted(sources)))
                self._commit_manifest(part, manifest)
                written[date] = part_rows.num_rows
        return written

    def _open(self, table: str, date: dt.date) -> Path:
        """The partition's folder, marked as being created when it has no manifest yet."""
        part = self.partition(table, date)
        part.mkdir(parents=True, exist_ok=True)
        if not (part / MANIFEST).exists():
            (part / NEW).touch()
        return part

    @staticmethod
    def _commit_manifest(part: Path, manifest: Manifest) -> None:
        atomic_write_text(part / MANIFEST, manifest.dumps())
        (part / NEW).unlink(missing_ok=True)

    def stage(self, table: str, date: dt.date, rows: pa.Table, sources: list[str]) -> PartFile:
        """Write ``rows`` as a new file of the partition that no reader sees until :meth:`commit` names it.

        Call under the lock of the job that will commit it (the ETL's): :meth:`sweep` removes files no
        manifest names.
        """
        name = f"part-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}.parquet"
        return _write_part(self._open(table, date) / name, rows, sources)

    def commit(self, table: str, date: dt.date, staged: PartFile) -> None:
        """Make a staged file the whole partition, for derived tables where a re-run recomputes rather than adds.

        The manifest switches to the new file in one rename, so a reader sees the
        old partition or the new one, never a mix; files it no longer names go.
        """
        part = self.partition(table, date)
        self._commit_manifest(part, Manifest(table=table, date=f"{date:%Y-%m-%d}", files=[staged]))
        for stale in part.iterdir():
            if _PART.match(stale.name) and stale.name != staged.name:
                stale.unlink(missing_ok=True)

    def sweep(self, table: str, dates: Iterable[dt.date] | None = None) -> list[Path]:
        """Remove what killed writers of ``table`` left behind; call with the table's (or its job's) lock held.

        Temporary files of interrupted atomic writes, data files no manifest names, and partitions whose
        first write never committed go.  ``dates`` limits the full look (which reads each manifest) to
        those partitions; the others are looked at only when they show a temporary file or a marker.  A
        partition that lost its manifest, or holds a corrupt one, is left as it is: its files may be all
        there is of that day.
        Returns what was removed.
        """
        base = self.root / table
        removed: list[Path] = []
        if not base.is_dir():
            return removed
        full = None if dates is None else {f"date={d:%Y-%m-%d}" for d in dates}
        for part in base.iterdir():
            if not _PARTITION.match(part.name) or not part.is_dir():
                continue
            entries = {p.name: p for p in part.iterdir()}
            temporary = [p for name, p in entries.items() if name.startswith(".") and name.endswith(".tmp")]
            has_manifest = MANIFEST in entries
            if not has_manifest and NEW not in entries:
                continue  # nothing of ours in flight: a lost manifest, or an empty folder
            if full is not None and part.name not in full and NEW not in entries and not temporary:
                continue
            named = set()
            if has_manifest:
                date = dt.date.fromisoformat(part.name.removeprefix("date="))
                try:
                    named = {f.name for f in self.manifest(table, date).files}
                except DamagedStateError:
                    continue  # a corrupt manifest: which files it named is unknown, so nothing goes
            unnamed = [p for name, p in entries.items() if _PART.match(name) and name not in named]
            for path in [*temporary, *unnamed, *([entries[NEW]] if NEW in entries else [])]:
                path.unlink(missing_ok=True)
                removed.append(path)
            if not has_manifest and not any(part.iterdir()):
                part.rmdir()
                removed.append(part)
        return removed

    def checksums(self, files: list[Path], verify: bool = False) -> dict[str, str]:
        """``table/date=D/name`` → SHA-256 of committed ``files`` (from :meth:`files`), as their manifests record.

        Keys are relative to the root, so a copy of the lake elsewhere names the same inputs.  ``verify``
        also hashes each file: bytes that no longer match their manifest are a :class:`DamagedStateError`
        (what the ETL and the dataset build do before reading, so a result never rests on changed bytes).
        """
        manifests: dict[Path, dict[str, str]] = {}
        out = {}
        for path in files:
            part = path.parent
            table, date = part.parent.name, dt.date.fromisoformat(part.name.removeprefix("date="))
            if part not in manifests:
                manifests[part] = {f.name: f.sha256 for f in self.manifest(table, date).files}
            expected = manifests[part].get(path.name)
            if expected is None:
                raise self.damaged(table, date, f"{path.name} is no longer named in its {MANIFEST}")
            if verify:
                if not path.is_file():
                    raise self.damaged(table, date, f"{path.name} is named in its {MANIFEST} but missing")
                if sha256_file(path) != expected:
                    raise self.damaged(table, date, f"{path.name}: its bytes no longer match its {MANIFEST} checksum")
            out[f"{part.parent.name}/{part.name}/{path.name}"] = expected
        return out

    def verify(self, table: str, date: dt.date) -> list[str]:
        """Files of a partition whose bytes no longer match their manifest checksum."""
        part = self.partition(table, date)
        return [
            f.name
            for f in self.manifest(table, date).files
            if not (part / f.name).exists() or sha256_file(part / f.name) != f.sha256
        ]
