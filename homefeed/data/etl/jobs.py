"""The ETL jobs: SQL written once, in DuckDB's dialect, for every engine.

Each output is a **daily snapshot**: for snapshot day D, one row per entity
with any activity in the longest window up to D, holding what was known at the
end of D and valid from D + 1 00:00 UTC.  An entity keeps a row on every day
its longest window holds an event, so a 7-day count falls back to zero on the
days after the last event instead of repeating a stale value; a point-in-time
join can then take the latest snapshot before an impression and be right.

The text is generated from a few shapes (:mod:`.shapes`: daily counts → windowed sums →
smoothed rates) so that 60-odd columns are declared once with their types, and
the same string runs on DuckDB and, transpiled by sqlglot, on Spark SQL.  Only
constructs both engines share are used (``//`` becomes Spark's ``DIV``, no
``GROUP BY ALL``), every division guarded with ``NULLIF`` (Spark's ANSI mode raises on ÷0), every sum
cast to its declared type (DuckDB widens integer sums to HUGEINT).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from homefeed.config import EtlSettings, FeatureSettings
from homefeed.config.stages import DeclaredFeature
from homefeed.data.etl.declared import DECLARED_OUTPUTS, entity_sql, output_schema, presence_days, snapshot_declared
from homefeed.data.etl.shapes import ACTIONS, day_of, double, exact_sum, smoothed_rates, windowed
from homefeed.schema import NEGATIVE_ACTIONS, POSITIVE_ACTIONS

EPOCH = dt.date(1970, 1, 1)


def day_number(day: dt.date) -> int:
    return (day - EPOCH).days


@dataclass(frozen=True)
class Params:
    """What a run computes: snapshot days [start, end] and the knobs of every job."""

    start: dt.date
    end: dt.date
    windows: tuple[int, ...] = (1, 7, 28)
    half_life_days: float = 7.0
    prior_strength: float = 100.0
    pair_prior_strength: float = 5.0
    #: The declared user, item and user_item features the ETL computes, their lag and TTL defaults filled in.
    declared: tuple[DeclaredFeature, ...] = ()

    @classmethod
    def from_settings(
        cls, etl: EtlSettings, start: dt.date, end: dt.date, features: FeatureSettings | None = None
    ) -> Params:
        return cls(
            start=start,
            end=end,
            windows=tuple(etl.windows),
            half_life_days=etl.half_life_days,
            prior_strength=etl.prior_strength,
            pair_prior_strength=etl.pair_prior_strength,
            declared=resolved_declared(features) if features is not None else (),
        )

    @property
    def lookback(self) -> int:
        return max(self.windows)

    @property
    def reach(self) -> int:
        """How many days before a snapshot day its inputs go back.

        Its longest window, and before that the slot curve of the window's first day, which is computed
        over its own trailing window: an exposure counted in a snapshot depends on impressions up to
        ``2 × (lookback - 1)`` days old.  (With only the window, a run starting later than the lake's
        first day gave other exposures than a backfill over the same days.)  At least one day, too: a request
        is counted on the day of its first impression, and a visit that crossed midnight began the day before.
        """
        declared = max((presence_days(d) for d in self.declared if d.is_aggregation), default=1)
        return max(2 * (self.lookback - 1), 1, declared - 1)

    @property
    def first_input_day(self) -> dt.date:
        """The first day of events a run reads."""
        return self.start - dt.timedelta(days=self.reach)

    @property
    def first_window_day(self) -> dt.date:
        """The first day of the earliest snapshot's longest window: counts and sums start here."""
        return self.start - dt.timedelta(days=self.lookback - 1)

    def fingerprint(self) -> str:
        """What the snapshots depend on besides their input files; declared features count (not their default or
        lag, which the join applies), so a change to one recomputes the days; a run without any keeps the
        fingerprint it always had."""
        declared = "".join(
            f";declared={d.model_dump_json(exclude={'description', 'default', 'lag_minutes'})}" for d in self.declared
        )
        return (
            f"windows={','.join(map(str, self.windows))};half_life={self.half_life_days};"
            f"prior={self.prior_strength};pair_prior={self.pair_prior_strength};version={JOBS_VERSION}{declared}"
        )


