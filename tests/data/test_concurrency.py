"""Concurrent writers and killed runs, in real processes: the lake and the ETL's snapshots stay whole.

Each test starts its writers as separate Python processes that wait on a start file, so they run at once,
then checks what a reader relies on: row counts, one row per key, every file its manifest's checksum, and
results equal to those of one writer alone.  (Issue 12: two ingests into one day lost 10% of the rows and
left a file that no longer matched its manifest; two ETL runs left 13 of 18 snapshot manifests naming files
that no longer existed.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from filelock import Timeout

from homefeed.data.etl import DuckDBEngine, Params, outputs, run_etl, snapshot_lake
from homefeed.data.etl.run import STAGING_PREFIX
from homefeed.data.lake import EVENT_KEY, MANIFEST, NEW, Lake
from tests.conftest import assert_same_table, load_lake, run_world

REPO = Path(__file__).resolve().parents[2]
START = dt.date(2026, 3, 2)
WINDOWS = (1, 3)
NOW = "2026-04-01T00:00:00+00:00"

#: Waits for the start file, so that every writer begins at the same moment after its (slow) imports.
PRELUDE = """
import datetime as dt, json, sys, time
from pathlib import Path
go = Path(sys.argv[1])
args = json.loads(sys.argv[2])
{imports}
while not go.exists():
    time.sleep(0.005)
"""
INGEST = (
    PRELUDE.format(imports="from homefeed.data.ingest import ingest\nfrom homefeed.data.lake import Lake")
    + """
lake = Lake(args["lake"])
now = dt.datetime.fromisoformat(args["now"])
reports = [ingest(f, args["table"], "parquet", lake, args["quarantine"], now) for f in args["files"]]
print(json.dumps([[r.rows_in, r.written, r.duplicates, r.quarantined] for r in reports]))
"""
)
ETL = (
    PRELUDE.format(
        imports="from homefeed.data.etl import DuckDBEngine, Params, run_etl\nfrom homefeed.data.lake import Lake"
    )
    + """
start, end = dt.date.fromisoformat(args["start"]), dt.date.fromisoformat(args["end"])
params = Params(start, end, windows=tuple(args["windows"]))
report = run_etl(Lake(args["lake"]), Lake(args["features"]), params, DuckDBEngine())
print(json.dumps({"computed": [str(d) for d in report.computed], "up_to_date": [str(d) for d in report.up_to_date]}))
"""
)


def spawn(script: str, go: Path, args: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(go), json.dumps(args)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 600) -> object:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def write_chunks(rows: pa.Table, parts: int, folder: Path, name: str) -> list[Path]:
    """``rows`` as ``parts`` Parquet files of about equal size."""
    bounds = [i * rows.num_rows // parts for i in range(parts + 1)]
    files = [folder / f"{name}-{i:02d}.parquet" for i in range(parts)]
    for file, a, b in zip(files, bounds, bounds[1:], strict=False):
        pq.write_table(rows.slice(a, b - a), file)
    return files


def assert_whole(lake: Lake, table: str) -> pa.Table:
    """Every committed file matches its manifest, the manifests' rows are the rows read, one row per key."""
    for date in lake.dates(table):
        assert lake.verify(table, date) == [], (table, date)
    rows = lake.read(table)
    assert sum(lake.manifest(table, d).rows for d in lake.dates(table)) == rows.num_rows
    keys = rows.select(list(EVENT_KEY[table])).group_by(list(EVENT_KEY[table])).aggregate([])
    assert keys.num_rows == rows.num_rows, f"{table}: a key stored twice"
    return rows


def assert_snapshots_whole(features: Lake, names: list[str], days: list[dt.date]) -> None:
    """Each snapshot partition: one file, the one its manifest names, with its checksum; nothing else left."""
    for name in names:
        assert features.dates(name) == days, name
        for day in days:
            part = features.partition(name, day)
            listed = [f.name for f in features.manifest(name, day).files]
            assert len(listed) == 1 and features.verify(name, day) == [], (name, day)
            assert sorted(p.name for p in part.iterdir()) == sorted([MANIFEST, *listed]), (name, day)
    assert not list(features.root.glob(f"{STAGING_PREFIX}*"))


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("concurrency_logs")
    run_world(out, "random", days=5, users=2_500, items_per_day=300, creators=100, seed=31)
    return out


