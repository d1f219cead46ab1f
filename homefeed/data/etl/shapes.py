"""The shapes every ETL job is built from, as SQL text both engines run (DuckDB's dialect; Spark via sqlglot).

Day numbers from epoch microseconds, DOUBLE literals, order-independent sums,
windowed sums over snapshot days, and smoothed rates: each written once here,
so a job (:mod:`homefeed.data.etl.jobs`) only says which metrics it sums.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from homefeed.schema import DAY_US, NEGATIVE_ACTIONS, POSITIVE_ACTIONS

if TYPE_CHECKING:
    from homefeed.data.etl.jobs import Params

ACTIONS = POSITIVE_ACTIONS + NEGATIVE_ACTIONS
EPOCH = dt.date(1970, 1, 1)


def day_of(column: str) -> str:
    """Days since 1970-01-01 (UTC) of a timestamp: integer arithmetic on microseconds, twice as fast as via DATE.

    ``EPOCH_US`` is DuckDB's; the Spark engine renames it to ``UNIX_MICROS`` (sqlglot leaves it as is).
    """
    return f"CAST(EPOCH_US({column}) // {DAY_US} AS BIGINT)"


def double(x: float) -> str:
    """A float literal typed as DOUBLE: DuckDB reads ``7.0`` as a DECIMAL and rounds divisions by it."""
    return f"CAST({float(x)!r} AS DOUBLE)"


def exact_sum(expr: str) -> str:
    """A sum of doubles that does not depend on the order rows arrive in (parallel aggregation reorders them).

    Summed as integers of 1e-9 units, so every run and both engines give the same bits.
    """
    return f"CAST(SUM(CAST(ROUND({expr} * {double(1e9)}) AS BIGINT)) AS DOUBLE) / {double(1e9)}"


def windowed(
    keys: tuple[str, ...],
    daily: str,
    counts: tuple[str, ...],
    doubles: tuple[str, ...],
    p: Params,
    span: str | None = None,
    presence: str = "TRUE",
    decayed: bool = False,
) -> str:
    """Sums of ``daily``'s metrics over each window ending on each snapshot day.

    Every daily row joins the snapshot days whose longest window holds it, and one
    aggregation gives every window at once (a row counts in window ``w`` of day D
    if it is less than ``w`` days old).  A key has a row on day D only when a daily
    row inside the window satisfies ``presence``, so a snapshot depends on the past
    only, and a count falls to zero on the days after the last event before the
    entity drops out.  ``span`` lists (keys, dn) rows that make an entity present
    without counts (an item's creation day).  ``decayed`` adds exponentially decayed
    sums over the longest window (half-life ``p.half_life_days``).

    Why not window functions over a dense (entity × day) grid: for a daily run the
    grid holds every day of the lookback for every entity, and is 4x slower here.
    """
    k = ", ".join(keys)
    metrics = counts + doubles
    rows = f"SELECT {k}, dn, {', '.join(metrics)}, CASE WHEN {presence} THEN 1 ELSE 0 END AS present FROM {daily}"
    if span:
        zeros = ", ".join(f"0 AS {m}" for m in metrics)
        rows += f" UNION ALL SELECT {k}, dn, {zeros}, 1 AS present FROM ({span}) span"
    # One snapshot day (the daily run) needs no join with the snapshot days: a filter, and the day as a constant.
    single = p.start == p.end
    day = f"CAST({(p.end - EPOCH).days} AS BIGINT)" if single else "d.dn"
    cols = []
    for w in () if decayed else p.windows:
        for m in metrics:
            value = f"x.{m}" if w == p.lookback else f"CASE WHEN x.dn > {day} - {w} THEN x.{m} ELSE 0 END"
            total = f"CAST(SUM({value}) AS BIGINT)" if m in counts else exact_sum(value)
            cols.append(f"{total} AS {m}_{w}d")
    if decayed:
        weight = f"POWER({double(2.0)}, CAST(x.dn - {day} AS DOUBLE) / {double(p.half_life_days)})"
        cols += [f"{exact_sum(f'x.{m} * {weight}')} AS {m}_decayed" for m in metrics]
    grouped = ", ".join(f"x.{c}" for c in keys)
    if single:
        return f"""
SELECT {grouped}, {day} AS dn, {", ".join(cols)}
FROM ({rows}) x WHERE x.dn BETWEEN {day} - {p.lookback - 1} AND {day}
GROUP BY {grouped}
HAVING SUM(x.present) > 0"""
    return f"""
SELECT {grouped}, d.dn, {", ".join(cols)}
FROM ({rows}) x JOIN snapshot_days d ON x.dn BETWEEN d.dn - {p.lookback - 1} AND d.dn
GROUP BY {grouped}, d.dn
HAVING SUM(x.present) > 0"""


def smoothed_rates(
    entity: str, metric_windows: tuple[int, ...], strength: float, prior: str = "prior"
) -> tuple[list[str], list[str]]:
    """Smoothed per-exposure rates ``(count + m·prior) / (exposure + m)`` for every action and window."""
    cols, names = [], []
    for w in metric_windows:
        for a in ACTIONS:
            cols.append(
                f"({entity}.{a}_{w}d + {double(strength)} * COALESCE({prior}.{a}_{w}d, {double(0.0)}))"
                f" / ({entity}.exposure_{w}d + {double(strength)}) AS {a}_rate_{w}d"
            )
            names.append(f"{a}_rate_{w}d")
    return cols, names
