"""Running the ETL: choose what is stale, feed the engine the lake partitions it needs, write snapshots.

A snapshot for day D is recomputed only when what it was computed from has
changed: each output partition's manifest lists every lake file it read (with
its checksum) and the job parameters, so re-running a day whose inputs are
unchanged does nothing, and a late-arriving partition recomputes exactly the
days whose windows it falls in.  Outputs replace their partition atomically;
a run that fails midway leaves the previous snapshots readable.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from homefeed.data.etl.engines import Engine
from homefeed.data.etl.jobs import Params, day_number, outputs, steps
from homefeed.data.lake import Lake
from homefeed.errors import HomefeedError
from homefeed.schema import TIMESTAMP, days


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


def _reads(first_input: dt.date, last: dt.date) -> list[tuple[str, dt.date | None, dt.date]]:
    """Which partitions snapshots up to ``last`` read: events from ``first_input`` on, every item and user so far."""
    return [
        ("impressions", first_input, last),
        ("engagements", first_input, last),
        ("items", None, last),
        ("users", None, last),
    ]


def _inputs(lake: Lake, first_input: dt.date, last: dt.date) -> dict[str, list[Path]]:
    """The lake files a run reads, per table."""
    return {table: lake.files(table, start, end) for table, start, end in _reads(first_input, last)}


def _listing(lake: Lake) -> dict[str, dict[str, str]]:
    """Every committed lake file's ``table/date=D/name`` → SHA-256, by table: the manifests read once per run."""
    return {table: lake.checksums(lake.files(table)) for table in ("impressions", "engagements", "items", "users")}


def sources(listing: dict[str, dict[str, str]], day: dt.date, params: Params) -> list[str]:
    """What the snapshot of ``day`` is computed from: each input file with its checksum, and the parameters."""
    listed = []
    for table, start, end in _reads(day - dt.timedelta(days=params.lookback - 1), day):
        for key, sha in listing[table].items():
            date = dt.date.fromisoformat(key.split("/")[1].removeprefix("date="))
            if (start is None or date >= start) and date <= end:
                listed.append(f"{key} sha256={sha}")
    return [*listed, f"params {params.fingerprint()}"]


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
    listing = _listing(lake)
    wanted = {day: sources(listing, day, params) for day in days(params.start, params.end)}
    stale = [
        day
        for day, srcs in wanted.items()
        if force or any([f.sources for f in features.manifest(name, day).files] != [srcs] for name in names)
    ]
    report.up_to_date = [day for day in wanted if day not in stale]
    if not stale:
        report.seconds = time.perf_counter() - began
        return report
    run = replace(params, start=min(stale), end=max(stale))
    inputs = _inputs(lake, run.first_input_day, run.end)
    if not inputs["impressions"] and not inputs["engagements"]:
        raise EtlError(f"no impressions or engagements in the lake from {run.first_input_day} to {run.end}")
    for table, files in inputs.items():
        engine.register(table, files)
    first, last = day_number(run.start), day_number(run.end)
    engine.register("snapshot_days", pa.table({"dn": pa.array(range(first, last + 1), pa.int64())}))

    # Every output is staged before any is committed: a run that fails midway changes nothing readers see.
    staged = []
    features.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".etl-", dir=features.root) as tmp:
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
    report.computed = stale
    report.seconds = time.perf_counter() - began
    return report
