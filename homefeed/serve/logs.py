"""Batched logging of what the service served and what users did, into the lake, from a child process.

Writing the logs is Python-heavy (the contract, dedupe, Parquet, the manifest, the seen lists): done on a thread
of the serving process it held the GIL for 50-200 ms a second at 100 requests/s, and requests waited behind it.
So the serving process only buffers: a request appends its served pair (`RequestBatch`, `SlateBatch`) or its
engagement rows to a list, under a lock (about 2 µs).  Every ``log_flush_seconds`` a thread here joins the
buffer into one pair per kind of request (NumPy and Arrow concatenations, not a table per request) and sends it
in one message over a pipe to the *log child*, a process started with ``forkserver`` (never ``fork``: the server
has threads), which builds the canonical tables (`impressions_table`), writes them through the same contract as
ingestion (`ingest_table`: coercion, value rules, dedupe, the orphan check, quarantine with a reason) under an
exclusive lock on the lake, records the served items in the users' seen lists (``after_flush``, a picklable
callable that opens its own store connection there), and answers with what it wrote.  At 100 requests/s this
costs the serving process 0.04-0.06 ms of CPU per request, against 0.55-0.73 ms with the writer on a thread; the
child spends about 0.4 ms a request, off the GIL (README, "Logging", for the conditions).

The guarantees: a full buffer (``log_queue_rows``) sheds *logging*, never requests, and counts the rows it shed.  A
crash of the serving process loses at most one interval (the buffer, and the engagements held for the next; what
the child got it still writes).  If the child dies (or hangs past ``hang_s`` on a batch, and is killed), requests
go on, the death is logged and counted (``restarts``), a new child is started and the batch it died on is sent
again (the dedupe makes a re-sent batch safe); a batch that kills two children in a row is dropped and its rows
counted as ``lost``.  Several workers or replicas append to one lake: each write holds an exclusive lock on the
lake (a lock file), and an engagement waits one interval (held here) before it is sent, so the impression it
answers (logged by whichever worker served it) is in the lake first; one that still finds none is quarantined as an
orphan, not dropped.  ``flush`` is synchronous: it returns once what was queued is written.  The child runs niced
(`NICENESS`): on a busy machine logging lags, and then sheds, before requests wait.

Limit: a flush checks its rows against the day's files (dedupe, orphans) and appends one file and a rewritten
manifest to the day's partition, so its cost grows with the files the day already holds: 56 ms with 10 files,
135 ms with 300 (2,000 rows a flush, about 0.27 ms a file; README, "Limits").  A slower flush sends a larger
batch (the buffer fills while the child writes), so past about 3,500 files (an hour at 100 requests/s) the
partition grows as the square root of time and a flush reaches about 7 s by the day's end; the fix belongs to
the lake (compaction) or to a stream in front of it (Kafka), as in production.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pyarrow as pa

from homefeed.data.ingest import ingest_table
from homefeed.data.lake import Lake
from homefeed.feed import RequestBatch, SlateBatch, impressions_table

log = logging.getLogger("homefeed.serve.logs")
LOCK_FILE = ".serve-log.lock"
#: How much lower than the server's the log child's CPU priority is (see `os.nice`).
NICENESS = 10
TABLES = ("impressions", "engagements")
#: A served request as the pipeline answered it: what the impressions table is built from, in the child.
ServedPair = tuple[RequestBatch, SlateBatch]


def _per_table() -> dict[str, int]:
    return dict.fromkeys(TABLES, 0)


@dataclass
class LogCounts:
    queued: dict[str, int] = field(default_factory=_per_table)
    written: dict[str, int] = field(default_factory=_per_table)
    quarantined: dict[str, int] = field(default_factory=_per_table)
    shed: dict[str, int] = field(default_factory=_per_table)
    lost: dict[str, int] = field(default_factory=_per_table)  # rows of failed writes, never in the lake
    flushes: int = 0
    failures: int = 0  # writes that failed (the lake unwritable, the child dead twice on one batch)
    restarts: int = 0  # log children that died and were replaced


class LogChildDiedError(Exception):
    """The log child exited (killed, crashed) before answering."""


class LogWriter:
    """Buffers served pairs and engagement tables; a child process writes them to ``lake`` every ``flush_s``."""

    def __init__(
        self,
        lake: Lake,
        quarantine: Path,
        flush_s: float = 1.0,
        max_rows: int = 200_000,
        after_flush: Callable[[pa.Table], None] | None = None,
        hang_s: float = 300.0,
    ):
        self.lake = lake
        self.quarantine = Path(quarantine)
        self.flush_s = flush_s
        self.max_rows = max_rows
        #: Gets the impressions just written, in the child (the seen lists): so it must pickle.
        self.after_flush = after_flush
        if after_flush is not None:
            try:
                pickle.dumps(after_flush)
            except Exception as exc:
                raise TypeError(f"after_flush runs in the log child, so it must pickle: {exc}") from None
        #: A child silent this long on one batch is stuck (a deadlock, a hung disk): it is killed and replaced.
        self.hang_s = hang_s
        self.counts = LogCounts()
        self._queue: dict[str, list] = {t: [] for t in TABLES}
        self._held: list[pa.Table] = []  # engagements waiting one interval for their impressions
        self._rows = 0
        self._lock = threading.Lock()  # the buffer
        self._shipping = threading.Lock()  # one batch in flight, and the child
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def child_pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None else None

    def put(self, table: str, rows: pa.Table | ServedPair) -> bool:
        """Queue rows of ``table`` (a canonical table, or a served pair for impressions); False when full (shed)."""
        if isinstance(rows, pa.Table):
            n = rows.num_rows
        elif table == "impressions":
            n = len(rows[1])
        else:
            raise TypeError(f"{table}: rows are a canonical table; a served pair is for impressions only")
        with self._lock:
            if self._rows + n > self.max_rows:
                self.counts.shed[table] += n
                return False
            self._queue[table].append(rows)
            self._rows += n
            self.counts.queued[table] += n
            large = self._rows > self.max_rows // 2
        if large:  # send it before the interval ends rather than shed
            self._wake.set()
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="homefeed-log-shipper", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        """A flush every ``flush_s`` from the start of the last one (or at once when that took longer)."""
        last = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(max(0.0, last + self.flush_s - time.monotonic()))
            self._wake.clear()
            if not self._stop.is_set():
                last = time.monotonic()
                self.flush()

    def close(self) -> None:
        """Stop sending, write everything still queued (held engagements included), and stop the child."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.flush(final=True)
        with self._shipping:
            self._stop_child()

    def flush(self, final: bool = False) -> None:
        """Send what is queued to the child and wait until it is written; ``final`` writes held engagements too."""
        with self._shipping:
            with self._lock:
                batch, self._queue = self._queue, {t: [] for t in TABLES}
                self._rows = 0
            engagements, self._held = self._held, batch["engagements"]
            if final:
                engagements, self._held = engagements + self._held, []
            if not batch["impressions"] and not engagements:
                return
            tables = [t for t in batch["impressions"] if isinstance(t, pa.Table)]
            pairs = join_served([p for p in batch["impressions"] if not isinstance(p, pa.Table)])
            message = (
                pairs,
                pa.concat_tables(tables) if tables else None,
                pa.concat_tables(engagements) if engagements else None,
            )
            rows = {
                "impressions": sum(len(s) for _, s in pairs) + sum(t.num_rows for t in tables),
                "engagements": sum(t.num_rows for t in engagements),
            }
            self._deliver(message, rows)

    def _deliver(self, message: tuple, rows: dict[str, int]) -> None:
        """Send one batch and take the answer; a dead child is replaced and the batch sent once more."""
        for attempt in (1, 2):
            try:
                conn = self._running_child()
                conn.send(message)
                reply = self._answer(conn)
            except LogChildDiedError as exc:
                self.counts.restarts += 1
                self._stop_child()
                log.error("the log child died (%s)%s", exc, "; sending its batch again" if attempt == 1 else "")
                continue
            except Exception:  # the child cannot be started (no memory, no processes): the service goes on
                log.exception("could not start the log child")
                break
            for table in TABLES:
                # a batch sent again: its rows the dead child wrote are duplicates now, and in the lake
                again = reply["duplicates"][table] if attempt == 2 else 0
                self.counts.written[table] += reply["written"][table] + again
                self.counts.quarantined[table] += reply["quarantined"][table]
            if reply["error"] is None:
                self.counts.flushes += 1
                return
            log.error("writing the serving logs to %s failed: %s", self.lake.root, reply["error"])
            rows = {t: rows[t] - reply["written"][t] - reply["quarantined"][t] for t in TABLES}
            break
        self.counts.failures += 1
        for table in TABLES:
            self.counts.lost[table] += rows[table]

    def _running_child(self) -> Connection:
        if self._child is not None and self._child.is_alive() and self._conn is not None:
            return self._conn
        if self._child is not None:  # died between two batches
            self._child.join(timeout=5)
            self.counts.restarts += 1
            log.error("the log child died (exit code %s); starting another", self._child.exitcode)
        self._stop_child()
        context = multiprocessing.get_context("forkserver")
        # The fork server imports these once; each child is a fork of it, ready in milliseconds.
        preload = [__name__] + ([type(self.after_flush).__module__] if self.after_flush is not None else [])
        context.set_forkserver_preload(preload)
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_child_main,
            args=(theirs, self.lake, self.quarantine, self.after_flush),
            name="homefeed-log-child",
            daemon=True,
        )
        try:
            child.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child's end lives in the child only: its death reads as end-of-file here
        self._child, self._conn = child, ours
        return ours

    def _answer(self, conn: Connection) -> dict:
        child = self._child
        deadline = time.monotonic() + self.hang_s
        while True:
            try:
                if conn.poll(min(0.5, self.hang_s)):
                    return conn.recv()
            except (EOFError, OSError):
                pass
            else:
                if child is not None and child.is_alive():
                    if time.monotonic() < deadline:
                        continue
                    child.kill()
                    child.join(timeout=5)
                    raise LogChildDiedError(f"no answer in {self.hang_s:g} s: killed")
            if child is not None:
                child.join(timeout=5)
            raise LogChildDiedError(f"exit code {child.exitcode if child is not None else None}")

    def _stop_child(self) -> None:
        child, conn = self._child, self._conn
        self._child = self._conn = None
        if conn is not None:
            with suppress(OSError):
                conn.send(None)  # the child's signal to end
            conn.close()
        if child is not None:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)


