"""Statistical checks of one day's data against a trailing baseline, before anything is trained on it.

A silent coverage drop once cost weeks of a bad launch.  When a column stops
being logged for one market, the overall null rate barely moves, every job
runs green and models train on the broken days.  Contracts (ingestion) catch
rows that are wrong one at a time; these checks catch days that are wrong as a
whole although every row is valid:

- **volume**: row count vs the baseline's mean daily count, overall and per market;
- **null rate**: each column's share of nulls, overall and per segment (market;
  new vs tenured users), so a break confined to one market is caught and named;
- **distinct counts** of the id columns (users, items, requests);
- **schema**: a column added, removed or retyped vs the most recent baseline day;
- **distribution shift** per column: PSI and Jensen–Shannon distance over
  categories or baseline-quantile bins (:mod:`homefeed.data.drift`), and any
  category of the baseline that vanished from the day.

Every threshold is raised by the sampling noise of the sizes compared, so small
segments do not cry wolf while large ones are held to the configured value.
The checks are pure functions of Arrow tables (:mod:`homefeed.data.daily` feeds
them from the lake); counting and grouping per segment run in DuckDB
(:mod:`homefeed.data.segments`), the statistics in NumPy (:mod:`homefeed.data.drift`).
The thresholds are :class:`homefeed.config.Thresholds`, the ``[checks.thresholds]``
section of the project file.

Why hand-written: pandera (ingestion's row contracts) validates one table
against rules; drift libraries such as Evidently or TensorFlow Data Validation
bring pandas or TensorFlow along and judge each column with fixed thresholds.
Comparing every segment of a day with its baseline, with thresholds that know
the sample size, is a few hundred lines over DuckDB and NumPy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.config import Thresholds
from homefeed.data import drift
from homefeed.data.segments import ID_COLUMNS, NEW_USER_DAYS, SegmentStats, quote, segment_stats

__all__ = [
    "FINDINGS_SCHEMA",
    "ID_COLUMNS",
    "NEW_USER_DAYS",
    "SEVERITIES",
    "Finding",
    "Severity",
    "Thresholds",
    "check_day",
    "ordered",
    "summarize",
    "to_table",
    "worst_severity",
]

Severity = Literal["info", "warning", "error"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    """One thing a check noticed.

    ``value`` and ``baseline`` are the day's and the baseline's measure (rows, null rate, distinct count,
    share of a category); for ``psi`` and ``js`` ``value`` is the statistic and ``baseline`` the level chance
    reaches for these sample sizes.  ``threshold`` is the noise-adjusted limit that was crossed (a relative
    change for counts, an absolute increase for rates, the statistic itself for PSI and JS).
    """

    table: str
    check: str  # volume | null_rate | distinct | schema | psi | js | vanished_category | new_category | baseline
    column: str | None
    segment: str | None  # "country=BR", "tenure=new"; None = all rows
    value: float
    baseline: float
    threshold: float
    severity: Severity
    message: str


def check_day(
    table: str,
    day: pa.Table,
    baseline: list[pa.Table],
    users: pa.Table | None = None,
    thresholds: Thresholds | None = None,
) -> list[Finding]:
    """Check ``day`` (one day of canonical table ``table``) against ``baseline`` (trailing days, oldest first).

    ``users`` (the canonical users table) gives each row of a table with ``user_id`` its market and tenure;
    without it the row's own ``country`` column, if any, gives the market.  ``thresholds`` default to
    ``Thresholds()``, the ``[checks.thresholds]`` defaults.  Findings come worst first.
    """
    thresholds = Thresholds() if thresholds is None else thresholds
    findings = _schema(table, day, baseline)
    if not baseline:
        msg = f"{table}: no baseline days; only the schema was checked"
        return [*findings, Finding(table, "baseline", None, None, 0.0, 0.0, 0.0, "info", msg)]
    # Columns with one type on every day; a schema change is reported above and its column judged no further.
    common = [c for c in day.schema.names if all(c in b.schema.names for b in baseline)]
    common = [c for c in common if all(b.schema.field(c).type.equals(day.schema.field(c).type) for b in baseline)]
    con = duckdb.connect()
    try:
        for i, data in enumerate([day, *baseline]):
            con.register(f"t{i}", data)
        stats = segment_stats(con, table, len(baseline) + 1, users, common)
        findings += _volume(table, stats[0], stats[1:], thresholds)
        findings += _null_rates(table, common, stats[0], stats[1:], thresholds)
        findings += _distinct(table, common, stats[0], stats[1:], thresholds)
        findings += _distributions(con, table, common, day, baseline, thresholds)
    finally:
        con.close()
    return ordered(findings)


def ordered(findings: list[Finding]) -> list[Finding]:
    """Worst first; then by table, check, column and segment, so a report reads the same on every run."""
    return sorted(
        findings, key=lambda f: (-SEVERITIES.index(f.severity), f.table, f.check, f.column or "", f.segment or "")
    )


def worst_severity(findings: list[Finding]) -> Severity | None:
    """The most severe level among ``findings`` (None when there are none)."""
    return max((f.severity for f in findings), key=SEVERITIES.index, default=None)


def summarize(findings: list[Finding]) -> str:
    """A plain-text table of ``findings``, one line each."""
    if not findings:
        return "no findings"
    head = ("severity", "table", "check", "column", "segment", "value", "baseline", "threshold", "message")
    cells = [head]
    for f in findings:
        numbers = (f"{x:.4g}" for x in (f.value, f.baseline, f.threshold))
        cells.append((f.severity, f.table, f.check, f.column or "-", f.segment or "-", *numbers, f.message))
    widths = [max(len(row[i]) for row in cells) for i in range(len(head) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]) for r in cells)


FINDINGS_SCHEMA = pa.schema(
    [(f.name, pa.float64() if f.name in ("value", "baseline", "threshold") else pa.string()) for f in fields(Finding)]
)


def to_table(findings: list[Finding]) -> pa.Table:
    """The findings as an Arrow table, to store beside the day they judge."""
    return pa.Table.from_pylist([asdict(f) for f in findings], schema=FINDINGS_SCHEMA)


# ------------------------------------------------------------------------------------------------------ helpers
def _judge(value: float, warning: float, error: float) -> tuple[Severity, float] | None:
    """The severity ``value`` earns against its (noise-adjusted) limits, and the limit it crossed."""
    if value > error:
        return "error", error
    if value > warning:
        return "warning", warning
    return None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _schema(table: str, day: pa.Table, baseline: list[pa.Table]) -> list[Finding]:
    """Columns added, removed or retyped vs the most recent baseline day: always an error."""
    if not baseline:
        return []
    ref, out = baseline[-1].schema, []
    for name in [n for n in ref.names if n not in day.schema.names]:
        out.append(Finding(table, "schema", name, None, 0.0, 1.0, 0.0, "error", f"{table}.{name}: column removed"))
    for field in day.schema:
        if field.name not in ref.names:
            msg = f"{table}.{field.name}: column added ({field.type})"
            out.append(Finding(table, "schema", field.name, None, 1.0, 0.0, 0.0, "error", msg))
        elif not ref.field(field.name).type.equals(field.type):
            msg = f"{table}.{field.name}: type changed from {ref.field(field.name).type} to {field.type}"
            out.append(Finding(table, "schema", field.name, None, 1.0, 1.0, 0.0, "error", msg))
    return out


def _count_change(
    table: str, check: str, col: str | None, seg: str | None, n: int, daily: list[int], limits: tuple, t: Thresholds
) -> Finding | None:
    """A count vs its baseline daily mean; ``limits`` are relative changes, raised by a count's Poisson noise."""
    mean = float(np.mean(daily))
    if mean < t.min_segment_rows:
        return None
    change, noise = n / mean - 1, t.noise_z / math.sqrt(mean)
    verdict = _judge(abs(change), limits[0] + noise, limits[1] + noise)
    if verdict is None:
        return None
    sev, thr = verdict
    what = f"{table}.{col}: {n} distinct" if col else f"{table}: {n} rows" + (f" for {seg}" if seg else "")
    msg = f"{what} vs a daily mean of {mean:.0f} ({change:+.1%}; {sev} beyond ±{thr:.1%})"
    return Finding(table, check, col, seg, float(n), mean, thr, sev, msg)