@pytest.fixture(scope="module")
def reference(logs, tmp_path_factory) -> tuple[Lake, Lake]:
    """The lake and its snapshots, each written by one writer alone: what concurrent writers must end with."""
    root = tmp_path_factory.mktemp("reference")
    lake = load_lake(logs, root / "lake")
    features = snapshot_lake(root / "features")
    run_etl(lake, features, Params(START, START + dt.timedelta(days=4), windows=WINDOWS), DuckDBEngine())
    return lake, features


def test_two_ingests_into_one_day_lose_nothing_and_store_nothing_twice(logs, tmp_path):
    day = sorted((logs / "impressions").iterdir())[2]
    rows = pa.concat_tables(pq.read_table(f) for f in sorted(day.glob("*.parquet")))
    chunks = write_chunks(rows, 40, tmp_path, "chunk")
    go = tmp_path / "go"
    lake = {"lake": str(tmp_path / "lake"), "quarantine": str(tmp_path / "q"), "table": "impressions", "now": NOW}
    writers = [spawn(INGEST, go, {**lake, "files": [str(f) for f in chunks[i::2]]}) for i in (0, 1)]
    go.touch()
    reports = [report for w in writers for report in finish(w)]
    assert sum(written for _, written, _, _ in reports) == rows.num_rows
    assert sum(duplicates + quarantined for _, _, duplicates, quarantined in reports) == 0
    stored = assert_whole(Lake(tmp_path / "lake"), "impressions")
    order = [(k, "ascending") for k in EVENT_KEY["impressions"]]
    assert stored.sort_by(order).equals(rows.cast(stored.schema).sort_by(order))
    assert (
        len(Lake(tmp_path / "lake").manifest("impressions", Lake(tmp_path / "lake").dates("impressions")[0]).files)
        == 40
    )


def test_the_same_file_ingested_twice_at_once_is_stored_once(logs, tmp_path):
    files = [str(f) for f in sorted((logs / "impressions").rglob("*.parquet"))]
    go = tmp_path / "go"
    lake = {"lake": str(tmp_path / "lake"), "quarantine": str(tmp_path / "q"), "table": "impressions", "now": NOW}
    writers = [spawn(INGEST, go, {**lake, "files": files}) for _ in range(2)]
    go.touch()
    reports = [finish(w) for w in writers]
    for first, second in zip(*reports, strict=True):  # each file: one writer wrote it, the other found duplicates
        assert first[1] + second[1] == first[0] == second[0]
        assert first[2] + second[2] == first[0]
    stored = assert_whole(Lake(tmp_path / "lake"), "impressions")
    assert stored.num_rows == sum(pq.read_metadata(f).num_rows for f in files)


def test_two_etl_runs_over_the_same_days_leave_every_snapshot_whole(reference, tmp_path):
    lake, expected = reference
    go = tmp_path / "go"
    args = {"lake": str(lake.root), "features": str(tmp_path / "features"), "windows": list(WINDOWS)}
    args |= {"start": str(START), "end": str(START + dt.timedelta(days=4))}
    runs = [spawn(ETL, go, args) for _ in range(2)]
    go.touch()
    reports = [finish(r) for r in runs]
    days = [START + dt.timedelta(days=i) for i in range(5)]
    # One computed every day; the other waited for it, then found every day up to date.
    assert sorted(len(r["computed"]) for r in reports) == [0, 5]
    features = snapshot_lake(tmp_path / "features")
    names = outputs(Params(START, days[-1], windows=WINDOWS))
    assert_snapshots_whole(features, names, days)
    for name in names:
        for day in days:
            assert_same_table(features.read(name, day, day), expected.read(name, day, day), f"{name} {day}")


