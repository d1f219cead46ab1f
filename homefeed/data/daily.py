"""The daily check of the lake: read a day and its trailing baseline, judge them, store the findings.

This is what ``homefeed data check --date D`` runs, and what a pipeline runs
before training on day D: the findings are stored with their severity under
``<paths.checks>/date=D/findings.parquet``, and an error-level finding blocks.

- **The day and its baseline** are read from the lake's committed partitions
  (:meth:`Lake.read`) and split by the day of each table's time column, so the
  monthly ``users`` partitions are checked a day of sign-ups at a time.  The
  baseline is the ``[checks] baseline_days`` days before D that hold rows; a
  day with none (before the lake began, an outage) is left out rather than
  counted as an empty day, which would drag the baseline mean down.
- **A thin baseline** (a young lake, a gap) still runs, with what exists: the
  checks' thresholds already widen for small samples, and a pipeline that
  refused to train for the first weeks of a lake would be switched off.  Every
  checked table gets one ``baseline`` finding saying how many days it was
  judged against: info, or a warning below ``min_baseline_days`` (a baseline
  shorter than a week does not hold the weekly cycle, so a busy Saturday may
  read as a volume change).  Never an error: a thin baseline is not a broken day.
- **No data for D** in any table checked is a :class:`CheckError` (exit code 2
  on the command line), naming what the lake does hold: an unloaded day is an
  operator's mistake to fix, not a finding to store.  So is a day no event the
  contracts accept can fall on (``0001-01-01``, next year).
- **Storing** replaces the rows of the tables checked and keeps the others, in
  one atomic write: re-running a day (or one table of it) never duplicates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from homefeed.config import Checks
from homefeed.data.checks import FINDINGS_SCHEMA, Finding, Severity, check_day, ordered, to_table, worst_severity
from homefeed.data.contracts import holdable_days
from homefeed.data.lake import MONTHLY, Lake
from homefeed.errors import HomefeedError
from homefeed.files import atomic_write_parquet
from homefeed.schema import TABLES, TIME_COLUMN

FINDINGS_FILE = "findings.parquet"


class CheckError(HomefeedError, ValueError):
    """Nothing to check: an unknown table, or no data in the lake for the date."""


@dataclass(frozen=True)
class DayCheck:
    """The outcome of checking one day: its findings (worst first) and where they were stored."""

    date: dt.date
    tables: tuple[str, ...]
    rows: dict[str, int]  # rows of each table on the day
    baseline_days: dict[str, int]  # baseline days (with rows) each table was judged against
    findings: list[Finding]
    path: Path

    @property
    def worst(self) -> Severity | None:
        return worst_severity(self.findings)

    def counts(self) -> dict[str, int]:
        """Findings per severity, worst first."""
        return {s: sum(f.severity == s for f in self.findings) for s in ("error", "warning", "info")}


def findings_path(checks_root: str | Path, date: dt.date) -> Path:
    return Path(checks_root) / f"date={date:%Y-%m-%d}" / FINDINGS_FILE


def read_findings(checks_root: str | Path, date: dt.date) -> pa.Table | None:
    """The stored findings of ``date``; None if the day was never checked."""
    path = findings_path(checks_root, date)
    return pq.read_table(path, schema=FINDINGS_SCHEMA) if path.exists() else None


def check_date(
    lake: Lake, date: dt.date, checks_root: str | Path, settings: Checks, tables: Sequence[str] | None = None
) -> DayCheck:
    """Check ``date`` of ``tables`` (default: all four) in ``lake`` against its baseline; store the findings."""
    tables = tuple(dict.fromkeys(tables or TABLES))
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise CheckError(f"unknown table {unknown[0]!r}; choose from: {', '.join(TABLES)}")
    first, last = holdable_days()
    if not first <= date <= last:
        raise CheckError(f"no data can be on {date}: the lake holds events from {first} to {last} at most")
    window = settings.baseline_days
    days = {t: _read_days(lake, t, date, window) for t in tables}
    if not any(day.num_rows for day, _ in days.values()):
        raise CheckError(f"no data for {date} in the lake at {lake.root} ({', '.join(tables)}); {_holdings(lake)}")
    # Market and tenure of each event's user: everyone signed up by the end of the day's month.
    events = [t for t in tables if t != "users" and "user_id" in TABLES[t].names]
    users = lake.read("users", end=date) if events else None
    findings: list[Finding] = []
    for table, (day, baseline) in days.items():
        if day.num_rows or baseline:
            # check_day's own note on an empty baseline gives way to the coverage finding below, which says more.
            judged = check_day(table, day, baseline, users, settings.thresholds)
            findings += [f for f in judged if f.check != "baseline"]
        findings.append(_coverage(table, date, day.num_rows, len(baseline), settings))
    findings = ordered(findings)
    path = _store(findings_path(checks_root, date), tables, findings)
    return DayCheck(
        date=date,
        tables=tables,
        rows={t: day.num_rows for t, (day, _) in days.items()},
        baseline_days={t: len(baseline) for t, (_, baseline) in days.items()},
        findings=findings,
        path=path,
    )


def _read_days(lake: Lake, table: str, date: dt.date, window: int) -> tuple[pa.Table, list[pa.Table]]:
    """The rows of ``date`` and of each of the ``window`` days before it that has any (oldest first)."""
    first = date - dt.timedelta(days=window)
    rows = lake.read(table, first.replace(day=1) if table in MONTHLY else first, date)
    days = pc.cast(rows[TIME_COLUMN[table]], pa.date32())

    def on(day: dt.date) -> pa.Table:
        return rows.filter(pc.equal(days, pa.scalar(day, pa.date32())))

    baseline = [part for back in range(window, 0, -1) if (part := on(date - dt.timedelta(days=back))).num_rows]
    return on(date), baseline


def _coverage(table: str, date: dt.date, rows: int, have: int, settings: Checks) -> Finding:
    """How much baseline ``table`` was judged against: info, or a warning below ``min_baseline_days``."""
    want = settings.baseline_days
    least = min(settings.min_baseline_days, want)
    sev: Severity = "warning" if have < least else "info"
    judged = f"{rows:,} rows on {date}"
    if rows == 0 and have == 0:
        msg = f"{table}: no rows on {date} or in the {want} days before; nothing to check"
        sev = "info"
    elif have == 0:
        msg = f"{table}: {judged}, but none in the {want} days before: nothing to compare with, not judged"
    elif have == want:
        msg = f"{table}: {judged}, judged against all {want} days before"
    else:
        msg = f"{table}: {judged}, judged against {have} of the {want} days before (days without rows left out)"
        if sev == "warning":
            msg += f"; fewer than min_baseline_days = {least}, so the weekly cycle may read as a change"
    return Finding(table, "baseline", None, None, float(have), float(want), float(least), sev, msg)


def _store(path: Path, tables: tuple[str, ...], findings: list[Finding]) -> Path:
    """Write ``findings`` over the stored rows of ``tables``, keeping other tables' rows: one atomic write."""
    new = to_table(findings)
    if path.exists():
        old = pq.read_table(path, schema=FINDINGS_SCHEMA)
        kept = old.filter(pc.invert(pc.is_in(old["table"], pa.array(tables, pa.string()))))
        new = pa.concat_tables([kept, new])
    atomic_write_parquet(path, new)
    return path


def _holdings(lake: Lake) -> str:
    """What the lake holds, for an error message: the first and last date of each table."""
    spans = [f"{t} {ds[0]} .. {ds[-1]}" for t in TABLES if (ds := lake.dates(t))]
    return f"it holds {'; '.join(spans)}" if spans else "the lake is empty"