def _volume(table: str, day: SegmentStats, base: list[SegmentStats], t: Thresholds) -> list[Finding]:
    """Row count vs the baseline's daily mean, overall and per market (a market gone from the day counts 0)."""
    limits = (t.volume_change_warning, t.volume_change_error)
    segments = sorted({s for b in base for s in b.rows if s is None or s.startswith("country=")}, key=str)
    found = [
        _count_change(table, "volume", None, s, day.rows.get(s, 0), [b.rows.get(s, 0) for b in base], limits, t)
        for s in segments
    ]
    return [f for f in found if f]


def _distinct(
    table: str, columns: list[str], day: SegmentStats, base: list[SegmentStats], t: Thresholds
) -> list[Finding]:
    """Distinct ids of the day vs the baseline's daily mean."""
    limits = (t.distinct_change_warning, t.distinct_change_error)
    found = [
        _count_change(
            table, "distinct", c, None, day.distinct.get(c, 0), [b.distinct.get(c, 0) for b in base], limits, t
        )
        for c in columns
        if c in ID_COLUMNS
    ]
    return [f for f in found if f]


def _null_rates(
    table: str, columns: list[str], day: SegmentStats, base: list[SegmentStats], t: Thresholds
) -> list[Finding]:
    """Null-rate increase per column, overall and per segment, beyond the binomial noise of the two rates."""
    out = []
    for seg in sorted(day.rows, key=str):
        n, m = day.rows[seg], sum(b.rows.get(seg, 0) for b in base)
        if n < t.min_segment_rows or m < t.min_segment_rows:
            continue
        rate_d = 1 - day.present[seg] / n
        rate_b = 1 - sum(b.present[seg] for b in base if seg in b.present) / m
        pooled = (rate_d * n + rate_b * m) / (n + m)
        noise = t.noise_z * np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m))
        for i, col in enumerate(columns):
            verdict = _judge(
                rate_d[i] - rate_b[i], t.null_rate_increase_warning + noise[i], t.null_rate_increase_error + noise[i]
            )
            if verdict:
                sev, thr = verdict
                where = f" for {seg}" if seg else ""
                change = f"{_pct(rate_b[i])} -> {_pct(rate_d[i])}{where} ({n} rows; {sev} above +{_pct(thr)})"
                msg = f"{table}.{col}: null rate {change}"
                out.append(
                    Finding(table, "null_rate", col, seg, float(rate_d[i]), float(rate_b[i]), float(thr), sev, msg)
                )
    return out


