"""The serving log writer, with its child process really running: the contract, flush, shedding, a dying child."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from homefeed.data.ingest import ORPHAN
from homefeed.data.lake import Lake
from homefeed.feed import RequestBatch, SlateBatch
from homefeed.schema import ENGAGEMENTS
from homefeed.serve.logs import NICENESS, LogWriter, join_served
from homefeed.serve.service import Service
from tests.serve.conftest import SERVE_DAY, active_users, settings_for
from tests.serve.http import feed, running

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
NOW_US = int(NOW.timestamp() * 1_000_000)


def served(request_id: str, user: int, items: list[int], ts_us: int = NOW_US, **slates: object):
    """One request's (RequestBatch, SlateBatch), as the pipeline hands it to the log."""
    n = len(items)
    requests = RequestBatch(
        request_id=pa.array([request_id]),
        user_id=np.array([user], np.int64),
        ts=np.array([ts_us], np.int64),
        slate_size=np.array([n], np.int32),
        country=pa.array(["US"]),
    )
    columns = {"score": np.linspace(1, 0, n), "model_version": "m-1", **slates}
    batch = SlateBatch(
        request_index=np.zeros(n, np.int64),
        position=np.arange(1, n + 1, dtype=np.int32),
        item_id=np.array(items, np.int64),
        propensity=np.full(n, 1.0 / n),
        **columns,
    )
    return requests, batch


def engagement(request_id: str, user: int, item: int, action: str = "click", seconds: int = 5) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([NOW_US + seconds * 1_000_000]).cast(ENGAGEMENTS.field("ts").type),
            "user_id": pa.array([user], pa.int64()),
            "item_id": pa.array([item], pa.int64()),
            "request_id": pa.array([request_id]),
            "action": pa.array([action]),
            "dwell": pa.nulls(1, pa.float64()),
        },
        schema=ENGAGEMENTS,
    )


class CountRows:
    """An ``after_flush`` that runs in the child: appends how many impressions it got to a file."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, impressions: pa.Table) -> None:
        with self.path.open("a") as f:
            f.write(f"{impressions.num_rows}\n")


class DieWhileMarked:
    """An ``after_flush`` that kills its child (after the impressions were written) while ``marker`` holds a count."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __call__(self, impressions: pa.Table) -> None:
        left = int(self.marker.read_text()) if self.marker.exists() else 0
        if left > 0:
            self.marker.write_text(str(left - 1))
            os._exit(9)