def resolved_declared(features: FeatureSettings) -> tuple[DeclaredFeature, ...]:
    """The declarations the ETL computes, each with the ``[features]`` lag and TTL where it gives none."""
    out = []
    for d in snapshot_declared(features.declared):
        out.append(d.model_copy(update={"ttl_hours": d.ttl_hours or features.ttl_hours}))
    return tuple(out)


#: Bumped whenever a job's SQL changes meaning, so stored snapshots are recomputed.
#: 2: exposures use slot curves computed over their own full window (``Params.reach``).
#: 3: a request is counted once, on the day of its first impression (a visit across midnight counted twice).
JOBS_VERSION = 3


@dataclass(frozen=True)
class Step:
    """One SQL statement: an intermediate table other steps read, or an output written to the feature lake."""

    name: str
    sql: str
    keys: tuple[str, ...] = ()
    schema: pa.Schema | None = None  # outputs only: the declared columns, without ``date``/``valid_from``
    shared: bool = False  # an output later steps also read

    @property
    def is_output(self) -> bool:
        return self.schema is not None


def _count_fields(metrics: tuple[str, ...], windows: tuple[int, ...], kind: pa.DataType) -> list[pa.Field]:
    return [pa.field(f"{m}_{w}d", kind) for w in windows for m in metrics]


