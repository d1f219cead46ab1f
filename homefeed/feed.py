"""The feed contract: what a policy is, an object that turns a batch of requests into ranked slates.

It lives on the ground floor, beside `schema`, because two callers share it and neither may import the other:
the simulator runs any policy in its closed loop, and the ranking service serves one per HTTP request.  A
policy tested in simulation is the policy served.  Slates come back flattened, one row per slot, because every
consumer (the behaviour model, the impression log, OPE) wants columns, not nested lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from homefeed.errors import HomefeedError
from homefeed.schema import IMPRESSIONS, TIMESTAMP

#: The per-row types of what a slate logs beside its items (the impression table's own column types).
EXPERIMENTS_TYPE = IMPRESSIONS.field("experiments").type
SERVED_FEATURES_TYPE = IMPRESSIONS.field("served_features").type


class PolicyError(HomefeedError, ValueError):
    """A policy was misnamed, misconfigured, or returned slates that break the contract."""


@dataclass(frozen=True)
class RequestBatch:
    """Feed requests to rank at once: one per user session."""

    request_id: pa.StringArray
    user_id: np.ndarray  # int64
    ts: np.ndarray  # int64 microseconds since the epoch, UTC
    slate_size: np.ndarray  # int32 slots wanted
    country: pa.StringArray
    surface: str = "home"

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass(frozen=True)
class SlateBatch:
    """Ranked slates, one row per slot; rows of a request are contiguous with positions 1, 2, ..."""

    request_index: np.ndarray  # int64 index into the RequestBatch
    position: np.ndarray  # int32, 1-based
    item_id: np.ndarray  # int64
    propensity: np.ndarray  # float64 in (0, 1]: P(this item in this slot | request) under the policy
    score: np.ndarray | None = None  # float64; None when the policy has no model score
    #: The model that served: one name for every row, or one per row (a batch served by several arms).
    model_version: str | pa.Array = "unknown"
    #: Per row, experiment -> the arm that served it (`EXPERIMENTS_TYPE`); None: no experiment.
    experiments: pa.Array | None = None
    #: Per row, the feature vector the model saw (`SERVED_FEATURES_TYPE`), null for rows not sampled; None: none.
    served_features: pa.Array | None = None

    def __len__(self) -> int:
        return len(self.item_id)

    def model_versions(self) -> pa.Array:
        """The model version of every row, as a string column."""
        if isinstance(self.model_version, str):
            return pa.repeat(pa.scalar(self.model_version, pa.string()), len(self))
        return self.model_version.cast(pa.string())

    def experiment_column(self) -> pa.Array:
        """The experiment assignments of every row (all null without experiments)."""
        if self.experiments is None:
            return pa.nulls(len(self), EXPERIMENTS_TYPE)
        return self.experiments.cast(EXPERIMENTS_TYPE)

    def served_features_column(self) -> pa.Array:
        """The served feature vector of every row (null where none was logged)."""
        if self.served_features is None:
            return pa.nulls(len(self), SERVED_FEATURES_TYPE)
        return self.served_features.cast(SERVED_FEATURES_TYPE)


def impressions_table(requests: RequestBatch, slates: SlateBatch, ts: np.ndarray | None = None) -> pa.Table:
    """Slates as rows of the canonical impressions table; ``ts`` per row (default: each request's time)."""
    ri = pa.array(slates.request_index)
    n = len(slates)
    times = np.asarray(requests.ts)[slates.request_index] if ts is None else ts
    score = pa.nulls(n, pa.float64()) if slates.score is None else pa.array(slates.score, pa.float64())
    return pa.Table.from_arrays(
        [
            requests.request_id.take(ri),
            pa.array(times).cast(TIMESTAMP),
            pa.array(np.asarray(requests.user_id)[slates.request_index]),
            pa.array(slates.item_id, pa.int64()),
            pa.repeat(pa.scalar(requests.surface, pa.string()), n),
            pa.array(slates.position, pa.int32()),
            requests.country.take(ri),
            slates.model_versions(),
            slates.experiment_column(),
            score,
            pa.array(slates.propensity, pa.float64()),
            slates.served_features_column(),
        ],
        schema=IMPRESSIONS,
    )


@dataclass(frozen=True)
class Feedback:
    """What a policy learns between batches: newly published items and users, and the logs of what it served.

    Tables are canonical (see :mod:`homefeed.schema`); any of them may be None.
    """

    items: pa.Table | None = None
    users: pa.Table | None = None
    impressions: pa.Table | None = None
    engagements: pa.Table | None = None


@runtime_checkable
class FeedPolicy(Protocol):
    name: str

    def observe(self, feedback: Feedback) -> None:
        """Update internal state (catalogue, statistics) from new data."""

    def rank(self, requests: RequestBatch) -> SlateBatch:
        """Return ranked slates with propensities for every request in the batch."""


def slots(slate_size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (request_index, position) for slates of the given sizes."""
    sizes = np.asarray(slate_size, dtype=np.int64)
    request_index = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    position = (np.arange(len(request_index), dtype=np.int64) - starts + 1).astype(np.int32)
    return request_index, position


def validate_slates(slates: SlateBatch, requests: RequestBatch, item_created_us: np.ndarray) -> None:
    """Reject slates that break the contract; the simulator must never log an impossible impression."""
    n = len(slates)
    columns = {name: getattr(slates, name) for name in ("request_index", "position", "propensity", "score")}
    if not isinstance(slates.model_version, str):
        columns["model_version"] = slates.model_version
    columns["experiments"], columns["served_features"] = slates.experiments, slates.served_features
    for name, column in columns.items():
        if column is not None and len(column) != n:
            raise PolicyError(f"slates: column {name} has {len(column)} rows, item_id has {n}")
    if n == 0:
        return
    ri = slates.request_index
    if ri.min() < 0 or ri.max() >= len(requests) or np.any(np.diff(ri) < 0):
        raise PolicyError("slates: request_index must be sorted and index into the request batch")
    lengths = np.bincount(ri, minlength=len(requests))
    if np.any(lengths > requests.slate_size):
        raise PolicyError("slates: a slate is longer than the slate size requested")
    if not np.array_equal(slates.position, slots(lengths)[1]):
        raise PolicyError("slates: positions must run 1, 2, ... within each request")
    items = slates.item_id
    if items.min() < 0 or items.max() >= len(item_created_us):
        raise PolicyError("slates: unknown item_id")
    if np.any(item_created_us[items] > requests.ts[ri]):
        raise PolicyError("slates: an item was served before it was created")
    p = slates.propensity
    if not np.all((p > 0) & (p <= 1)):
        raise PolicyError("slates: propensity must lie in (0, 1]")
    key = np.sort((ri << 32) | items)
    if np.any(key[1:] == key[:-1]):
        raise PolicyError("slates: an item appears twice in one slate")


class Catalogue:
    """The items a policy knows about, ordered by creation time, grown from :class:`Feedback`.

    Eligibility at a request time is a contiguous id range (created in the last
    ``max_age_days``, not after the request), so candidate lookups are two
    binary searches for a whole batch.
    """

    def __init__(self, max_age_days: float = 30.0):
        self.max_age_us = int(max_age_days * 86_400_000_000)
        self.item_id = np.empty(0, np.int64)
        self.created_us = np.empty(0, np.int64)

    def add(self, items: pa.Table | None) -> None:
        if items is None or items.num_rows == 0:
            return
        ids = items["item_id"].to_numpy()
        created = items["created_at"].cast(pa.int64()).to_numpy()
        item_id = np.concatenate([self.item_id, ids])
        created_us = np.concatenate([self.created_us, created])
        order = np.argsort(created_us, kind="stable")
        self.item_id, self.created_us = item_id[order], created_us[order]

    def __len__(self) -> int:
        return len(self.item_id)

    def eligible(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per request, the [lo, hi) range of catalogue rows eligible at ``ts``."""
        lo = np.searchsorted(self.created_us, ts - self.max_age_us, side="left")
        hi = np.searchsorted(self.created_us, ts, side="right")
        return lo, hi