def test_an_ingest_during_an_etl_run_changes_nothing_the_run_read(logs, reference, tmp_path):
    _, expected = reference
    lake = load_lake(logs, tmp_path / "lake", tables=("users", "items", "engagements"))
    impressions = pa.concat_tables(pq.read_table(f) for f in sorted((logs / "impressions").rglob("*.parquet")))
    day_of = pc.cast(impressions["ts"], pa.date32())
    held_back = pc.equal(day_of, pa.scalar(START + dt.timedelta(days=3), pa.date32()))
    lake.append("impressions", impressions.filter(pc.invert(held_back)), ["logs"])
    late = impressions.filter(held_back)
    chunks = write_chunks(late, 8, tmp_path, "late")  # day 3's impressions arrive while the ETL runs
    go = tmp_path / "go"
    end = START + dt.timedelta(days=4)
    etl = {"lake": str(lake.root), "features": str(tmp_path / "features"), "windows": list(WINDOWS)}
    run = spawn(ETL, go, {**etl, "start": str(START), "end": str(end)})
    writer = spawn(
        INGEST, go, {"lake": str(lake.root), "quarantine": str(tmp_path / "q"), "table": "impressions", "now": NOW,
                     "files": [str(f) for f in chunks]},
    )  # fmt: skip
    go.touch()
    assert sum(r[1] for r in finish(writer)) == late.num_rows
    finish(run)
    assert assert_whole(lake, "impressions").num_rows == impressions.num_rows
    features = snapshot_lake(tmp_path / "features")
    names = outputs(Params(START, end, windows=WINDOWS))
    days = [START + dt.timedelta(days=i) for i in range(5)]
    assert_snapshots_whole(features, names, days)
    # What each snapshot says it read is what the lake held: the next run recomputes exactly the days the late
    # files reach, and ends where one run over the whole lake does.
    listing = {
        k: v for t in ("impressions", "engagements", "items", "users") for k, v in lake.checksums(lake.files(t)).items()
    }
    for name in names:
        for day in days:
            for source in features.manifest(name, day).files[0].sources[:-1]:
                key, sha = source.split(" sha256=")
                assert listing[key] == sha, (name, day, key)
    run_etl(lake, features, Params(START, end, windows=WINDOWS), DuckDBEngine())
    assert_snapshots_whole(features, names, days)
    for name in names:
        for day in days:
            assert_same_table(features.read(name, day, day), expected.read(name, day, day), f"{name} {day}")


def test_a_killed_etl_run_leaves_the_previous_state_and_the_next_run_cleans_up(reference, tmp_path):
    lake, expected = reference
    features = snapshot_lake(tmp_path / "features")
    go = tmp_path / "go"
    end = START + dt.timedelta(days=4)
    run = spawn(ETL, go, {"lake": str(lake.root), "features": str(features.root), "windows": list(WINDOWS),
                          "start": str(START), "end": str(end)})  # fmt: skip
    go.touch()
    deadline = time.monotonic() + 300
    while not list(features.root.glob("*/date=*/part-*.parquet")):  # staged output, not yet committed
        assert run.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL
    assert list(features.root.glob(f"{STAGING_PREFIX}*")), "a killed run leaves its staging folder"
    assert list(features.root.glob(f"*/date=*/{NEW}")), "and partitions it had begun"
    names = outputs(Params(START, end, windows=WINDOWS))
    for name in names:
        assert features.dates(name) == [], "nothing uncommitted is visible"
    report = run_etl(lake, features, Params(START, end, windows=WINDOWS), DuckDBEngine())
    days = [START + dt.timedelta(days=i) for i in range(5)]
    assert report.computed == days
    assert_snapshots_whole(features, names, days)
    for name in names:
        for day in days:
            assert_same_table(features.read(name, day, day), expected.read(name, day, day), f"{name} {day}")


def test_a_file_lock_is_released_when_its_process_is_killed(tmp_path):
    """What every writer relies on: a killed holder does not leave the lake locked."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from homefeed.data.lake import Lake
            with Lake({str(tmp_path)!r}).lock("impressions"):
                print("held", flush=True)
                time.sleep(600)
        """)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    lock = Lake(tmp_path).lock("impressions")
    with pytest.raises(Timeout):
        lock.acquire(timeout=0.2)
    holder.kill()
    holder.wait()
    with lock.acquire(timeout=30):
        assert lock.is_locked
