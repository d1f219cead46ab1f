"""Stage declarations: every step of the ranking pipeline is named, typed, timed, and fails open or closed.

After X's product-mixer: a stage says what kind it is (gate, query hydrator, candidate source, filter, candidate
hydrator, scorer, policy, side effect), what it reads, and what happens when it breaks or runs over its time
budget.  *Open*: the pipeline carries on as if the stage had not run (a source adds nothing, a filter removes
nothing, the scorer's place is taken by the popularity fallback, a side effect is dropped) and the answer is
flagged.  *Closed*: the requests of the batch get an empty slate, flagged, because serving without the stage
would be worse than serving nothing (the safety filter, the policy that enforces caps).  Stages pass columnar
batches (:class:`Candidates`), never one candidate at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Fail = Literal["open", "closed"]
Kind = Literal["gate", "query", "source", "filter", "hydrator", "scorer", "policy", "side_effect"]

#: Candidate sources, by the code stored per candidate.
SOURCE_CODES = {"affinity": 0, "creators": 1, "popular": 2, "fresh": 3, "explore": 4}
SOURCE_NAMES = {v: k for k, v in SOURCE_CODES.items()}


@dataclass(frozen=True)
class Stage:
    """A step of the pipeline as the service declares, times and reports it (``/metrics``, ``explain``)."""

    name: str
    kind: Kind
    fails: Fail
    reads: tuple[str, ...]
    budget_ms: float | None = None


@dataclass(frozen=True)
class StageRun:
    """One stage's run over a batch: how long it took and, if it failed, why."""

    stage: Stage
    ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Candidates:
    """Candidates of a batch of requests as columns: one row per (request, item)."""

    request_index: np.ndarray  # int64 into the RequestBatch
    row: np.ndarray  # int64 catalogue row of the item
    source: np.ndarray  # int8 code (SOURCE_CODES) of the source that found it first

    def __len__(self) -> int:
        return len(self.row)

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8))

    def take(self, mask_or_index: np.ndarray) -> Candidates:
        return Candidates(self.request_index[mask_or_index], self.row[mask_or_index], self.source[mask_or_index])


@dataclass
class Removed:
    """Candidates a filter took out, kept only for ``explain``."""

    candidates: Candidates
    item_id: np.ndarray
    reason: str


@dataclass
class Trace:
    """What a batch went through: stage runs, flags, and (with explain) every candidate's story."""

    runs: list[StageRun] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)  # "<stage>: <why>" for every stage that failed
    fallback: str | None = None  # "popularity" when the model could not rank
    closed: str | None = None  # the stage that failed closed (empty slates)
    removed: list[Removed] = field(default_factory=list)
