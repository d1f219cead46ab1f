"""The canonical tables (the logging contract) and the label definitions.

Every stage reads and writes these four tables; this module is the one place
that says what their columns are.  Stages that need row-level rules (the data
stage's contracts) build them from the schemas here, so a column added here
reaches ingestion, the lake and the checks at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from homefeed.errors import HomefeedError

SCHEMA_VERSION = 1

TIMESTAMP = pa.timestamp("us", tz="UTC")
#: A day in TIMESTAMP's unit: timestamps are UTC microseconds, and every day-partitioned stage counts in UTC days.
DAY_US = 86_400_000_000


def days(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


#: Engagement actions, in funnel order, then the negative ones.
ACTIONS: tuple[str, ...] = ("closeup", "click", "save", "hide", "report")
POSITIVE_ACTIONS: tuple[str, ...] = ("closeup", "click", "save")
NEGATIVE_ACTIONS: tuple[str, ...] = ("hide", "report")

#: Safety labels come from a separate classifier; they filter, never rank.
SAFETY_LABELS: tuple[str, ...] = ("safe", "spam", "racy")

USERS = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        # Null where the source does not know it (the Open Bandit Dataset): such a user gets no tenure feature.
        pa.field("signup_at", TIMESTAMP),
        pa.field("country", pa.string(), nullable=False),
        pa.field("language", pa.string()),
        pa.field("declared_interests", pa.list_(pa.string())),
        # Free-form attributes a source knows about its users (hashed demographics, app, ...).
        pa.field("attributes", pa.map_(pa.string(), pa.string())),
    ],
    metadata={"table": "users", "schema_version": str(SCHEMA_VERSION)},
)

ITEMS = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("creator_id", pa.int64(), nullable=False),
        pa.field("topic", pa.string()),
        pa.field("created_at", TIMESTAMP, nullable=False),
        # Content features from upstream models: noisy views of what the item really is.
        pa.field("content", pa.map_(pa.string(), pa.float64())),
        pa.field("safety_label", pa.string(), nullable=False),
    ],
    metadata={"table": "items", "schema_version": str(SCHEMA_VERSION)},
)

IMPRESSIONS = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", TIMESTAMP, nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("surface", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),  # 1-based slot in the slate
        pa.field("country", pa.string()),  # request context: where the request came from
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("experiments", pa.map_(pa.string(), pa.string())),  # experiment -> arm
        pa.field("score", pa.float64()),
        # Probability that the serving policy put this item in this slot; null when unknown.
        pa.field("propensity", pa.float64()),
        # For a sample of impressions: the feature vector the model saw (train/serve skew).
        pa.field("served_features", pa.map_(pa.string(), pa.float64())),
    ],
    metadata={"table": "impressions", "schema_version": str(SCHEMA_VERSION)},
)

ENGAGEMENTS = pa.schema(
    [
        pa.field("ts", TIMESTAMP, nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("dwell", pa.float64()),  # seconds; closeups and clicks only
    ],
    metadata={"table": "engagements", "schema_version": str(SCHEMA_VERSION)},
)

TABLES: dict[str, pa.Schema] = {
    "users": USERS,
    "items": ITEMS,
    "impressions": IMPRESSIONS,
    "engagements": ENGAGEMENTS,
}

#: The time column of each table: what the lake partitions it by and the checks segment it on.
TIME_COLUMN: dict[str, str] = {
    "users": "signup_at",
    "items": "created_at",
    "impressions": "ts",
    "engagements": "ts",
}


class SchemaError(HomefeedError, ValueError):
    """A table does not conform to its canonical schema."""


def conform(name: str, table: pa.Table) -> pa.Table:
    """Return ``table`` with exactly the canonical columns of ``name``, or raise.

    Columns may arrive in any order and with castable types (a CSV gives int64
    positions); missing required columns, extra columns, nulls in required
    columns and uncastable types are errors that name the column.
    """
    if name not in TABLES:
        raise SchemaError(f"unknown table {name!r}; expected one of {', '.join(TABLES)}")
    schema = TABLES[name]
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [c for c in table.column_names if c not in schema.names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected column(s) {', '.join(extra)}")
        raise SchemaError(f"{name}: {'; '.join(parts)}")
    columns = []
    for field in schema:
        column = table.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type)
            except pa.ArrowException as exc:
                raise SchemaError(f"{name}.{field.name}: expected {field.type}, got {column.type}") from exc
        if not field.nullable and column.null_count:
            raise SchemaError(f"{name}.{field.name}: {column.null_count} null value(s) in a required column")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def check_values(name: str, table: pa.Table) -> list[str]:
    """Value rules every canonical table obeys; returns the violations found (empty if none)."""
    problems: list[str] = []

    def count(mask: pa.ChunkedArray | pa.Array) -> int:
        return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)

    if name == "impressions":
        if n := count(pc.less(table["position"], 1)):
            problems.append(f"impressions.position: {n} value(s) below 1")
        prop = table["propensity"]
        if n := count(pc.or_(pc.less_equal(prop, 0.0), pc.greater(prop, 1.0))):
            problems.append(f"impressions.propensity: {n} value(s) outside (0, 1]")
    elif name == "engagements":
        if n := count(pc.invert(pc.is_in(table["action"], value_set=pa.array(ACTIONS)))):
            problems.append(f"engagements.action: {n} value(s) not in {', '.join(ACTIONS)}")
        if n := count(pc.less(table["dwell"], 0.0)):
            problems.append(f"engagements.dwell: {n} negative value(s)")
    elif name == "items" and (
        n := count(pc.invert(pc.is_in(table["safety_label"], value_set=pa.array(SAFETY_LABELS))))
    ):
        problems.append(f"items.safety_label: {n} value(s) not in {', '.join(SAFETY_LABELS)}")
    return problems


@dataclass(frozen=True)
class Label:
    """A training target: did one of ``actions`` follow the impression within ``window``?"""

    name: str
    actions: tuple[str, ...]
    window: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        unknown = [a for a in self.actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"label {self.name!r}: unknown action(s) {unknown}; expected {ACTIONS}")
        if self.window <= timedelta(0):
            raise ValueError(f"label {self.name!r}: attribution window must be positive")


#: The default targets.  ``engaged`` is the positive label (1 = a positive
#: engagement within the window); ``negative`` is its own target, and an
#: impression with a negative action is never a positive of ``engaged``.
LABELS: dict[str, Label] = {
    "engaged": Label("engaged", POSITIVE_ACTIONS),
    "saved": Label("saved", ("save",)),
    "clicked": Label("clicked", ("click",)),
    "negative": Label("negative", NEGATIVE_ACTIONS),
}
