"""Streaming ingest: a file read a chunk at a time lands exactly as read whole, with nothing lost.

Every chunk goes through the contract, the quarantine and the dedupe against the lake on its own, so these
tests cut small files into many chunks and check the books against the whole-file read and against the rows
planted: each malformed row quarantined with its reason and its line in the file, a row repeated in a later
chunk a duplicate, rows in = written + duplicates + quarantined, and a file that does not parse refused before
any chunk of it is written.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from homefeed.config import SimSettings
from homefeed.data.ingest import IngestError, ingest
from homefeed.data.lake import Lake
from homefeed.data.open_bandit import bandit_feedback, ingest_open_bandit
from homefeed.data.readers import read_chunks
from homefeed.datasets import open_bandit_sample
from homefeed.schema import TABLES
from homefeed.sim import RandomPolicy, Simulation

NOW = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
SMALL = 16 << 10  # 16 KiB: a few dozen rows a chunk
HEADER = ["request_id", "ts", "user_id", "item_id", "surface", "position", "country", "model_version", "propensity"]


@pytest.fixture(scope="module")
def impressions(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("stream_logs")
    Simulation(SimSettings(users=600, items_per_day=200, creators=60, seed=4)).run(RandomPolicy(seed=3), 2, out)
    rows = pq.read_table(sorted((out / "impressions").rglob("*.parquet"))[0]).select(HEADER).slice(0, 1500)
    return [{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in r.items()} for r in rows.to_pylist()]


def planted(rows: list[dict]) -> tuple[list[dict], dict[int, str]]:
    """The rows with bad values at places spread over the file, a row repeated far from its first, and, by the
    row's 0-based place, the reason each bad one must be quarantined with."""
    rows = [dict(r) for r in rows]
    rows[3]["position"] = 0
    rows[700]["propensity"] = "abc"
    rows[1400]["position"] = -2
    rows.append(dict(rows[5]))  # a duplicate, many chunks after the first
    return rows, {
        3: "position:greater_than_or_equal_to(1)",
        700: "type:propensity",
        1400: "position:greater_than_or_equal_to(1)",
    }


def write_csv(path, rows: list[dict]) -> None:
    cells = [",".join("" if r[h] is None else str(r[h]) for h in HEADER) for r in rows]
    path.write_text("\n".join([",".join(HEADER), *cells]) + "\n", encoding="utf-8")