def steps(p: Params) -> list[Step]:
    """Every statement of a run, in order; outputs carry their schema and keys."""
    first, end, lw = day_number(p.first_input_day), day_number(p.end), p.lookback
    wf = day_number(p.first_window_day)  # the slot curve reads from ``first``; counts and sums from here
    m = p.prior_strength
    action_counts = ", ".join(f"CAST(COUNT(*) FILTER (WHERE action = '{a}') AS BIGINT) AS {a}" for a in ACTIONS)
    sum_actions = ", ".join(f"CAST(SUM({a}) AS BIGINT) AS {a}" for a in ACTIONS)
    out: list[Step] = []

    out.append(
        Step(
            "imp",
            f"""SELECT request_id, user_id, item_id, surface, position, {day_of("ts")} AS dn FROM impressions
            WHERE {day_of("ts")} BETWEEN {first} AND {end}""",
        )
    )
    out.append(
        Step(
            "eng",
            f"""SELECT request_id, user_id, item_id, action, {day_of("ts")} AS dn FROM engagements
            WHERE {day_of("ts")} BETWEEN {first} AND {end}""",
        )
    )
    # Examination by slot, from the trailing window's closeup rate relative to slot 1 (shrunk towards 1 when
    # a slot has few impressions).  Exact under randomized serving; under a ranking policy it also carries the
    # ranker's preference for its top slots, which the models' own position handling corrects (issue 5).
    out.append(
        Step(
            "position_curve",
            f"""
WITH daily AS (
  SELECT i.surface, i.position, i.dn, CAST(COUNT(*) AS BIGINT) AS n, CAST(COUNT(c.request_id) AS BIGINT) AS closeups
  FROM imp i LEFT JOIN (SELECT DISTINCT request_id, item_id FROM eng WHERE action = 'closeup') c
    ON i.request_id = c.request_id AND i.item_id = c.item_id
  GROUP BY i.surface, i.position, i.dn
), slot_window AS (
  SELECT surface, position, dn, CAST(SUM(n) OVER w AS DOUBLE) AS n, CAST(SUM(closeups) OVER w AS DOUBLE) AS closeups
  FROM daily WINDOW w AS (PARTITION BY surface, position ORDER BY dn RANGE BETWEEN {lw - 1} PRECEDING AND CURRENT ROW)
), first_slot AS (
  SELECT surface, dn, closeups / NULLIF(n, 0) AS rate FROM slot_window WHERE position = 1
)
SELECT t.surface, t.position, t.dn,
  CASE WHEN first_slot.rate IS NULL OR first_slot.rate = 0 THEN {double(1.0)}
       ELSE LEAST({double(1.0)}, GREATEST({double(0.05)},
            (t.closeups + {double(m)} * first_slot.rate) / (t.n + {double(m)}) / first_slot.rate)) END AS examination
FROM slot_window t LEFT JOIN first_slot ON t.surface = first_slot.surface AND t.dn = first_slot.dn""",
            keys=("surface", "position", "dn"),
            shared=True,
            schema=pa.schema([("surface", pa.string()), ("position", pa.int32()), ("examination", pa.float64())]),
        )
    )
    out.append(
        Step(
            "item_daily",
            f"""
WITH i AS (
  SELECT imp.item_id, imp.dn, CAST(COUNT(*) AS BIGINT) AS impressions, {exact_sum("c.examination")} AS exposure
  FROM imp JOIN position_curve c ON imp.surface = c.surface AND imp.position = c.position AND imp.dn = c.dn
  WHERE imp.dn >= {wf}
  GROUP BY imp.item_id, imp.dn
), e AS (
  SELECT item_id, dn, {action_counts} FROM eng WHERE dn >= {wf} GROUP BY item_id, dn
)
SELECT COALESCE(i.item_id, e.item_id) AS item_id, COALESCE(i.dn, e.dn) AS dn,
  COALESCE(i.impressions, 0) AS impressions, COALESCE(i.exposure, {double(0.0)}) AS exposure,
  {", ".join(f"COALESCE(e.{a}, 0) AS {a}" for a in ACTIONS)}
FROM i FULL OUTER JOIN e ON i.item_id = e.item_id AND i.dn = e.dn""",
        )
    )
    out.append(
        Step(
            "item_creator",
            f"SELECT item_id, creator_id, topic, {day_of('created_at')} AS created_dn FROM items",
        )
    )
    counts = ("impressions", *ACTIONS)
    # The global rate every entity's rate is shrunk towards, over the same trailing window.
    prior_cols = []
    for w in p.windows:
        frame = f"(ORDER BY dn RANGE BETWEEN {w - 1} PRECEDING AND CURRENT ROW)"
        prior_cols += [f"SUM({a}) OVER {frame} / NULLIF(SUM(exposure) OVER {frame}, 0) AS {a}_{w}d" for a in ACTIONS]
    out.append(
        Step(
            "prior",
            f"""SELECT dn, {", ".join(prior_cols)} FROM (
  SELECT dn, {exact_sum("exposure")} AS exposure, {", ".join(f"CAST(SUM({a}) AS DOUBLE) AS {a}" for a in ACTIONS)}
  FROM item_daily GROUP BY dn) t""",
        )
    )

    rate_cols, rate_names = smoothed_rates("s", p.windows, m)
    windowed_fields = _count_fields(counts, p.windows, pa.int64()) + _count_fields(
        ("exposure",), p.windows, pa.float64()
    )
    item_grid = windowed(
        ("item_id",),
        "item_daily",
        counts,
        ("exposure",),
        p,
        span=f"SELECT item_id, created_dn AS dn FROM item_creator WHERE created_dn BETWEEN {wf} AND {end}",
    )
    out.append(
        Step(
            "item_stats",
            f"""SELECT s.*, ic.creator_id, CAST(s.dn + 1 - ic.created_dn AS BIGINT) AS age_days, {", ".join(rate_cols)}
FROM ({item_grid}) s LEFT JOIN item_creator ic ON s.item_id = ic.item_id LEFT JOIN prior ON s.dn = prior.dn""",
            keys=("item_id",),
            schema=pa.schema(
                [pa.field("item_id", pa.int64()), *windowed_fields]
                + [pa.field("creator_id", pa.int64()), pa.field("age_days", pa.int64())]
                + [pa.field(n, pa.float64()) for n in rate_names]
            ),
        )
    )
    out.append(
        Step(
            "creator_daily",
            f"""SELECT ic.creator_id, d.dn, CAST(COUNT(DISTINCT d.item_id) AS BIGINT) AS items,
  CAST(SUM(d.impressions) AS BIGINT) AS impressions, {exact_sum("d.exposure")} AS exposure, {sum_actions}
FROM item_daily d JOIN item_creator ic ON d.item_id = ic.item_id GROUP BY ic.creator_id, d.dn""",
        )
    )
    creator_grid = windowed(("creator_id",), "creator_daily", ("items", *counts), ("exposure",), p)
    out.append(
        Step(
            "creator_stats",
            f"SELECT s.*, {', '.join(rate_cols)} FROM ({creator_grid}) s LEFT JOIN prior ON s.dn = prior.dn",
            keys=("creator_id",),
            schema=pa.schema(
                [pa.field("creator_id", pa.int64()), *_count_fields(("items", *counts), p.windows, pa.int64())]
                + _count_fields(("exposure",), p.windows, pa.float64())
                + [pa.field(n, pa.float64()) for n in rate_names]
            ),
        )
    )

    user_counts = ("impressions", "requests", "active_days", *ACTIONS)
    out.append(
        Step(
            "user_daily",
            f"""
WITH r AS (  -- a request's day is its first impression's: read from the day before the window (``reach``)
  SELECT user_id, MIN(dn) AS dn FROM imp WHERE dn >= {wf - 1} GROUP BY user_id, request_id
), i AS (
  SELECT i.user_id, i.dn, i.impressions, COALESCE(r.requests, 0) AS requests
  FROM (SELECT user_id, dn, CAST(COUNT(*) AS BIGINT) AS impressions FROM imp WHERE dn >= {wf} GROUP BY user_id, dn) i
  LEFT JOIN (SELECT user_id, dn, CAST(COUNT(*) AS BIGINT) AS requests FROM r WHERE dn >= {wf} GROUP BY user_id, dn) r
    ON i.user_id = r.user_id AND i.dn = r.dn
), e AS (
  SELECT user_id, dn, {action_counts} FROM eng WHERE dn >= {wf} GROUP BY user_id, dn
)
SELECT COALESCE(i.user_id, e.user_id) AS user_id, COALESCE(i.dn, e.dn) AS dn,
  COALESCE(i.impressions, 0) AS impressions, COALESCE(i.requests, 0) AS requests,
  CAST(CASE WHEN i.impressions > 0 THEN 1 ELSE 0 END AS BIGINT) AS active_days,
  {", ".join(f"COALESCE(e.{a}, 0) AS {a}" for a in ACTIONS)}
FROM i FULL OUTER JOIN e ON i.user_id = e.user_id AND i.dn = e.dn""",
        )
    )
    user_grid = windowed(("user_id",), "user_daily", user_counts, (), p)
    negatives = [
        f"CAST({' + '.join(f's.{a}_{w}d' for a in NEGATIVE_ACTIONS)} AS BIGINT) AS negatives_{w}d" for w in p.windows
    ]
    out.append(
        Step(
            "user_profile",
            f"""SELECT s.*, {", ".join(negatives)}, CAST(s.dn + 1 - {day_of("u.signup_at")} AS BIGINT) AS tenure_days
FROM ({user_grid}) s LEFT JOIN users u ON s.user_id = u.user_id""",
            keys=("user_id",),
            schema=pa.schema(
                [pa.field("user_id", pa.int64()), *_count_fields(user_counts, p.windows, pa.int64())]
                + [pa.field(f"negatives_{w}d", pa.int64()) for w in p.windows]
                + [pa.field("tenure_days", pa.int64())]
            ),
        )
    )

    for other in ("topic", "creator_id"):
        out += _pair_steps(other, p)
    for entity, (name, keys) in DECLARED_OUTPUTS.items():
        declared = [d for d in p.declared if d.entity == entity]
        if declared:
            sql = entity_sql(entity, declared, first, end)
            out.append(Step(name, sql, keys=keys, schema=output_schema(entity, declared)))
    return out


