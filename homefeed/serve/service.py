"""The service's state, assembled from the project's settings: the pipeline, its model, store, catalogue and logs.

Stateless by design: everything a request needs that changes is shared — feature vectors and the users' lists in
the online store (Redis when several machines serve), the model in the registry, logs in the lake — so any
number of workers or replicas can serve the same users.  Each worker refreshes on its own every
``reload_seconds`` (the model alias, new items in the lake, the store's materializations).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import sys
import threading
import time

import pyarrow as pa

from homefeed.config import Settings
from homefeed.data.lake import Lake
from homefeed.features.online import make_store
from homefeed.features.redis_store import RedisStore
from homefeed.features.store import OnlineStore
from homefeed.feed import RequestBatch
from homefeed.serve.catalog import ItemCatalogue
from homefeed.serve.logs import LogWriter
from homefeed.serve.metrics import Metrics
from homefeed.serve.model import ModelHolder
from homefeed.serve.pipeline import RankingPipeline, Served
from homefeed.serve.state import CREATORS, HIDDEN, SEEN, OnlineFeatures, StoreGuard, UserSignals
from homefeed.train.registry import Registry

log = logging.getLogger("homefeed.serve")


def connect_store(settings: Settings) -> OnlineStore:
    """The project's online store, with the serving timeout on Redis calls."""
    if settings.backends.online_store == "redis":
        return RedisStore(settings.backends.redis_url, timeout_s=settings.serve.store_timeout_ms / 1000)
    return make_store(settings)


def signals_for(guard: StoreGuard, settings: Settings) -> UserSignals:
    s = settings.serve
    return UserSignals(guard, {SEEN: s.seen_keep, HIDDEN: s.hidden_keep, CREATORS: s.creators_keep})


class SeenRecorder:
    """Records the served items in the users' seen lists, after the log child wrote them; it runs in that child.

    Pickled there with the settings alone: the child opens its own connection to the store on first use.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._signals: UserSignals | None = None

    def __getstate__(self) -> dict:
        return {"settings": self.settings, "_signals": None}

    def __call__(self, impressions: pa.Table) -> None:
        if self._signals is None:
            s = self.settings.serve
            guard = StoreGuard(retry_s=s.store_retry_seconds, connect=lambda: connect_store(self.settings))
            self._signals = signals_for(guard, self.settings)
        try:
            self._signals.record_seen(impressions)
        except Exception:  # the store down: the seen lists miss these; the impressions are in the lake
            log.warning("could not record seen items: online store unavailable")


class Service:
    """One worker's serving state; `start` loads it and begins refreshing, `close` flushes the logs."""

    def __init__(self, settings: Settings):
        self.settings = settings
        s, paths = settings.serve, settings.resolved_paths
        self.metrics = Metrics()
        self.guard = StoreGuard(retry_s=s.store_retry_seconds, connect=lambda: connect_store(settings))
        self.features = OnlineFeatures(self.guard, s.cached_entities)
        self.signals = signals_for(self.guard, settings)
        self.catalogue = ItemCatalogue()
        self.lake = Lake(paths.lake)
        self.models = ModelHolder(Registry.of(settings), s.model, settings, compile_trees=s.compiled_trees)
        self.writer = LogWriter(
            self.lake, paths.quarantine, s.log_flush_seconds, s.log_queue_rows, after_flush=SeenRecorder(settings)
        )
        self.pipeline = RankingPipeline(
            s, self.catalogue, self.features, self.signals, self.models, log=self._log, observer=self.metrics.stage
        )
        self._items_signature: tuple = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh_error: str | None = None
        self._switch_interval: float | None = None  # the interpreter's, restored on close

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.refresh()
        # What loading made (the model, the catalogue, imported modules: ~250k objects) will live as long as the
        # process: out of the collector's sight, a full collection no longer stalls a request for 0.1-0.3 s.
        gc.freeze()
        # a request waiting for the interpreter gets it back this soon from the log writer and the refresh thread
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(self.settings.serve.switch_interval_ms / 1000)
        self.metrics.watch_gc()
        self.writer.start()
        self._thread = threading.Thread(target=self._loop, name="homefeed-refresh", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.writer.close()
        self.metrics.unwatch_gc()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.serve.reload_seconds):
            self.refresh()

    def refresh(self, force: bool = False) -> bool:
        """Check the model alias, new items in the lake and the store's caches; True if the model changed."""
        changed = self.models.check(force=force)
        if changed and self._thread is not None:
            gc.freeze()  # the new model's objects too; frozen objects are still freed when unreferenced
        try:
            self._load_items()
            self.pipeline.refresh()
            self.refresh_error = None
        except Exception as exc:  # a refresh that fails keeps the previous state serving
            self.refresh_error = f"{type(exc).__name__}: {exc}"
            log.exception("refresh failed")
        self._update_gauges()
        return changed

    def _load_items(self) -> None:
        """The lake's items of the last ``max_item_age_days`` (of any surface) before its newest partition.

        Checked by the manifests' stamps from the first date last read on (`Lake.stamp`); read only on a change.
        """
        held_since, held_stamp = self._items_signature or (None, None)
        if held_since is not None and self.lake.stamp("items", held_since) == held_stamp:
            return
        dates = self.lake.dates("items")
        if not dates:
            return
        age = max(surface.max_item_age_days for surface in self.settings.serve.surfaces.values())
        start = dates[-1] - dt.timedelta(days=int(age) + 1)
        stamp = self.lake.stamp("items", start)
        self.catalogue.add(self.lake.read("items", start, None))
        newest = int(self.catalogue.created_us.max(initial=0))
        self.catalogue.prune(newest - int((age + 1) * 86_400_000_000))
        self._items_signature = (start, stamp)

    def _update_gauges(self) -> None:
        m = self.metrics
        m.flush()
        m.model.clear()
        if self.models.current is not None:
            m.model.labels(self.models.current.version).set(1)
        m.reload_failures.set(self.models.failures)
        m.compiled.set(1 if self.models.compiled() else 0)
        m.store_up.set(1 if self.guard.up else 0)
        for table in ("impressions", "engagements"):
            m.logged.labels(table).set(self.writer.counts.written[table])
            m.shed.labels(table).set(self.writer.counts.shed[table])
            m.lost.labels(table).set(self.writer.counts.lost[table])
        m.log_restarts.set(self.writer.counts.restarts)

    def readiness(self) -> tuple[bool, dict]:
        """Ready when a model is loaded and the catalogue has items; the details say what is missing or degraded."""
        model = self.models.current
        detail = {
            "model": model.version if model else None,
            "model_error": self.models.error,
            "scorer": self.models.scorer,
            "items": len(self.catalogue),
            "online_store": "up" if self.guard.up else f"down: {self.guard.last_error}",
            "cached": {e: len(c) for e, c in self.features.caches.items()},
            "refresh_error": self.refresh_error,
        }
        return model is not None and len(self.catalogue) > 0, detail

    # --- side effects -------------------------------------------------------------------------------------------

    def _log(self, requests: RequestBatch, served: Served) -> None:
        """The impression-logging side effect: queue the slates (the table is built in the log child)."""
        if len(served.slates):
            self.writer.put("impressions", (requests, served.slates))

    def now_us(self) -> int:
        return time.time_ns() // 1000