class HangWhileMarked:
    """An ``after_flush`` that hangs its child (after the impressions were written) while ``marker`` exists."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __call__(self, impressions: pa.Table) -> None:
        if self.marker.exists():
            self.marker.unlink()
            time.sleep(3600)


def lake_rows(lake: Lake, table: str) -> pa.Table:
    day = NOW.date()
    return lake.read(table, day, day + dt.timedelta(days=1))


def quarantined(root: Path, table: str) -> pa.Table:
    files = sorted((root / table).rglob("*.parquet"))
    return (
        pa.concat_tables([pq.read_table(f) for f in files])
        if files
        else pa.table({"reason": pa.array([], pa.string())})
    )


@pytest.fixture
def paths(tmp_path) -> tuple[Lake, Path]:
    return Lake(tmp_path / "lake"), tmp_path / "quarantine"


def test_rows_land_through_the_contract_and_engagements_wait_one_flush(paths, tmp_path):
    lake, quarantine = paths
    seen = tmp_path / "seen.txt"
    writer = LogWriter(lake, quarantine, flush_s=60, after_flush=CountRows(seen))
    try:
        assert writer.put("impressions", served("r1", 1, [10, 11, 12]))
        assert writer.put("impressions", served("r2", 2, [20, 21]))
        writer.put("engagements", engagement("r1", 1, 11))  # answers r1's impression
        writer.put("engagements", engagement("r9", 1, 11))  # answers nothing: an orphan
        writer.put("engagements", engagement("r2", 2, 20, action="teleport"))  # breaks the contract
        writer.flush()
        # flush() returned: the impressions are in the lake, built in the child; the engagements wait one flush
        logged = lake_rows(lake, "impressions")
        assert sorted(zip(logged["request_id"].to_pylist(), logged["position"].to_pylist(), strict=True)) == [
            ("r1", 1), ("r1", 2), ("r1", 3), ("r2", 1), ("r2", 2),
        ]  # fmt: skip
        assert set(logged["model_version"].to_pylist()) == {"m-1"}
        assert seen.read_text().split() == ["5"]  # the child recorded what it wrote
        assert os.getpriority(os.PRIO_PROCESS, writer.child_pid) == min(
            19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS
        )
        assert lake_rows(lake, "engagements").num_rows == 0
        assert writer.counts.written == {"impressions": 5, "engagements": 0}
        writer.flush()
        assert lake_rows(lake, "engagements")["request_id"].to_pylist() == ["r1"]
        reasons = sorted(quarantined(quarantine, "engagements")["reason"].to_pylist())
        assert len(reasons) == 2 and reasons[0].startswith("action:") and reasons[1] == ORPHAN
        assert writer.counts.written == {"impressions": 5, "engagements": 1}
        assert writer.counts.quarantined == {"impressions": 0, "engagements": 2}
        assert writer.counts.flushes == 2 and writer.counts.failures == 0
    finally:
        writer.close()
    assert writer.child_pid is None


def test_impressions_may_also_come_as_tables_and_a_served_pair_is_for_impressions_only(paths):
    from homefeed.feed import impressions_table

    lake, quarantine = paths
    writer = LogWriter(lake, quarantine, flush_s=60)
    try:
        writer.put("impressions", impressions_table(*served("t1", 1, [10, 11])))
        writer.put("impressions", served("p1", 1, [12]))
        with pytest.raises(TypeError, match="engagements: rows are a canonical table"):
            writer.put("engagements", served("p2", 1, [13]))
        writer.flush()
        assert sorted(lake_rows(lake, "impressions")["request_id"].to_pylist()) == ["p1", "t1", "t1"]
        assert writer.counts.written["impressions"] == 3
    finally:
        writer.close()


def test_an_after_flush_that_cannot_reach_the_child_is_refused_at_once(paths):
    with pytest.raises(TypeError, match="after_flush runs in the log child, so it must pickle"):
        LogWriter(*paths, after_flush=lambda table: None)


def test_a_writer_left_open_does_not_hold_up_the_exit_of_its_process(tmp_path):
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from tests.serve.test_logs import served\n"
        "from homefeed.data.lake import Lake\n"
        "from homefeed.serve.logs import LogWriter\n"
        "if __name__ == '__main__':\n"
        "    w = LogWriter(Lake(sys.argv[2]), sys.argv[3])\n"
        "    w.put('impressions', served('r1', 1, [10]))\n"
        "    w.flush()\n"
        "    print(w.child_pid)\n"  # and exits without close()
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script, str(root), str(tmp_path / "lake"), str(tmp_path / "q")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert lake_rows(Lake(tmp_path / "lake"), "impressions").num_rows == 1


def test_close_writes_everything_held_engagements_included(paths):
    lake, quarantine = paths
    writer = LogWriter(lake, quarantine, flush_s=60)
    writer.start()
    writer.put("impressions", served("r1", 1, [10, 11]))
    writer.put("engagements", engagement("r1", 1, 10))
    writer.flush()
    writer.put("impressions", served("r2", 2, [20]))
    writer.put("engagements", engagement("r2", 2, 20, action="save"))
    child = writer.child_pid
    writer.close()
    assert lake_rows(lake, "impressions").num_rows == 3
    assert sorted(lake_rows(lake, "engagements")["request_id"].to_pylist()) == ["r1", "r2"]
    assert writer.counts.written == {"impressions": 3, "engagements": 2}
    with pytest.raises(ProcessLookupError):  # the child ended with the writer
        os.kill(child, 0)


def test_the_background_thread_flushes_every_interval(paths):
    lake, quarantine = paths
    writer = LogWriter(lake, quarantine, flush_s=0.1)
    writer.start()
    try:
        writer.put("impressions", served("r1", 1, [10, 11]))
        deadline = time.monotonic() + 30
        while writer.counts.written["impressions"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lake_rows(lake, "impressions").num_rows == 2
    finally:
        writer.close()


def test_a_full_queue_sheds_logging_and_counts_it(paths):
    lake, quarantine = paths
    writer = LogWriter(lake, quarantine, flush_s=60, max_rows=5)
    try:
        assert writer.put("impressions", served("r1", 1, [1, 2, 3]))
        assert not writer.put("impressions", served("r2", 1, [4, 5, 6]))  # 6 rows > 5: shed whole
        assert writer.put("engagements", engagement("r1", 1, 1))
        two = pa.concat_tables([engagement("r1", 1, 2), engagement("r1", 1, 3)])
        assert not writer.put("engagements", two)  # 4 + 2 rows > 5
        assert writer.counts.shed == {"impressions": 3, "engagements": 2}
        assert writer.counts.queued == {"impressions": 3, "engagements": 1}
        writer.flush()
        assert writer.put("impressions", served("r3", 1, [7, 8]))  # flushed: room again
    finally:
        writer.close()
    assert lake_rows(lake, "impressions")["request_id"].unique().to_pylist() == ["r1", "r3"]


def test_a_killed_child_is_replaced_and_later_rows_are_written(paths):
    lake, quarantine = paths
    writer = LogWriter(lake, quarantine, flush_s=60)
    try:
        writer.put("impressions", served("r1", 1, [10]))
        writer.flush()
        first = writer.child_pid
        os.kill(first, signal.SIGKILL)  # dead or dying: the next flush finds out either way
        writer.put("impressions", served("r2", 1, [20, 21]))
        writer.flush()
        assert writer.child_pid not in (None, first)
        assert writer.counts.restarts == 1 and writer.counts.failures == 0
        assert sorted(lake_rows(lake, "impressions")["request_id"].to_pylist()) == ["r1", "r2", "r2"]
        assert writer.counts.written["impressions"] == 3
    finally:
        writer.close()


def test_a_child_dying_mid_write_is_replaced_and_its_batch_sent_again_without_duplicates(paths, tmp_path):
    lake, quarantine = paths
    marker = tmp_path / "die"
    marker.write_text("1")  # the first child dies after writing the impressions, before answering
    writer = LogWriter(lake, quarantine, flush_s=60, after_flush=DieWhileMarked(marker))
    try:
        writer.put("impressions", served("r1", 1, [10, 11]))
        writer.flush()
        assert writer.counts.restarts == 1 and writer.counts.failures == 0
        logged = lake_rows(lake, "impressions")
        assert sorted(logged["position"].to_pylist()) == [1, 2]  # written once: the re-sent batch was deduplicated
        assert writer.counts.written["impressions"] == 2
        marker.write_text(
            "2"
        )  # a batch that kills every child: dropped after the second, counted, and the rest goes on
        writer.put("impressions", served("r2", 1, [20]))
        writer.flush()
        assert writer.counts.restarts == 3 and writer.counts.failures == 1
        assert writer.counts.lost == {"impressions": 1, "engagements": 0}
        writer.put("impressions", served("r3", 1, [30]))
        writer.flush()
        assert set(lake_rows(lake, "impressions")["request_id"].to_pylist()) == {"r1", "r2", "r3"}
    finally:
        writer.close()


def test_a_hung_child_is_killed_replaced_and_its_batch_sent_again(paths, tmp_path):
    lake, quarantine = paths
    marker = tmp_path / "hang"
    marker.touch()
    writer = LogWriter(lake, quarantine, flush_s=60, after_flush=HangWhileMarked(marker), hang_s=2.0)
    try:
        writer.put("impressions", served("r1", 1, [10, 11]))
        started = time.monotonic()
        writer.flush()
        assert 2.0 <= time.monotonic() - started < 30
        assert writer.counts.restarts == 1 and writer.counts.failures == 0
        assert sorted(lake_rows(lake, "impressions")["position"].to_pylist()) == [1, 2]
        assert writer.counts.written["impressions"] == 2
    finally:
        writer.close()


def test_requests_are_joined_into_one_pair_per_kind_and_build_the_same_table():
    from homefeed.feed import impressions_table

    pairs = [
        served("a", 1, [1, 2, 3]),
        served("b", 2, [4, 5]),
        served("c", 3, [6], model_version="m-2"),
        served("d", 4, [7, 8], score=None),  # no model score (a fallback): logged as null
    ]
    joined = join_served(pairs)
    assert len(joined) == 2  # scored (three versions among them) and unscored
    one = pa.concat_tables([impressions_table(r, s) for r, s in pairs])
    other = pa.concat_tables([impressions_table(r, s) for r, s in joined])
    key = [("request_id", "ascending"), ("position", "ascending")]
    assert one.sort_by(key).equals(other.sort_by(key))
    assert pc.count(other["score"], mode="only_null").as_py() == 2


def test_the_service_keeps_answering_while_its_log_child_is_killed(served_world, tmp_path, monkeypatch):
    settings = settings_for(served_world, tmp_path / "project", private=True, log_flush_seconds=0.2)
    users = active_users(settings, 20)
    services: list[Service] = []
    start = Service.start
    monkeypatch.setattr(Service, "start", lambda self: (services.append(self), start(self))[1])
    statuses: list[int] = []
    ids_after: list[str] = []
    with running(settings) as client:
        (service,) = services
        shown: dict[int, set[int]] = {}
        for i in range(10):
            answer = feed(client, users[i], slate_size=5)
            statuses.append(answer.status_code)
            shown[int(users[i])] = {item["item_id"] for item in answer.json()["items"]}
        deadline = time.monotonic() + 30
        while service.writer.counts.written["impressions"] < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the child recorded them in the users' seen lists, through its own store connection
        owners, ids, _ = service.signals.read(users[:10])["seen"]
        for i, user in enumerate(users[:10]):
            assert shown[int(user)] <= set(ids[owners == i].tolist())
        first = service.writer.child_pid
        os.kill(first, signal.SIGKILL)
        for i in range(30):
            answer = feed(client, users[i % len(users)], slate_size=5)
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                ids_after.append(answer.json()["request_id"])
        deadline = time.monotonic() + 30
        while service.writer.counts.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.writer.counts.restarts == 1
        assert service.writer.child_pid != first
        assert "homefeed_log_child_restarts 1.0" in client.get("/metrics").text
    assert statuses == [200] * 40
    logged = Lake(settings.resolved_paths.lake).read("impressions", SERVE_DAY, SERVE_DAY)
    assert len(ids_after) == 30 and set(ids_after) <= set(logged["request_id"].to_pylist())
