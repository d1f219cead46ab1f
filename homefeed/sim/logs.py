"""What the world writes down: the canonical logs of what users were shown and did, and the hidden truth table.

Impressions are logged only for slots the user reached.  Engagements follow their impression in funnel order;
a share of saves is made the next day (within the 24 hours a label counts), so labels land after the
impression's day.  The truth table holds, for every impression, the probabilities the world used at serve time
(examination, and each action given that the slot was reached): it sits beside the logs under ``truth/``, is
never handed to a policy, and is what every offline estimate is scored against.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from homefeed.feed import RequestBatch, SlateBatch
from homefeed.files import atomic_path, parquet_options
from homefeed.schema import ENGAGEMENTS, IMPRESSIONS, TIMESTAMP
from homefeed.sim.session import ACTIONS, Walk
from homefeed.sim.world import World

SECOND_US = 1_000_000
HOUR_US = 3_600 * SECOND_US
TRUTH_DIR = "truth"
TRUTH = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("surface", pa.string(), nullable=False),
        pa.field("p_examine", pa.float64(), nullable=False),
        *(pa.field(f"p_{a}", pa.float64(), nullable=False) for a in ACTIONS),
    ],
    metadata={"table": "truth"},
)


@dataclass
class Served:
    """One day's impressions, from every batch and surface, in one set of columns: what the logs are built from.

    Building each log table once a day rather than once a batch keeps Arrow's fixed costs off small worlds.
    """

    walk: dict[str, np.ndarray]  # the walks' arrays, concatenated (see :class:`homefeed.sim.session.Walk`)
    columns: dict[str, pa.Array]  # per impression: request_id, surface, country, model_version, experiments, ...
    score: np.ndarray  # NaN where the policy gave none
    propensity: np.ndarray  # NaN where unknown

    def __len__(self) -> int:
        return len(self.walk["item_id"])

    @classmethod
    def combine(cls, served: list[tuple[RequestBatch, SlateBatch, Walk]]) -> Served:
        arrays: dict[str, list] = {}
        columns: dict[str, list[pa.Array]] = {k: [] for k in (*_FROM_REQUESTS, "surface", *_FROM_SLATES)}
        score, propensity = [], []
        for requests, slates, w in served:
            for key in ("position", "user_id", "item_id", "ts", "p_examine"):
                arrays.setdefault(key, []).append(getattr(w, key))
            for a in ACTIONS:
                arrays.setdefault(a, []).append(w.outcome[a])
                arrays.setdefault(f"p_{a}", []).append(w.truth[a])
            at = pa.array(w.request)
            for key in _FROM_REQUESTS:
                columns[key].append(getattr(requests, key).take(at))
            columns["surface"].append(pa.repeat(pa.scalar(requests.surface, pa.string()), len(w)))
            rows = pa.array(w.slate_row)
            for key in _FROM_SLATES:
                columns[key].append(_rows_of(slates, key, rows, len(w)))
            score.append(np.full(len(w), np.nan) if slates.score is None else slates.score[w.slate_row])
            propensity.append(slates.propensity[w.slate_row])
        if not served:
            return cls({}, {}, np.empty(0), np.empty(0))
        return cls(
            {k: np.concatenate(v) for k, v in arrays.items()},
            {k: pa.concat_arrays(v) for k, v in columns.items()},
            np.concatenate(score).astype(np.float64),
            np.concatenate(propensity).astype(np.float64),
        )


_FROM_REQUESTS = ("request_id", "country")
_FROM_SLATES = ("model_version", "experiments", "served_features")


def impressions_table(served: Served) -> pa.Table:
    w, c = served.walk, served.columns
    return pa.Table.from_arrays(
        [
            c["request_id"],
            pa.array(w["ts"]).cast(TIMESTAMP),
            pa.array(w["user_id"], pa.int64()),
            pa.array(w["item_id"], pa.int64()),
            c["surface"],
            pa.array(w["position"], pa.int32()),
            c["country"],
            c["model_version"],
            c["experiments"],
            pa.array(served.score, pa.float64(), mask=np.isnan(served.score)),
            pa.array(served.propensity, pa.float64(), mask=np.isnan(served.propensity)),
            c["served_features"],
        ],
        schema=IMPRESSIONS,
    )


def _rows_of(slates: SlateBatch, column: str, rows: pa.Array, n: int) -> pa.Array:
    """A per-row column of the slates at the reached rows, without building it for the slots never reached."""
    value = getattr(slates, column)
    if column == "model_version":
        if isinstance(value, str):
            return pa.repeat(pa.scalar(value, pa.string()), n)
        return slates.model_versions().take(rows)
    if value is None:
        return pa.nulls(n, IMPRESSIONS.field(column).type)
    return (slates.experiment_column() if column == "experiments" else slates.served_features_column()).take(rows)


def truth_table(served: Served) -> pa.Table:
    w, c = served.walk, served.columns
    return pa.Table.from_arrays(
        [
            c["request_id"],
            pa.array(w["position"], pa.int32()),
            pa.array(w["user_id"], pa.int64()),
            pa.array(w["item_id"], pa.int64()),
            c["surface"],
            pa.array(w["p_examine"], pa.float64()),
            *(pa.array(w[f"p_{a}"], pa.float64()) for a in ACTIONS),
        ],
        schema=TRUTH,
    )


def engagements_table(
    world: World, served: Served, rng: np.random.Generator, day_end_us: int
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """One row per action, timed after its impression in funnel order.

    Returns the table, each row's impression (index into ``served``), and which rows land the next day.
    """
    walk = served.walk
    # Only impressions with an action make rows (a click or save follows a closeup, a report a hide): the timing
    # draws are made for those alone, a tenth of the impressions.
    acted = np.flatnonzero(walk["closeup"] | walk["hide"])
    outcome = {a: walk[a][acted] for a in ACTIONS}
    n = len(acted)
    item = walk["item_id"][acted]
    quality, clickbait = world.item_quality[item], world.item_clickbait[item]
    noise = rng.standard_normal((2, n), dtype=np.float32)
    closeup_dwell = np.exp(1.8 + 0.8 * quality + 0.5 * noise[0])
    click_dwell = np.exp(3.0 + 1.5 * (quality - 0.5) - 2.0 * clickbait + 0.6 * noise[1])
    delay = (rng.uniform(1, 6, (3, n)) * SECOND_US).astype(np.int64)
    ts = walk["ts"][acted]
    closeup_ts = ts + delay[0]
    click_ts = closeup_ts + (closeup_dwell * SECOND_US).astype(np.int64)
    save_ts = click_ts + (click_dwell * SECOND_US).astype(np.int64)
    # Some saves are made the next day, still within the 24 hours a label counts.
    saves = np.flatnonzero(outcome["save"])
    late = saves[rng.random(len(saves)) < world.settings.delays.next_day_save_share]
    later = np.zeros(n, bool)
    later[late] = True
    earliest = np.maximum(day_end_us, ts[late] + HOUR_US)
    latest = ts[late] + 24 * HOUR_US - SECOND_US
    save_ts[late] = earliest + (rng.random(len(late)) * np.maximum(latest - earliest, 0)).astype(np.int64)
    hide_ts = np.where(outcome["click"], click_ts + (click_dwell * SECOND_US).astype(np.int64), closeup_ts)
    hide_ts = hide_ts + delay[1]
    report_ts = hide_ts + delay[2]
    parts = [
        ("closeup", closeup_ts, closeup_dwell),
        ("click", click_ts, click_dwell),
        ("save", save_ts, None),
        ("hide", hide_ts, None),
        ("report", report_ts, None),
    ]
    masks = [outcome[name] for name, _, _ in parts]
    rows = np.concatenate([np.flatnonzero(m) for m in masks])
    action_code = np.concatenate([np.full(int(m.sum()), i, np.int8) for i, m in enumerate(masks)])
    event_ts = np.concatenate([t[m] for (_, t, _), m in zip(parts, masks, strict=True)])
    dwell = np.concatenate(
        [d[m] if d is not None else np.full(int(m.sum()), np.nan) for (_, _, d), m in zip(parts, masks, strict=True)]
    )
    order = np.lexsort((action_code, event_ts))
    rows, action_code, event_ts, dwell = rows[order], action_code[order], event_ts[order], dwell[order]
    names = pa.array([name for name, *_ in parts], pa.string())
    impression = acted[rows]
    table = pa.Table.from_arrays(
        [
            pa.array(event_ts).cast(TIMESTAMP),
            pa.array(walk["user_id"][impression], pa.int64()),
            pa.array(walk["item_id"][impression], pa.int64()),
            served.columns["request_id"].take(pa.array(impression)),
            names.take(pa.array(action_code)),
            pa.array(np.round(dwell, 3), pa.float64(), mask=np.isnan(dwell)),
        ],
        schema=ENGAGEMENTS,
    )
    return table, impression, later[rows] & (action_code == 2)


def request_ids(date: dt.date, visit: np.ndarray, suffix: str = "") -> pa.Array:
    """``YYYYMMDD-<visit number><suffix>``: unique within the day and across surfaces."""
    numbers = pa.array(visit.astype(np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(f"{date:%Y%m%d}-", numbers, suffix, "")


def write_partition(out: Path, table: str, date: dt.date, written: dt.date, part: pa.Table) -> None:
    """``out/<table>/date=<day>/part-<arrival day>.parquet``, written atomically.

    ``date`` is the simulated day the events belong to (an engagement just after
    midnight stays with its session's day); the file name says when it arrived.
    Nothing is written for no rows: an absent file is how a missing day looks in real logs.
    """
    if part.num_rows:
        with atomic_path(out / table / f"date={date:%Y-%m-%d}" / f"part-{written:%Y%m%d}.parquet") as tmp:
            pq.write_table(part, tmp, **_parquet_options(part.schema))


def _parquet_options(schema: pa.Schema) -> dict:
    """The project's Parquet options, two changes for the simulator's logs, measured on a day of 760k impressions.

    Float columns (the truth's probabilities, dwell, propensities) are nearly all distinct, so the dictionary
    the writer builds for them is abandoned: they are written plain.  And zstd at level 1: the probabilities
    barely compress at any level; the truth table is written 2.7x faster than at level 3, its file 3% larger.
    """
    options = parquet_options(schema)
    floats = {f.name for f in schema if pa.types.is_floating(f.type)}
    options["use_dictionary"] = [p for p in options["use_dictionary"] if p.split(".")[0] not in floats]
    options["compression_level"] = 1
    return options