def _distributions(
    con: duckdb.DuckDBPyConnection, table: str, columns: list[str], day: pa.Table, base: list[pa.Table], t: Thresholds
) -> list[Finding]:
    """PSI and JS of each categorical (string) and numeric column; vanished and new categories."""
    out = []
    for col in [c for c in columns if c not in ID_COLUMNS]:
        kind = day.schema.field(col).type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            out += _categorical(con, table, col, len(base), t)
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            values = [_finite(x.column(col)) for x in (day, *base)]
            d, b = values[0], np.concatenate(values[1:])
            if min(d.size, b.size) >= t.min_segment_rows:
                edges = drift.quantile_edges(b, t.bins)
                material = drift.quantile_shift(d, b) >= t.numeric_materiality
                out += _shift(table, col, drift.histogram(d, edges), drift.histogram(b, edges), t, material)
    return out


def _finite(column: pa.ChunkedArray) -> np.ndarray:
    values = pc.drop_null(column).to_numpy().astype(np.float64)
    return values[np.isfinite(values)]


def _categorical(con: duckdb.DuckDBPyConnection, table: str, col: str, days: int, t: Thresholds) -> list[Finding]:
    union = " union all ".join(f"select {i > 0} as base, {quote(col)} as v from t{i}" for i in range(days + 1))
    counts: tuple[dict, dict] = ({}, {})
    for is_base, value, n in con.sql(
        f"select base, v, count(*) from ({union}) where v is not null group by all"
    ).fetchall():
        counts[is_base][value] = n
    dc, bc = counts
    n, m = sum(dc.values()), sum(bc.values())
    if n < t.min_segment_rows or m < t.min_segment_rows:
        return []
    out = []
    for cat in sorted(c for c in bc if c not in dc and bc[c] / m * n >= t.vanished_min_expected):
        msg = f"{table}.{col}: category {cat!r} ({_pct(bc[cat] / m)} of the baseline) is missing from the day"
        out.append(Finding(table, "vanished_category", col, None, 0.0, bc[cat] / m, 0.0, "error", msg))
    for cat in sorted(c for c in dc if c not in bc):
        share = dc[cat] / n
        sev: Severity = "warning" if share >= t.new_category_share else "info"
        msg = f"{table}.{col}: new category {cat!r} ({_pct(share)} of the day's rows), unseen in the baseline"
        out.append(Finding(table, "new_category", col, None, share, 0.0, t.new_category_share, sev, msg))
    # The categories that matter most in either sample, and the long tail pooled as one.
    cats = sorted(set(dc) | set(bc), key=lambda c: (-max(dc.get(c, 0) / n, bc.get(c, 0) / m), c))
    keep, tail = cats[: t.max_categories], cats[t.max_categories :]
    p = np.array([dc.get(c, 0) for c in keep] + [sum(dc.get(c, 0) for c in tail)], dtype=np.float64)
    q = np.array([bc.get(c, 0) for c in keep] + [sum(bc.get(c, 0) for c in tail)], dtype=np.float64)
    return out + _shift(table, col, p, q, t, material=True)


def _shift(table: str, col: str, p: np.ndarray, q: np.ndarray, t: Thresholds, material: bool) -> list[Finding]:
    """PSI and JS distance of two histograms, against thresholds raised by the level chance reaches."""
    n, m = int(p.sum()), int(q.sum())
    k = int(np.count_nonzero((p > 0) | (q > 0)))
    psi_chance, js_chance = drift.chance_psi(n, m, k, t.noise_z), drift.chance_js(n, m, k, t.noise_z)
    out = []
    for check, value, chance, limits in (
        ("psi", drift.psi(p, q), psi_chance, (t.psi_warning + psi_chance, t.psi_error + psi_chance)),
        (
            "js",
            drift.js_distance(p, q),
            js_chance,
            (math.hypot(t.js_warning, js_chance), math.hypot(t.js_error, js_chance)),
        ),
    ):
        verdict = _judge(value, *limits)
        if verdict is None:
            continue
        sev, thr = verdict
        note = "" if material else f"; info only: quantiles moved < {_pct(t.numeric_materiality)} of the values"
        level = f"chance level {chance:.3f} at n={n}, m={m}"
        msg = f"{table}.{col}: {check.upper()} {value:.3f} ({level}; above {thr:.3f}{note})"
        out.append(Finding(table, check, col, None, value, chance, thr, sev if material else "info", msg))
    return out