def join_served(pairs: list[ServedPair]) -> list[ServedPair]:
    """The served pairs as few as possible: one per kind of request (surface, which optional columns it has).

    Each kind's requests and slates are concatenated column by column (slates' request indices shifted), so the
    child builds one table per kind; cheaper than a table per request here, where every microsecond holds the GIL.
    """
    kinds: dict[tuple, list[ServedPair]] = {}
    for requests, slates in pairs:
        kind = (
            requests.surface,
            requests.context_features is None,
            slates.score is None,
            isinstance(slates.model_version, str),
            slates.experiments is None,
            slates.served_features is None,
        )
        kinds.setdefault(kind, []).append((requests, slates))
    return [group[0] if len(group) == 1 else _join(group) for group in kinds.values()]


def _cat(arrays: list) -> pa.Array:
    return pa.concat_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays])


def _join(pairs: list[ServedPair]) -> ServedPair:
    rs = [r for r, _ in pairs]
    ss = [s for _, s in pairs]
    starts = np.cumsum([0] + [len(r) for r in rs[:-1]])
    requests = RequestBatch(
        request_id=_cat([r.request_id for r in rs]),
        user_id=np.concatenate([r.user_id for r in rs]),
        ts=np.concatenate([r.ts for r in rs]),
        slate_size=np.concatenate([r.slate_size for r in rs]),
        country=_cat([r.country for r in rs]),
        surface=rs[0].surface,
        context_features=None if rs[0].context_features is None else _cat([r.context_features for r in rs]),
    )
    versions = {s.model_version for s in ss} if isinstance(ss[0].model_version, str) else ()
    slates = SlateBatch(
        request_index=np.concatenate([s.request_index + start for s, start in zip(ss, starts, strict=True)]),
        position=np.concatenate([s.position for s in ss]),
        item_id=np.concatenate([s.item_id for s in ss]),
        propensity=np.concatenate([s.propensity for s in ss]),
        score=None if ss[0].score is None else np.concatenate([s.score for s in ss]),
        model_version=ss[0].model_version if len(versions) == 1 else _cat([s.model_versions() for s in ss]),
        experiments=None if ss[0].experiments is None else _cat([s.experiment_column() for s in ss]),
        served_features=None if ss[0].served_features is None else _cat([s.served_features_column() for s in ss]),
    )
    return requests, slates