def write_jsonl(path, rows: list[dict | str]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def quarantined(root) -> list[tuple]:
    if not root.exists():
        return []
    return duckdb.sql(f"select line, reason, raw from read_parquet('{root}/**/*.parquet') order by line").fetchall()


def books(report) -> tuple:
    return report.rows_in, report.written, report.duplicates, report.quarantined, report.reasons, report.partitions


def ingest_both(tmp_path, path, fmt):
    """The file ingested in small chunks and whole, each into a lake of its own: (reports, lakes, quarantines)."""
    out = []
    for name, chunk in (("chunked", SMALL), ("whole", 1 << 30)):
        lake, q = Lake(tmp_path / name / "lake"), tmp_path / name / "q"
        out.append((ingest(path, "impressions", fmt, lake, q, NOW, chunk_bytes=chunk), lake, q))
    return out


def assert_same_landing(chunked, whole) -> None:
    (report, lake, q), (report_whole, lake_whole, q_whole) = chunked, whole
    assert books(report) == books(report_whole) and report.balanced
    key = ["request_id", "position"]
    assert (
        lake.read("impressions")
        .sort_by([(k, "ascending") for k in key])
        .equals(lake_whole.read("impressions").sort_by([(k, "ascending") for k in key]))
    )
    # The same rows with the same reasons at the same lines.  A raw value may be typed apart: a JSON Lines column
    # whose values mix types anywhere in a chunk is kept as text for that chunk (0.5 read whole, "0.5" in a chunk).
    assert [normal(row) for row in quarantined(q)] == [normal(row) for row in quarantined(q_whole)]


def normal(row: tuple) -> tuple:
    line, reason, raw = row
    try:
        parsed = json.loads(raw)
    except ValueError:  # a malformed line, kept as it was
        parsed = raw
    return line, reason, {k: str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else parsed


def test_a_csv_file_in_many_chunks_lands_as_it_does_whole(tmp_path, impressions):
    rows, bad = planted(impressions)
    path = tmp_path / "imps.csv"
    write_csv(path, rows)
    assert len(list(read_chunks(path, "csv", SMALL))) > 5
    chunked, whole = ingest_both(tmp_path, path, "csv")
    assert_same_landing(chunked, whole)
    report = chunked[0]
    assert (report.rows_in, report.quarantined, report.duplicates) == (len(rows), 3, 1)
    assert report.written == len(rows) - 4
    # each bad row with its reason, at its data row (the record after the header), wherever its chunk fell
    assert [(line, reason) for line, reason, _ in quarantined(chunked[2])] == [(i + 1, r) for i, r in bad.items()]
    assert json.loads(quarantined(chunked[2])[1][2])["propensity"] == "abc"


def test_a_json_lines_file_in_many_chunks_lands_as_it_does_whole(tmp_path, impressions):
    rows, bad = planted(impressions)
    lines: list[dict | str] = [*rows]
    lines[300:300] = ["{not json", ""]  # a malformed line, then a blank one: the lines after them move down by 2
    path = tmp_path / "imps.jsonl"
    write_jsonl(path, lines)
    assert len(list(read_chunks(path, "jsonl", SMALL))) > 5
    chunked, whole = ingest_both(tmp_path, path, "jsonl")
    assert_same_landing(chunked, whole)
    report = chunked[0]
    assert (report.rows_in, report.quarantined, report.duplicates) == (len(rows) + 1, 4, 1)
    expected = {(i + 1 + 2 * (i >= 300), r) for i, r in bad.items()} | {(301, "malformed:not_a_json_object")}
    assert {(line, reason) for line, reason, _ in quarantined(chunked[2])} == expected


def test_a_bad_csv_record_in_the_last_chunk_refuses_the_file_before_any_chunk_is_written(tmp_path, impressions):
    path = tmp_path / "imps.csv"
    write_csv(path, impressions)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("r-extra,2026-03-02T00:00:00+00:00,1,2,home,1,US,m,0.5,one too many\n")
    with pytest.raises(IngestError, match=rf"imps.csv: cannot be read as csv at line {len(impressions) + 2}"):
        ingest(path, "impressions", "csv", Lake(tmp_path / "lake"), tmp_path / "q", NOW, chunk_bytes=SMALL)
    assert not (tmp_path / "lake").exists() and not (tmp_path / "q").exists()


def test_an_open_bandit_log_in_many_blocks_lands_as_it_does_whole(tmp_path):
    sample = open_bandit_sample("random/men")
    lakes = {}
    for name, chunk in (("chunked", 256 << 10), ("whole", 1 << 30)):
        lake = Lake(tmp_path / name / "lake")
        reports = ingest_open_bandit(sample, lake, tmp_path / name / "q", NOW, chunk_bytes=chunk)
        assert all(r.balanced for r in reports)
        assert [r.table for r in reports] == ["users", "items", "impressions", "engagements"]
        assert reports[2].written == 10_000 and reports[3].written == 46
        lakes[name] = lake
    for table in TABLES:
        key = [(c, "ascending") for c in ("request_id", "position", "item_id", "user_id") if c in TABLES[table].names]
        a, b = (lakes[n].read(table).sort_by(key) for n in ("chunked", "whole"))
        assert a.equals(b), table
    pd.testing.assert_frame_equal(
        bandit_feedback(lakes["chunked"], "random", "men").to_pandas(),
        bandit_feedback(lakes["whole"], "random", "men").to_pandas(),
    )


def test_a_bad_click_in_the_last_block_of_an_open_bandit_log_refuses_it_before_anything_is_written(tmp_path):
    folder = tmp_path / "obd" / "random" / "men"
    folder.mkdir(parents=True)
    frame = pd.read_csv(open_bandit_sample("random/men") / "men.csv.gz", index_col=0, dtype=str, keep_default_na=False)
    frame.loc[frame.index[-1], "click"] = "7"
    frame.to_csv(folder / "men.csv")
    context = pd.read_csv(open_bandit_sample("random/men") / "item_context.csv.gz", index_col=0)
    context.to_csv(folder / "item_context.csv")
    lake = Lake(tmp_path / "lake")
    with pytest.raises(IngestError, match=r"men\.csv: click must be 0 or 1; data row 10000 has 7"):
        ingest_open_bandit(tmp_path / "obd", lake, tmp_path / "q", NOW, chunk_bytes=256 << 10)
    assert not (tmp_path / "lake").exists() and not (tmp_path / "q").exists()
