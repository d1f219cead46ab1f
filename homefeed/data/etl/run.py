"""Running the ETL: choose what is stale, feed the engine the lake partitions it needs, write snapshots.

A snapshot for day D is recomputed only when what it was computed from has
changed: each output partition's manifest lists every lake file it read (with
its checksum) and the job parameters, so re-running a day whose inputs are
unchanged does nothing, and a late-arriving partition recomputes exactly the
days whose inputs reach it (:attr:`Params.reach`).  Outputs replace their partition atomically;
a run that fails midway leaves the previous snapshots readable.

What a run can trust, and what it refuses:

- **One run at a time per snapshot folder**: a run holds the folder's lock
  (:meth:`Lake.lock`) from choosing what is stale to its last commit, so two
  runs over the same days cannot delete each other's files; the second waits,
  then finds the days up to date.  Under the lock it first removes what a
  killed run left (its staging folder, files no manifest names, spill files).
- **Verified inputs**: the lake files a run reads are those the manifests named
  when the run listed them, once, and each file's SHA-256 is checked before the
  engine reads it (``--force`` too): a deleted or changed file is a
  :class:`DamagedStateError`, never a day of zeros.  An ingest during the run
  only adds files the next run will see.
- **Repair**: a snapshot whose manifest is corrupt or lost is stale, and is recomputed.
- **Days the lake holds**: a range reaching before the lake's first event or
  after its last is refused; it would write empty snapshots that
  materialization would then load into the online store.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from homefeed.data.etl.declared import check_declared
from homefeed.data.etl.engines import SPILL, Engine
from homefeed.data.etl.jobs import Params, day_number, outputs, steps
from homefeed.data.lake import Lake
from homefeed.errors import DamagedStateError, HomefeedError
from homefeed.schema import TIMESTAMP, days

#: What to do about a damaged snapshot: the ETL recomputes it.
ETL_REPAIR = "run `homefeed data etl --start {date} --end {date}`: the ETL recomputes a snapshot it finds damaged"
#: A run's staging folder under the snapshot folder (a killed run's is removed by the next one).
STAGING_PREFIX = ".etl-"
#: The lock a run holds on its snapshot folder.
LOCK = "etl"
EVENTS = ("impressions", "engagements")


class EtlError(HomefeedError, ValueError):
    """The ETL cannot run as asked (no data for the days, a bad range)."""


@dataclass
class EtlReport:
    engine: str
    computed: list[dt.date] = field(default_factory=list)
    up_to_date: list[dt.date] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)  # where the time went, step by step
    seconds: float = 0.0


def snapshot_lake(root: str | Path) -> Lake:
    """The ETL's outputs: a :class:`Lake` whose damage message says to recompute rather than restore."""
    return Lake(root, repair=ETL_REPAIR)


def _reads(first_input: dt.date, last: dt.date) -> list[tuple[str, dt.date | None, dt.date]]:
    """Which partitions snapshots up to ``last`` read: events from ``first_input`` on, every item and user so far."""
    return [
        ("impressions", first_input, last),
        ("engagements", first_input, last),
        ("items", None, last),
        ("users", None, last),
    ]


def _key_date(key: str) -> dt.date:
    """The partition date of a listing key ``table/date=D/name``."""
    return dt.date.fromisoformat(key.split("/")[1].removeprefix("date="))


def _listing(lake: Lake) -> dict[str, dict[str, str]]:
    """Every committed lake file's ``table/date=D/name`` → SHA-256, by table: the manifests read once per run."""
    return {table: lake.checksums(lake.files(table)) for table in ("impressions", "engagements", "items", "users")}


def _inputs(
    lake: Lake, listing: dict[str, dict[str, str]], first_input: dt.date, last: dt.date
) -> dict[str, list[Path]]:
    """The lake files a run reads, per table, from the run's one listing, their bytes checked against it."""
    inputs = {}
    for table, start, end in _reads(first_input, last):
        keys = [k for k in listing[table] if (start is None or _key_date(k) >= start) and _key_date(k) <= end]
        inputs[table] = [lake.root / k for k in keys]
        lake.checksums(inputs[table], verify=True)
    return inputs


def sources(listing: dict[str, dict[str, str]], day: dt.date, params: Params) -> list[str]:
    """What the snapshot of ``day`` is computed from: each input file with its checksum, and the parameters."""
    listed = []
    for table, start, end in _reads(day - dt.timedelta(days=params.reach), day):
        for key, sha in listing[table].items():
            date = _key_date(key)
            if (start is None or date >= start) and date <= end:
                listed.append(f"{key} sha256={sha}")
    return [*listed, f"params {params.fingerprint()}"]


