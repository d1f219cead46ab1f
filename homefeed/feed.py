"""The feed contract: what a policy is, an object that turns a batch of requests into ranked slates.

It lives on the ground floor, beside `schema`, because two callers share it and neither may import the other:
the simulator runs any policy in its closed loop, and the ranking service serves one per HTTP request.  A
policy tested in simulation is the policy served.  Slates come back flattened, one row per slot, because every
consumer (the behaviour model, the impression log, OPE) wants columns, not nested lists.

A request's ``slate_size`` is the length of the list the client asks for: the policy ranks up to that many
items, and the user scrolls a prefix of it, as far as their patience and time allow.  How far is an outcome,
never told to the policy; impressions are logged only for the slots the user reached.

:class:`Experiment` runs several policies as the arms of one experiment inside one batch call: each user's arm
is a stable hash of the user id and the experiment's name, and every row says which arm served it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.errors import HomefeedError
from homefeed.hashing import stable_hash
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
    #: Per request, what the client knows of the moment and sends along (`SERVED_FEATURES_TYPE`: name -> number,
    #: null for a request that sent none; None: no request did): the values an impression logs as its
    #: ``served_features`` (the Open Bandit Dataset's user-item affinities), which declared context features and
    #: the user x item cross read offline, so a model trained on them is served the same numbers.
    context_features: pa.Array | None = None

    def __len__(self) -> int:
        return len(self.user_id)

    def take(self, index: np.ndarray) -> RequestBatch:
        """The requests at ``index``, in that order (same surface)."""
        at = pa.array(np.asarray(index, np.int64))
        context = None if self.context_features is None else self.context_features.take(at)
        return RequestBatch(
            self.request_id.take(at), self.user_id[index], self.ts[index], self.slate_size[index],
            self.country.take(at), self.surface, context,
        )  # fmt: skip

    def slice(self, lo: int, hi: int) -> RequestBatch:
        """The requests ``lo`` to ``hi`` (same surface), zero-copy."""
        context = None if self.context_features is None else self.context_features[lo:hi]
        return RequestBatch(
            self.request_id[lo:hi], self.user_id[lo:hi], self.ts[lo:hi], self.slate_size[lo:hi],
            self.country[lo:hi], self.surface, context,
        )  # fmt: skip


@dataclass(frozen=True)
class SlateBatch:
    """Ranked slates, one row per slot; rows of a request are contiguous with positions 1, 2, ..."""

    request_index: np.ndarray  # int64 index into the RequestBatch
    position: np.ndarray  # int32, 1-based
    item_id: np.ndarray  # int64
    #: float64 in (0, 1]: P(this item in this slot | request) under the policy; NaN where the policy cannot say
    #: (logged as null, so inverse-propensity methods refuse those rows rather than trust a made-up number).
    propensity: np.ndarray
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
    """Ranks batches of requests.  A policy that reads the simulated world's hidden truth (the oracle) says so
    with a true ``sees_hidden_state`` attribute; see :func:`sees_hidden_state`."""

    name: str

    def observe(self, feedback: Feedback) -> None:
        """Update internal state (catalogue, statistics) from new data."""

    def rank(self, requests: RequestBatch) -> SlateBatch:
        """Return ranked slates with propensities for every request in the batch."""


def has_repeats(
    request_index: np.ndarray, position: np.ndarray, item_id: np.ndarray, lengths: np.ndarray
) -> np.ndarray | bool:
    """Whether any slate holds an item twice; ``lengths[r]`` is request r's slate length (positions 1..length).

    Sorting each slate as a row of a matrix is several times faster than one sort of the whole batch.
    """
    width = int(lengths.max(initial=0))
    if width < 2:
        return False
    grid = np.broadcast_to(-1 - np.arange(width, dtype=np.int64), (len(lengths), width)).copy()  # distinct pads
    grid[request_index, position - 1] = item_id
    grid.sort(axis=1)
    return bool(np.any(grid[:, 1:] == grid[:, :-1]))


def sees_hidden_state(policy: object) -> bool:
    """True for a policy that reads the simulated world's hidden truth (the oracle): a calibration device that
    no service may serve."""
    return bool(getattr(policy, "sees_hidden_state", False))


def slots(slate_size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (request_index, position) for slates of the given sizes."""
    sizes = np.asarray(slate_size, dtype=np.int64)
    if len(sizes) and (sizes == sizes[0]).all():  # one size for all (the simulator's lists): 15x faster
        k = int(sizes[0])
        return np.repeat(np.arange(len(sizes), dtype=np.int64), k), np.tile(
            np.arange(1, k + 1, dtype=np.int32), len(sizes)
        )
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
    if not np.all(((p > 0) & (p <= 1)) | np.isnan(p)):
        raise PolicyError("slates: propensity must lie in (0, 1] (NaN where unknown)")
    if has_repeats(ri, slates.position, items, lengths):
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


