"""The ranking pipeline: one object from a batch of requests to logged slates, and it *is* a `FeedPolicy`.

The simulator runs it in its closed loop (``rank``, a day's requests at once), the HTTP service runs it per
request (``serve``, with ``explain``), and both go through the same stages:

``gate → user (query hydration) → sources → filters → features → score → policy → log``

Each stage is declared in `STAGES` (kind, what it reads, fail open or closed) and timed; a failure or a stage
over its budget degrades the answer as declared, and the answer says so (``Trace``).  When the model cannot rank
(no model loaded, the user's data unreachable, the scorer failed) the candidates are ranked by popularity from
the in-process item cache: the *popularity fallback*, flagged in the answer and in the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from homefeed.config.serving import ServeSettings, Surface
from homefeed.errors import HomefeedError
from homefeed.features.definitions import FeatureSet
from homefeed.features.vectors import Hydrated
from homefeed.feed import SERVED_FEATURES_TYPE, Feedback, PolicyError, RequestBatch, SlateBatch
from homefeed.hashing import stable_hash
from homefeed.schema import NEGATIVE_ACTIONS
from homefeed.serve import sources
from homefeed.serve.catalog import ItemCatalogue
from homefeed.serve.hydration import Hydrator, UserData, topic_affinity
from homefeed.serve.policy import Slates, arrange, boosted
from homefeed.serve.stages import Candidates, Removed, Stage, StageRun, Trace
from homefeed.serve.state import CREATORS, HIDDEN, SEEN, OnlineFeatures, UserSignals
from homefeed.train.model import Ranker

log = logging.getLogger("homefeed.serve")

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
FALLBACK = "popularity"
#: Requests ranked at once by `rank`: a day's batch goes through in pieces of this many.
BATCH = 2000
#: Engagements that make a creator one of the user's creators.
CREATOR_ACTIONS = ("click", "save")

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("enabled", "gate", "closed", ("surface.enabled",)),
        Stage("user", "query", "open", ("store:user", "store:user_topic", "lists:seen,hidden,creators")),
        *(Stage(f"source:{n}", "source", "open", ("catalogue",)) for n in ("popular", "fresh", "explore")),
        Stage("source:affinity", "source", "open", ("catalogue", "user_topic_affinity")),
        Stage("source:creators", "source", "open", ("catalogue", "lists:creators")),
        Stage("filter:seen", "filter", "open", ("lists:seen",)),
        Stage("filter:hidden", "filter", "open", ("lists:hidden",)),
        Stage("filter:unsafe", "filter", "closed", ("catalogue.safety_label",)),
        Stage("features", "hydrator", "open", ("cache:item,creator", "store:user_creator", "request context")),
        Stage("score", "scorer", "open", ("model", "features")),
        Stage("policy", "policy", "closed", ("score", "catalogue.creator,topic,created_at")),
        Stage("log", "side_effect", "open", ("slates",)),
    )
}
#: The budget key (``budgets_ms``) of each stage.
_BUDGET_KEY = {"user": "user", "features": "features", "score": "score", "policy": "policy"}


@dataclass(frozen=True)
class ServingModel:
    """A model ready to serve: its registry version, the ranker and the feature set it was trained on."""

    version: str
    ranker: Ranker
    features: FeatureSet


@dataclass
class Served:
    """A batch's answer: the slates, what the batch went through, and what ``explain`` needs."""

    slates: SlateBatch
    trace: Trace
    candidates: Candidates = field(default_factory=Candidates.empty)
    heads: dict[str, np.ndarray] = field(default_factory=dict)
    score: np.ndarray | None = None
    matrix: np.ndarray | None = None  # the model's inputs, one row per candidate
    item_id: np.ndarray | None = None  # per candidate
    boost: np.ndarray | None = None  # per candidate: the policy's freshness boost
    policy: Slates | None = None


LogSink = Callable[[RequestBatch, Served], None]