def _check_range(listing: dict[str, dict[str, str]], start: dt.date, end: dt.date) -> None:
    """Refuse snapshot days outside the lake's events: their snapshots would be empty."""
    if end < start:
        raise EtlError(f"empty range: end {end} is before start {start}")
    held = sorted({_key_date(key) for table in EVENTS for key in listing[table]})
    if not held:
        raise EtlError("no impressions or engagements in the lake: ingest them first")
    span = f"it holds events from {held[0]} to {held[-1]}"
    if end < held[0] or start > held[-1]:
        raise EtlError(f"no impressions or engagements in the lake from {start} to {end}; {span}")
    if start < held[0] or end > held[-1]:
        raise EtlError(
            f"{start} to {end} reaches beyond the lake's events ({span}): those days would get empty snapshots; "
            f"choose days from {held[0]} to {held[-1]}"
        )


def _recorded(features: Lake, name: str, day: dt.date) -> list[list[str]] | None:
    """What a stored snapshot says it was computed from; None for a damaged one (it is recomputed)."""
    try:
        return [f.sources for f in features.manifest(name, day).files]
    except DamagedStateError:
        return None


def _clean(features: Lake, names: list[str]) -> None:
    """Remove what a killed run left behind.  Only with the ETL's lock held: then no other run is writing."""
    for leftover in features.root.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    spill = features.root / SPILL
    if spill.is_dir():  # DuckDB removes its spill files when it closes; a killed process leaves them
        for leftover in spill.iterdir():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    for name in names:
        features.sweep(name)


def _snapshot(rows: pa.Table | None, day: dt.date, schema: pa.Schema) -> pa.Table:
    """One day of an engine's output (sorted by key): cast to the declared schema, valid from the next midnight UTC.

    Its columns are made one chunk each, as a sort gives them, so the file's bytes do not depend on how the engine
    split its rows into batches (the Parquet writer's pages do).
    """
    rows = schema.empty_table() if rows is None else rows
    table = rows.select(schema.names).cast(schema)
    if any(column.num_chunks > 1 for column in table.columns):
        table = table.combine_chunks()
    valid_from = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return table.append_column("valid_from", pa.repeat(pa.scalar(valid_from, TIMESTAMP), table.num_rows))


def run_etl(
    lake: Lake,
    features: Lake,
    params: Params,
    engine: Engine,
    force: bool = False,
) -> EtlReport:
    """Compute the snapshots of days [params.start, params.end] into ``features``; skip days already up to date."""
    if params.end < params.start:
        raise EtlError(f"empty range: end {params.end} is before start {params.start}")
    began = time.perf_counter()
    report = EtlReport(engine=engine.name)
    names = outputs(params)
    features.root.mkdir(parents=True, exist_ok=True)
    with features.lock(LOCK):
        _clean(features, names)
        listing = _listing(lake)
        _check_range(listing, params.start, params.end)
        wanted = {day: sources(listing, day, params) for day in days(params.start, params.end)}
        stale = [
            day
            for day, srcs in wanted.items()
            if force or any(_recorded(features, name, day) != [srcs] for name in names)
        ]
        report.up_to_date = [day for day in wanted if day not in stale]
        if stale:
            _compute(
                lake,
                features,
                replace(params, start=min(stale), end=max(stale)),
                engine,
                listing,
                stale,
                wanted,
                report,
            )
    report.computed = stale
    report.seconds = time.perf_counter() - began
    return report


def _compute(
    lake: Lake,
    features: Lake,
    run: Params,
    engine: Engine,
    listing: dict[str, dict[str, str]],
    stale: list[dt.date],
    wanted: dict[dt.date, list[str]],
    report: EtlReport,
) -> None:
    """Compute the ``stale`` days (within ``run``'s range) and commit them; the caller holds the lock."""
    inputs = _inputs(lake, listing, run.first_input_day, run.end)
    check_declared(run.declared, inputs)  # a declaration the data cannot give is refused before anything is staged
    for table, files in inputs.items():
        engine.register(table, files)
    first, last = day_number(run.start), day_number(run.end)
    engine.register("snapshot_days", pa.table({"dn": pa.array(range(first, last + 1), pa.int64())}))

    # Every output is staged before any is committed: a run that fails midway changes nothing readers see.
    staged = []
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=features.root) as tmp:
        for step in steps(run):
            step_began = time.perf_counter()
            if not step.is_output or step.shared:
                engine.materialize(step.name, step.sql)
            if not step.is_output:
                report.step_seconds[step.name] = time.perf_counter() - step_began
                continue
            assert step.schema is not None
            sql = f"SELECT * FROM {step.name}" if step.shared else step.sql
            keys = tuple(k for k in step.keys if k != "dn")
            computed = engine.days(sql, [day_number(day) for day in stale], keys, Path(tmp) / step.name)
            got = next(computed, None)
            for day in stale:  # ascending, as the engine gives them; a day without rows is an empty snapshot
                day_rows = None
                if got is not None and got[0] == day_number(day):
                    day_rows, got = got[1], next(computed, None)
                rows = _snapshot(day_rows, day, step.schema)
                staged.append((step.name, day, features.stage(step.name, day, rows, wanted[day])))
                report.rows[step.name] = report.rows.get(step.name, 0) + rows.num_rows
            report.step_seconds[step.name] = time.perf_counter() - step_began
        for name, day, part in staged:
            features.commit(name, day, part)
