"""Asynchronous, batched logging of what the service served and what users did, into the lake.

Requests only append Arrow tables to an in-memory queue; a background thread writes them every
``log_flush_seconds`` through the same contract as ingestion (`ingest_table`: coercion, value rules, dedupe,
the orphan check, quarantine with a reason), so a crash loses at most one interval.  A full queue sheds
*logging*, never requests, and counts the rows it shed.  Several workers or replicas append to one lake: each
write holds an exclusive lock on the lake (a lock file), and an engagement waits one flush interval before it is
written, so the impression it answers (logged by whichever worker served it) is in the lake first; one that still
finds none is quarantined as an orphan, not dropped.  Each flush also records the served items in the users'
seen lists, in the online store.

Limit: every flush checks the new rows against the day's files (dedupe, orphans), so a busy day's flushes grow
slower as the day's partition grows; in production the log sink is a stream (Kafka) compacted into the lake.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from homefeed.data.ingest import ingest_table
from homefeed.data.lake import Lake

log = logging.getLogger("homefeed.serve.logs")
LOCK_FILE = ".serve-log.lock"


@dataclass
class LogCounts:
    queued: dict[str, int] = field(default_factory=lambda: {"impressions": 0, "engagements": 0})
    written: dict[str, int] = field(default_factory=lambda: {"impressions": 0, "engagements": 0})
    quarantined: dict[str, int] = field(default_factory=lambda: {"impressions": 0, "engagements": 0})
    shed: dict[str, int] = field(default_factory=lambda: {"impressions": 0, "engagements": 0})
    flushes: int = 0
    failures: int = 0


class LogWriter:
    """Queues tables per canonical table and writes them to ``lake`` from a background thread."""

    def __init__(
        self,
        lake: Lake,
        quarantine: Path,
        flush_s: float = 1.0,
        max_rows: int = 200_000,
        after_flush: Callable[[pa.Table], None] | None = None,
    ):
        self.lake = lake
        self.quarantine = Path(quarantine)
        self.flush_s = flush_s
        self.max_rows = max_rows
        self.after_flush = after_flush  # gets the impressions just written (the seen lists)
        self.counts = LogCounts()
        self._queue: dict[str, list] = {"impressions": [], "engagements": []}
        self._held: list[pa.Table] = []  # engagements waiting one interval for their impressions
        self._rows = 0
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def put(self, table: str, rows: pa.Table | Callable[[], pa.Table], n: int | None = None) -> bool:
        """Queue rows of ``table``; False (and counted as shed) when the queue is full.

        ``rows`` may be a function that builds the table (``n`` rows) on the writer's thread, off the request.
        """
        n = rows.num_rows if isinstance(rows, pa.Table) else int(n or 0)
        with self._lock:
            if self._rows + n > self.max_rows:
                self.counts.shed[table] += n
                return False
            self._queue[table].append(rows)
            self._rows += n
            self.counts.queued[table] += n
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="homefeed-log-writer", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        """Stop the thread and write everything still queued (held engagements included)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush(final=True)

    def flush(self, final: bool = False) -> None:
        with self._flushing:
            with self._lock:
                batch, self._queue = self._queue, {"impressions": [], "engagements": []}
                self._rows = 0
            engagements, self._held = self._held, batch["engagements"]
            if final:
                engagements, self._held = engagements + self._held, []
            try:
                with self._lake_lock():
                    if batch["impressions"]:
                        rows = pa.concat_tables([t if isinstance(t, pa.Table) else t() for t in batch["impressions"]])
                        self._ingest("impressions", rows)
                        if self.after_flush is not None:
                            self.after_flush(rows)
                    if engagements:
                        built = [t if isinstance(t, pa.Table) else t() for t in engagements]
                        self._ingest("engagements", pa.concat_tables(built))
                self.counts.flushes += 1
            except Exception:  # the lake unwritable (disk full, permissions): counted, logged, the service goes on
                self.counts.failures += 1
                log.exception("writing the serving logs to %s failed", self.lake.root)

    def _ingest(self, table: str, rows: pa.Table) -> None:
        report = ingest_table(rows, table, self.lake, self.quarantine, source=f"serve:{table}")
        self.counts.written[table] += report.written
        self.counts.quarantined[table] += report.quarantined

    @contextmanager
    def _lake_lock(self):
        self.lake.root.mkdir(parents=True, exist_ok=True)
        with (self.lake.root / LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