class RankingPipeline:
    """Candidates → slates for every surface of ``settings``; a `FeedPolicy` the simulator can run.

    ``model`` returns the model to serve now (None: rank by the popularity fallback); ``log`` receives each
    served batch (the service's asynchronous logger; None in the simulator, which writes its own logs).
    Stage budgets hold for a request: a pipeline ranking large batches (the simulator) runs with ``budgets``
    off.
    """

    def __init__(
        self,
        settings: ServeSettings,
        catalogue: ItemCatalogue,
        features: OnlineFeatures,
        signals: UserSignals,
        model: Callable[[], ServingModel | None],
        log: LogSink | None = None,
        seed: int = 0,
        name: str = "ranker",
        observer: Callable[[StageRun], None] | None = None,
        budgets: bool = True,
    ):
        self.settings = settings
        self.catalogue = catalogue
        self.features = features
        self.signals = signals
        self.model = model
        self.log = log
        self.seed = seed
        self.name = name
        self.observer = observer
        self.budgets = budgets  # stage budgets are per request: off for batches (the simulator, batch ranking)
        self._batches = 0
        self._pools: dict = {}
        self._popularity_of: tuple[int, int, int] | None = None  # (cache, its loads, catalogue generation)
        self.hydrator = Hydrator(catalogue, features, signals)

    # --- FeedPolicy ---------------------------------------------------------------------------------------------

    def observe(self, feedback: Feedback) -> None:
        """New items join the catalogue; impressions and engagements update the users' lists in the store."""
        self.catalogue.add(feedback.items)
        if feedback.impressions is not None and feedback.impressions.num_rows:
            self.signals.record_seen(feedback.impressions)
        if feedback.engagements is not None and feedback.engagements.num_rows:
            self.record_engagements(feedback.engagements)

    def record_engagements(self, engagements: pa.Table) -> None:
        """Hides and reports join the user's hidden list; clicks and saves make the item's creator one of theirs."""
        action = engagements["action"].to_numpy(zero_copy_only=False)
        users, items = engagements["user_id"].to_numpy(), engagements["item_id"].to_numpy()
        ts = engagements["ts"].cast(pa.int64()).to_numpy()
        negative = np.isin(action, NEGATIVE_ACTIONS)
        self.signals.record(HIDDEN, users[negative], items[negative], ts[negative])
        positive = np.isin(action, CREATOR_ACTIONS)
        rows = self.catalogue.rows(items[positive])
        known = rows >= 0
        self.signals.record(
            CREATORS, users[positive][known], self.catalogue.creator_id[rows[known]], ts[positive][known]
        )

    def rank(self, requests: RequestBatch) -> SlateBatch:
        """Slates for a batch of any size, served ``BATCH`` requests at a time (memory stays flat)."""
        n = len(requests)
        if n <= BATCH:
            return self.serve(requests).slates
        parts = []
        for lo in range(0, n, BATCH):
            hi = min(lo + BATCH, n)
            parts.append((lo, self.serve(requests.slice(lo, hi)).slates))
        return _concat(parts)

    def refresh(self) -> None:
        """Reload the in-process caches if the store changed, re-rank the catalogue's popularity, and line the cached
        item and creator vectors up with the catalogue's rows."""
        self.features.refresh()
        cache = self.features.caches.get("item")
        # only when the items or their features changed: the next request rebuilds the catalogue's index
        popular = cache is not None and len(cache) and self.settings.popularity in cache.columns
        if popular and self._popularity_of != (id(cache), cache.loads, self.catalogue.generation):
            self.catalogue.set_popularity(cache, self.settings.popularity)
            self._popularity_of = (id(cache), cache.loads, self.catalogue.generation)
        self.hydrator.refresh()

    # --- the pipeline -------------------------------------------------------------------------------------------

    def surface(self, name: str) -> Surface:
        try:
            return self.settings.surfaces[name]
        except KeyError:
            known = ", ".join(self.settings.surfaces)
            raise PolicyError(f"surface: unknown surface {name!r}; expected one of {known}") from None

    def serve(self, requests: RequestBatch, explain: bool = False) -> Served:
        surface = self.surface(requests.surface)
        trace = Trace()
        served = Served(_empty_slates(), trace)
        if not self._run(trace, STAGES["enabled"], surface, lambda: surface.enabled or None):
            trace.closed = "enabled"
            trace.degraded.append(f"enabled: surface {requests.surface!r} is switched off")
            return served
        model = self.model()
        ts = np.asarray(requests.ts, np.int64)
        user = self._run(
            trace, STAGES["user"], surface, lambda: self.hydrator.user(requests, model.features if model else None)
        )
        cands = self._sources(requests, surface, user, trace)
        cands = self._filters(requests, surface, user, cands, trace, explain)
        if cands is None:
            return served
        served.candidates = cands
        score = None
        if model is None:
            trace.degraded.append("score: no model loaded")
        elif user is not None:
            hydrated = self._run(
                trace,
                STAGES["features"],
                surface,
                lambda: self.hydrator.candidates(requests, model.features, user, cands),
            )
            if hydrated is not None:
                heads = self._run(trace, STAGES["score"], surface, lambda: self._score(model, hydrated))
                if heads is not None:
                    served.heads = heads
                    score = model.ranker.combine(heads)
                    served.matrix = hydrated.matrix
        if score is None:
            trace.fallback = FALLBACK
            score = self.catalogue.popularity[cands.row]
        served.score = score
        served.item_id = self.catalogue.item_id[cands.row]
        if explain:  # the policy's freshness boost of each candidate, for the story
            served.boost = boosted(
                np.zeros(len(cands)), self.catalogue.created_us[cands.row], ts[cands.request_index], surface
            )
        rng = np.random.default_rng([self.seed, self._batches, int(stable_hash(ts[:1])[0]) if len(ts) else 0])
        self._batches += 1
        slates = self._run(
            trace,
            STAGES["policy"],
            surface,
            lambda: arrange(cands, score, ts, requests.slate_size, self.catalogue, surface, rng),
        )
        if slates is None:
            trace.closed = "policy"
            return served
        served.policy = slates
        version = model.version if (model is not None and trace.fallback is None) else f"fallback-{FALLBACK}"
        served.slates = SlateBatch(
            request_index=slates.request_index,
            position=slates.position,
            item_id=self.catalogue.item_id[cands.row[slates.candidate]],
            propensity=slates.propensity,
            score=slates.score,
            model_version=version,
            served_features=self._served_features(requests, served, model),
        )
        if self.log is not None:
            self._run(trace, STAGES["log"], surface, lambda: self.log(requests, served) or True)
        return served

    def _run(self, trace: Trace, stage: Stage, surface: Surface, fn: Callable[[], object]) -> object | None:
        """Run one stage: timed, its failure (an error, or its budget overrun) turned into a flag, never a crash."""
        began = time.perf_counter()
        error = None
        try:
            out = fn()
        except HomefeedError as exc:
            out, error = None, str(exc)
        except Exception as exc:  # a bug in one stage must not take the answer down; it is logged and counted
            log.exception("stage %s failed", stage.name)
            out, error = None, f"internal error: {type(exc).__name__}: {exc}"
        ms = (time.perf_counter() - began) * 1000
        key = _BUDGET_KEY.get(stage.name, stage.name.split(":")[0])
        budget = surface.budgets_ms.get(key) if self.budgets else None
        if error is None and budget is not None and ms > budget:
            out, error = None, f"over its budget ({ms:.1f} ms > {budget:g} ms)"
        run = StageRun(stage, ms, error)
        trace.runs.append(run)
        if self.observer is not None:
            self.observer(run)
        if error is not None and stage.name != "enabled":
            trace.degraded.append(f"{stage.name}: {error}")
            if stage.fails == "closed":
                trace.closed = stage.name
        return out

    def _sources(self, requests: RequestBatch, surface: Surface, user: UserData | None, trace: Trace) -> Candidates:
        ts = np.asarray(requests.ts, np.int64)
        cat, max_age = self.catalogue, int(surface.max_item_age_days * DAY_US)
        found = []
        for name, quota in surface.sources.items():
            if quota <= 0 or not len(cat):
                continue

            def one(name: str = name, quota: int = quota) -> tuple[np.ndarray, np.ndarray] | None:
                if name == "popular":
                    return sources.popular(cat, ts, quota, max_age)
                if name == "fresh":
                    return sources.fresh(cat, ts, quota, max_age)
                if name == "explore":
                    return sources.explore_pool(cat, ts, quota, surface.explore_pool_hours, self._pools)
                if user is None:
                    return None
                if name == "affinity":
                    affinity = topic_affinity(user.topics, len(requests), len(cat.topics))
                    return sources.affinity(cat, ts, affinity, surface.top_topics, quota, max_age)
                return sources.creators(cat, ts, user.lists.get(CREATORS) if user.lists else None, quota, max_age)

            out = self._run(trace, STAGES[f"source:{name}"], surface, one)
            if out is not None:
                found.append((name, *out))
        return sources.combine(found, len(cat))

    def _filters(
        self,
        requests: RequestBatch,
        surface: Surface,
        user: UserData | None,
        cands: Candidates,
        trace: Trace,
        explain: bool,
    ) -> Candidates | None:
        ts = np.asarray(requests.ts, np.int64)
        for name in surface.filters:
            stage = STAGES[f"filter:{name}"]

            def mask(name: str = name, cands: Candidates = cands) -> np.ndarray:
                if name == "unsafe":
                    return self.catalogue.unsafe[cands.row]
                if user is None or user.lists is None:
                    raise HomefeedError("the user's lists could not be read")
                if name == "seen":
                    since = ts - int(surface.seen_hours * HOUR_US)
                    return sources.listed(cands, self.catalogue, user.lists[SEEN], since)
                return sources.listed(cands, self.catalogue, user.lists[HIDDEN])

            drop = self._run(trace, stage, surface, mask)
            if drop is None:
                if stage.fails == "closed":
                    return None
                continue
            if explain and drop.any():
                gone = cands.take(drop)
                trace.removed.append(Removed(gone, self.catalogue.item_id[gone.row], name))
            cands = cands.take(~drop)
        return cands

    def _score(self, model: ServingModel, rows: Hydrated) -> dict[str, np.ndarray]:
        if list(model.ranker.features) != rows.columns:
            raise HomefeedError(f"model {model.version} reads other columns than its feature set gives")
        return model.ranker.predict_hydrated(rows)

    def _served_features(self, requests: RequestBatch, served: Served, model: ServingModel | None) -> pa.Array | None:
        """The feature vectors of the slates' rows for a sample of requests (by a hash of the request id)."""
        rate = self.settings.served_features_sample
        matrix = served.matrix
        slates = served.policy
        if rate == 0 or matrix is None or model is None or slates is None or not len(slates):
            return None
        ids = np.asarray(requests.request_id.to_numpy(zero_copy_only=False), dtype=object)
        sampled = stable_hash(ids).astype(np.float64) / 2.0**64 < rate
        rows = np.flatnonzero(sampled[slates.request_index])
        if not len(rows):
            return None
        names = model.features.columns
        d = len(names)
        values = matrix[slates.candidate[rows]].astype(np.float64).ravel()
        offsets = np.full(len(slates) + 1, 0, np.int32)
        present = np.zeros(len(slates), bool)
        present[rows] = True
        offsets[1:] = np.cumsum(np.where(present, d, 0))
        keys = pa.array(np.tile(np.array(names, dtype=object), len(rows)), pa.string())
        mask = pa.array(~present)
        return pa.MapArray.from_arrays(pa.array(offsets), keys, pa.array(values), mask=mask).cast(SERVED_FEATURES_TYPE)


def _empty_slates() -> SlateBatch:
    z = np.empty(0, np.int64)
    return SlateBatch(z, z.astype(np.int32), z, z.astype(np.float64), z.astype(np.float64), "none")


def _concat(parts: list[tuple[int, SlateBatch]]) -> SlateBatch:
    """Slates of consecutive request chunks as one batch (request indexes shifted by each chunk's start)."""
    slates = [p for _, p in parts]
    versions = {s.model_version for s in slates if isinstance(s.model_version, str)}
    same = len(versions) == 1 and all(isinstance(s.model_version, str) for s in slates)
    with_features = any(s.served_features is not None for s in slates)
    return SlateBatch(
        request_index=np.concatenate([s.request_index + lo for lo, s in parts]),
        position=np.concatenate([s.position for s in slates]),
        item_id=np.concatenate([s.item_id for s in slates]),
        propensity=np.concatenate([s.propensity for s in slates]),
        score=np.concatenate([s.score if s.score is not None else np.full(len(s), np.nan) for s in slates]),
        model_version=versions.pop() if same else pa.concat_arrays([s.model_versions() for s in slates]),
        served_features=pa.concat_arrays([s.served_features_column() for s in slates]) if with_features else None,
    )