def _pair_steps(other: str, p: Params) -> list[Step]:
    """User × ``other`` affinities from decayed engagement, for the pairs with any engagement in the window.

    Pairs a user was only shown are left out: they are the bulk of all pairs and
    say little beyond the user's overall rate, which ``user_profile`` holds.
    """
    name = "user_topic" if other == "topic" else "user_creator"
    daily = f"{name}_daily"
    mp = p.pair_prior_strength
    wf = day_number(p.first_window_day)
    grid = windowed(
        ("user_id", other),
        daily,
        (),
        ("impressions", "positives", "saves", "negatives"),
        p,
        presence="positives + negatives > 0",
        decayed=True,
    )
    other_type = pa.string() if other == "topic" else pa.int64()
    return [
        Step(
            daily,
            f"""
WITH e AS (
  SELECT e.user_id, ic.{other}, e.dn,
    {", ".join(f"CAST(COUNT(*) FILTER (WHERE e.action = '{a}') AS DOUBLE) AS {a}" for a in ACTIONS)}
  FROM eng e JOIN item_creator ic ON e.item_id = ic.item_id
  WHERE ic.{other} IS NOT NULL AND e.dn >= {wf}
  GROUP BY e.user_id, ic.{other}, e.dn
), pairs AS (SELECT DISTINCT user_id, {other} FROM e),
i AS (
  SELECT i.user_id, ic.{other}, i.dn, CAST(COUNT(*) AS DOUBLE) AS impressions
  FROM imp i JOIN item_creator ic ON i.item_id = ic.item_id
  JOIN pairs ON i.user_id = pairs.user_id AND ic.{other} = pairs.{other}
  WHERE i.dn >= {wf}
  GROUP BY i.user_id, ic.{other}, i.dn
)
SELECT COALESCE(i.user_id, e.user_id) AS user_id, COALESCE(i.{other}, e.{other}) AS {other},
  COALESCE(i.dn, e.dn) AS dn, COALESCE(i.impressions, {double(0.0)}) AS impressions,
  COALESCE({" + ".join(f"e.{a}" for a in POSITIVE_ACTIONS)}, {double(0.0)}) AS positives,
  COALESCE(e.save, {double(0.0)}) AS saves,
  COALESCE({" + ".join(f"e.{a}" for a in NEGATIVE_ACTIONS)}, {double(0.0)}) AS negatives
FROM i FULL OUTER JOIN e ON i.user_id = e.user_id AND i.{other} = e.{other} AND i.dn = e.dn""",
        ),
        Step(
            name,
            f"""
SELECT user_id, {other}, dn, impressions_decayed, positives_decayed, saves_decayed, negatives_decayed,
  positives_decayed / NULLIF(SUM(positives_decayed) OVER user_day, 0) AS positive_share,
  (positives_decayed + {double(mp)} * COALESCE(
     SUM(positives_decayed) OVER user_day
     / NULLIF(SUM(impressions_decayed) OVER user_day, 0), {double(0.0)}))
   / (impressions_decayed + {double(mp)}) AS affinity
FROM ({grid}) s
WINDOW user_day AS (
  PARTITION BY user_id, dn ORDER BY {other} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
)""",
            keys=("user_id", other),
            schema=pa.schema(
                [pa.field("user_id", pa.int64()), pa.field(other, other_type)]
                + [pa.field(f"{m}_decayed", pa.float64()) for m in ("impressions", "positives", "saves", "negatives")]
                + [pa.field("positive_share", pa.float64()), pa.field("affinity", pa.float64())]
            ),
        ),
    ]


#: The outputs a run writes, in the order they are computed.
def outputs(p: Params) -> list[str]:
    return [s.name for s in steps(p) if s.is_output]