class Experiment:
    """Policies as the arms of one experiment: each user always gets the same arm, and every row says which.

    A user's arm is a stable hash of (user id, experiment name) cut by the arms' shares, so assignment is the
    same in every process and run, and independent between experiments of different names.  Each arm ranks its
    own users' requests; the merged slates carry ``experiments`` = {name: arm} per row (added to any the arm's
    own slates carry) and the arm's ``model_version``.
    """

    def __init__(self, name: str, arms: Mapping[str, FeedPolicy], shares: Mapping[str, float] | None = None):
        if not name:
            raise PolicyError("experiment: a name is required")
        if len(arms) < 1:
            raise PolicyError(f"experiment {name!r}: needs at least one arm")
        shares = dict(shares) if shares is not None else dict.fromkeys(arms, 1.0 / len(arms))
        if set(shares) != set(arms):
            raise PolicyError(f"experiment {name!r}: shares name {sorted(shares)}, arms are {sorted(arms)}")
        values = np.array([shares[a] for a in arms], np.float64)
        if np.any(~np.isfinite(values)) or np.any(values <= 0) or abs(values.sum() - 1.0) > 1e-9:
            raise PolicyError(f"experiment {name!r}: shares must be positive and sum to 1, got {dict(shares)}")
        self.name = name
        self.arms = dict(arms)
        self.shares = dict(zip(arms, values.tolist(), strict=True))
        self._bounds = np.cumsum(values)
        self._bounds[-1] = 1.0
        self._salt = stable_hash(np.array([f"experiment:{name}"]))[0]
        self.sees_hidden_state = any(sees_hidden_state(p) for p in self.arms.values())

    def arm_of(self, user_id: np.ndarray) -> np.ndarray:
        """Each user's arm, as an index into ``arms`` (in their order)."""
        with np.errstate(over="ignore"):
            h = stable_hash(np.asarray(user_id).astype(np.uint64) ^ self._salt)
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return np.searchsorted(self._bounds, u, side="right")

    def observe(self, feedback: Feedback) -> None:
        seen: set[int] = set()
        for policy in self.arms.values():
            if id(policy) not in seen:  # one object serving two arms learns once
                seen.add(id(policy))
                policy.observe(feedback)

    def rank(self, requests: RequestBatch) -> SlateBatch:
        arm = self.arm_of(requests.user_id)
        parts: list[tuple[np.ndarray, SlateBatch, str]] = []
        for a, (arm_name, policy) in enumerate(self.arms.items()):
            index = np.flatnonzero(arm == a)
            if len(index):
                parts.append((index, policy.rank(requests.take(index)), arm_name))
        if not parts:
            return SlateBatch(*(np.empty(0, t) for t in (np.int64, np.int32, np.int64, np.float64)))
        request_index = np.concatenate([index[s.request_index] for index, s, _ in parts])
        position = np.concatenate([s.position for _, s, _ in parts])
        order = np.lexsort((position, request_index))
        scores = [s.score if s.score is not None else np.full(len(s), np.nan) for _, s, _ in parts]
        arm_names = np.concatenate([np.full(len(s), arm_name, dtype=object) for _, s, arm_name in parts])
        inner = pa.concat_arrays([s.experiment_column() for _, s, _ in parts])
        take = pa.array(order)
        return SlateBatch(
            request_index=request_index[order],
            position=position[order],
            item_id=np.concatenate([s.item_id for _, s, _ in parts])[order],
            propensity=np.concatenate([s.propensity for _, s, _ in parts])[order],
            score=None if all(s.score is None for _, s, _ in parts) else np.concatenate(scores)[order],
            model_version=pa.concat_arrays([s.model_versions() for _, s, _ in parts]).take(take),
            experiments=_add_assignment(inner, self.name, arm_names).take(take),
            served_features=None
            if all(s.served_features is None for _, s, _ in parts)
            else pa.concat_arrays([s.served_features_column() for _, s, _ in parts]).take(take),
        )


def _add_assignment(experiments: pa.Array, name: str, arms: np.ndarray) -> pa.MapArray:
    """Each row's experiment map with ``name`` -> its arm added (replacing an entry of the same name)."""
    n = len(arms)
    rows = experiments.cast(EXPERIMENTS_TYPE)
    offsets = np.asarray(rows.offsets, np.int64) if n else np.zeros(1, np.int64)
    valid = rows.is_valid().to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
    lengths = np.where(valid, np.diff(offsets), 0)
    inner_row = np.repeat(np.arange(n), lengths)
    within = np.arange(len(inner_row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    at = pa.array(np.repeat(offsets[:-1], lengths) + within, pa.int64())
    keys, values = rows.keys.take(at), rows.items.take(at)
    keep = pc.not_equal(keys, name)
    row = np.concatenate([inner_row[keep.to_numpy(zero_copy_only=False)], np.arange(n)])
    key = pa.concat_arrays([keys.filter(keep), pa.array(np.full(n, name, dtype=object), pa.string())])
    value = pa.concat_arrays([values.filter(keep), pa.array(arms.astype(object), pa.string())])
    order = pa.array(np.argsort(row, kind="stable"))
    new_offsets = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n))]).astype(np.int32)
    return pa.MapArray.from_arrays(pa.array(new_offsets), key.take(order), value.take(order))