# --- the child -----------------------------------------------------------------------------------------------------


def _child_main(conn: Connection, lake: Lake, quarantine: Path, after_flush: Callable[[pa.Table], None] | None) -> None:
    """Write each batch the serving process sends and answer; end when told, or when the serving process is gone."""
    # A Ctrl-C to the terminal's process group is the server's to handle: it sends what is left, then None.  A
    # SIGTERM ends the child (as multiprocessing does at the server's exit); a batch it was writing is sent again.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Logging may lag (the buffer absorbs it, then sheds), requests may not: on a busy machine the server's
    # threads get the CPU first.
    os.nice(NICENESS)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        reply = write_batch(lake, quarantine, *message, after_flush=after_flush)
        try:
            conn.send(reply)
        except OSError:
            return


def write_batch(
    lake: Lake,
    quarantine: Path,
    served: list[ServedPair],
    impressions: pa.Table | None,
    engagements: pa.Table | None,
    after_flush: Callable[[pa.Table], None] | None = None,
) -> dict:
    """One flush: the impressions (served pairs and tables), then the engagements, through the ingestion contract
    under the lake's lock.

    Returns the rows written, quarantined and found already there per table, the error (None when all went well)
    and the seconds taken.
    """
    t0 = time.perf_counter()
    reply: dict = {"written": _per_table(), "quarantined": _per_table(), "duplicates": _per_table(), "error": None}
    try:
        with _lake_lock(lake):
            built = [impressions_table(r, s) for r, s in served] + ([impressions] if impressions is not None else [])
            if built:
                rows = pa.concat_tables(built)
                _ingest(reply, "impressions", rows, lake, quarantine)
                if after_flush is not None:
                    after_flush(rows)
            if engagements is not None and engagements.num_rows:
                _ingest(reply, "engagements", engagements, lake, quarantine)
    except Exception:  # the lake unwritable (disk full, permissions): answered, counted and logged by the server
        reply["error"] = traceback.format_exc(limit=5)
    reply["seconds"] = time.perf_counter() - t0
    return reply


def _ingest(reply: dict, table: str, rows: pa.Table, lake: Lake, quarantine: Path) -> None:
    report = ingest_table(rows, table, lake, quarantine, source=f"serve:{table}")
    reply["written"][table] += report.written
    reply["quarantined"][table] += report.quarantined
    reply["duplicates"][table] += report.duplicates


@contextmanager
def _lake_lock(lake: Lake):
    lake.root.mkdir(parents=True, exist_ok=True)
    with (lake.root / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
