"""Labels, sampling and weights, written as DuckDB SQL over the lake's files.

Ten million impressions go through one statement and never sit in Python.
Every random choice is a hash of the row's key (``request_id``, ``position``),
the spec's seed and a salt per decision, so a row's fate does not depend on
which other rows are in the range, on the order files are read, or on threads:
the same spec keeps the same rows, every run, and widening the range keeps them.

Labels follow :data:`homefeed.schema.LABELS`: an impression is a positive of a
label when an engagement with one of the label's actions on the same request and
item falls in [impression ts, ts + the label's window].  A label made of positive
actions is 0 when a negative action (hide, report) falls in that window too: a
closeup followed by a hide is not an engagement the feed should chase.
"""

from __future__ import annotations

import datetime as dt

from homefeed.schema import NEGATIVE_ACTIONS, Label
from homefeed.train.spec import DatasetSpec, split_days

#: The impression columns a dataset row keeps (issue 5 trains on position and propensity; issue 6 slices on the rest).
IMPRESSION_COLUMNS = (
    "request_id",
    "ts",
    "user_id",
    "item_id",
    "position",
    "surface",
    "country",
    "model_version",
    "propensity",
)
#: Exploration traffic: a slot a randomized choice filled.  A deterministic ranker logs 1, unknown logging null.
EXPLORATION = "(propensity IS NOT NULL AND propensity < 1)"
#: Rows of a split file are in this order (``request_id`` + ``position`` is the impression's key, so it is total).
ORDER = "ts, request_id, position, item_id"


def _double(x: float) -> str:
    """A float literal typed as DOUBLE (DuckDB reads ``0.5`` as a DECIMAL)."""
    return f"CAST({float(x)!r} AS DOUBLE)"


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _midnight(day: dt.date) -> str:
    return f"TIMESTAMPTZ '{day:%Y-%m-%d} 00:00:00+00'"


def _within(label: Label) -> str:
    micros = label.window // dt.timedelta(microseconds=1)
    return f"e.ts <= i.ts + to_microseconds(CAST({micros} AS BIGINT))"


def uniform(spec: DatasetSpec, salt: str) -> str:
    """A number in [0, 1) per row, fixed by the row's key, the seed and ``salt`` (53 bits of a 64-bit hash)."""
    return f"(CAST(hash(request_id, position, {int(spec.seed)}, {_text(salt)}) >> 11 AS DOUBLE) / 9007199254740992.0)"


def _positive(label: Label) -> bool:
    return not set(label.actions) & set(NEGATIVE_ACTIONS)


def candidates_sql(spec: DatasetSpec, extra: tuple[str, ...] = ()) -> str:
    """Every impression of [start, end] with its labels, split and sampling decisions (``in_scope``, ``keep``).

    Reads the views ``ds_impressions`` and ``ds_engagements`` (``extra``: more impression columns to carry, those
    declared features read); ``sample_weight`` undoes the negative
    down-sampling (1 / rate on a kept all-zero row).  The per-user cap ranks a user's in-scope impressions
    of a day by hash and keeps the first N; it is not re-weighted: its point is that heavy users count less.
    """
    labels = spec.targets
    imp = ", ".join((*IMPRESSION_COLUMNS, *extra))
    hits = []
    for label in labels:
        actions = ", ".join(map(_text, label.actions))
        hit = f"MAX(CASE WHEN e.action IN ({actions}) AND {_within(label)} THEN 1 ELSE 0 END)"
        hits.append(f"{hit} AS hit_{label.name}")
        if _positive(label):
            negatives = ", ".join(map(_text, NEGATIVE_ACTIONS))
            hits.append(
                f"MAX(CASE WHEN e.action IN ({negatives}) AND {_within(label)} THEN 1 ELSE 0 END) AS neg_{label.name}"
            )
    longest = max(label.window for label in labels) // dt.timedelta(microseconds=1)
    values = []
    for label in labels:
        value = f"COALESCE(h.hit_{label.name}, 0)"
        if _positive(label):
            value = f"{value} * (1 - COALESCE(h.neg_{label.name}, 0))"
        values.append(f"CAST({value} AS TINYINT) AS {label.name}")
    any_positive = " OR ".join(f"{label.name} = 1" for label in labels)
    splits = " ".join(
        f"WHEN day BETWEEN DATE '{first}' AND DATE '{last}' THEN '{name}'"
        for name, (first, last) in split_days(spec).items()
    )
    s = spec.sampling
    scope = EXPLORATION if s.exploration_only else "TRUE"
    cap = f"user_day_rank <= {s.max_per_user_per_day}" if s.max_per_user_per_day else "TRUE"
    sampled = "TRUE" if s.negative_rate >= 1 else f"{uniform(spec, 'negative')} < {_double(s.negative_rate)}"
    return f"""
WITH imp AS (
    SELECT {imp} FROM ds_impressions
    WHERE ts >= {_midnight(spec.start)} AND ts < {_midnight(spec.end + dt.timedelta(days=1))}
),
hits AS (
    SELECT i.request_id, i.position, {", ".join(hits)}
    FROM imp i JOIN ds_engagements e
      ON e.request_id = i.request_id AND e.item_id = i.item_id
     AND e.ts >= i.ts AND e.ts <= i.ts + to_microseconds(CAST({longest} AS BIGINT))
    GROUP BY i.request_id, i.position
),
labelled AS (
    SELECT imp.*, CAST(imp.ts AS DATE) AS day, {", ".join(values)}, {scope} AS in_scope
    FROM imp LEFT JOIN hits h ON h.request_id = imp.request_id AND h.position = imp.position
),
ranked AS (
    SELECT *, ({any_positive}) AS has_positive,
           row_number() OVER (
               PARTITION BY user_id, day, in_scope
               ORDER BY hash(request_id, position, {int(spec.seed)}, 'cap'), request_id, position
           ) AS user_day_rank
    FROM labelled
)
SELECT *, CASE {splits} END AS split,
       in_scope AND {cap} AS under_cap,
       in_scope AND {cap} AND (has_positive OR {sampled}) AS keep,
       CASE WHEN has_positive THEN {_double(1.0)} ELSE {_double(1.0 / s.negative_rate)} END AS sample_weight
FROM ranked"""


def weight_sql(spec: DatasetSpec) -> str:
    """A kept row's weight: the down-sampling correction x its segments' weights x the clipped inverse propensity."""
    factors = ["sample_weight"]
    for key, weight in sorted(spec.sampling.segment_weights.items()):
        column, _, value = key.partition("=")
        factors.append(f"(CASE WHEN CAST({column} AS VARCHAR) = {_text(value)} THEN {_double(weight)} ELSE 1.0 END)")
    if spec.sampling.ips:
        factors.append(f"LEAST({_double(1.0)} / propensity, {_double(spec.sampling.ips_max_weight)})")
    return f"CAST({' * '.join(factors)} AS DOUBLE)"


def funnel_sql() -> str:
    """Per split: impressions in the range, in scope (exploration), under the per-user cap, kept; and IPS gaps."""
    return """
SELECT split, count(*) AS impressions, count(*) FILTER (WHERE in_scope) AS in_scope,
       count(*) FILTER (WHERE under_cap) AS under_cap, count(*) FILTER (WHERE keep) AS kept,
       count(*) FILTER (WHERE keep AND propensity IS NULL) AS kept_without_propensity
FROM ds_candidates GROUP BY split ORDER BY split"""


__all__ = ["EXPLORATION", "IMPRESSION_COLUMNS", "ORDER", "candidates_sql", "funnel_sql", "uniform", "weight_sql"]
