"""Ingestion: contracts per row, quarantine with reasons, dedupe, and the rows-in = rows-out invariant."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homefeed.config import SimSettings
from homefeed.data.ingest import IngestError, ingest, ingest_table
from homefeed.data.lake import EVENT_KEY, Lake
from homefeed.schema import TABLES
from homefeed.sim import RandomPolicy, Simulation
from tests.conftest import shifted

NOW = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def sim_logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest_logs")
    Simulation(SimSettings(users=1_500, items_per_day=400, creators=150, seed=8)).run(RandomPolicy(seed=2), 3, out)
    return out


def parts(root, table):
    return sorted((root / table).rglob("*.parquet"))


def load_all(lake, quarantine, sim_logs, tables=("users", "items", "impressions", "engagements")):
    reports = []
    for table in tables:
        for part in parts(sim_logs, table):
            reports.append(ingest(part, table, "parquet", lake, quarantine, NOW))
    return reports


def test_simulated_logs_land_whole_and_reingesting_adds_nothing(tmp_path, sim_logs):
    lake = Lake(tmp_path / "lake")
    reports = load_all(lake, tmp_path / "q", sim_logs)
    assert all(r.balanced and r.quarantined == 0 and r.duplicates == 0 for r in reports)
    for table in TABLES:
        expected = sum(pq.read_metadata(p).num_rows for p in parts(sim_logs, table))
        assert lake.read(table).num_rows == expected, table
    again = load_all(lake, tmp_path / "q", sim_logs)
    assert all(r.written == 0 and r.duplicates == r.rows_in for r in again)
    assert lake.read("impressions").num_rows == sum(
        pq.read_metadata(p).num_rows for p in parts(sim_logs, "impressions")
    )


def test_the_lake_holds_exactly_the_rows_that_arrived(tmp_path, sim_logs):
    lake = Lake(tmp_path / "lake")
    load_all(lake, tmp_path / "q", sim_logs, tables=("impressions", "engagements"))
    for table in ("impressions", "engagements"):
        order = [(k, "ascending") for k in EVENT_KEY[table]]
        arrived = pa.concat_tables(pq.read_table(p) for p in parts(sim_logs, table)).cast(TABLES[table])
        assert lake.read(table).sort_by(order).equals(arrived.sort_by(order)), table


def test_rows_in_memory_are_ingested_as_a_file_would_be(tmp_path, sim_logs):
    rows = pq.read_table(parts(sim_logs, "impressions")[0]).slice(0, 50)
    positions = rows["position"].to_pylist()
    positions[3] = 0
    rows = rows.set_column(rows.schema.get_field_index("position"), "position", pa.array(positions, pa.int32()))
    rows = pa.concat_tables([rows, rows.slice(0, 1)])  # the first row again: a duplicate within the batch
    lake = Lake(tmp_path / "lake")
    report = ingest_table(rows, "impressions", lake, tmp_path / "q", source="memory:test", now=NOW)
    assert (report.rows_in, report.written, report.duplicates, report.quarantined) == (51, 49, 1, 1)
    assert report.reasons == {"position:greater_than_or_equal_to(1)": 1}
    assert [line for line, _, _ in quarantined(tmp_path / "q")] == [4]
    assert lake.manifest("impressions", lake.dates("impressions")[0]).files[0].sources == ["memory:test"]
    again = ingest_table(rows, "impressions", lake, tmp_path / "q", source="memory:test", now=NOW)
    assert (again.written, again.duplicates, again.quarantined) == (0, 50, 1)


def test_partitions_have_manifests_that_say_what_was_read(tmp_path, sim_logs):
    lake = Lake(tmp_path / "lake")
    load_all(lake, tmp_path / "q", sim_logs, tables=("impressions",))
    dates = lake.dates("impressions")
    assert [d.isoformat() for d in dates] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    manifest = lake.manifest("impressions", dates[0])
    assert manifest.rows == lake.read("impressions", dates[0], dates[0]).num_rows
    assert manifest.files[0].sources == [str(parts(sim_logs, "impressions")[0])]
    assert lake.verify("impressions", dates[0]) == []
    victim = lake.partition("impressions", dates[0]) / manifest.files[0].name
    victim.write_bytes(victim.read_bytes()[:-10])
    assert lake.verify("impressions", dates[0]) == [manifest.files[0].name]


def test_a_file_left_without_a_manifest_entry_is_never_read(tmp_path, sim_logs):
    lake = Lake(tmp_path / "lake")
    load_all(lake, tmp_path / "q", sim_logs, tables=("items",))
    before = lake.read("items").num_rows
    date = lake.dates("items")[-1]
    stray = lake.partition("items", date) / "part-99999.parquet"
    pq.write_table(lake.read("items", date, date), stray)  # as if a crash came between file and manifest
    assert lake.read("items").num_rows == before


def write_jsonl(path, rows):
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row if isinstance(row, str) else json.dumps(row, default=str))
            fh.write("\n")


def impression_rows(sim_logs, n=6):
    rows = pq.read_table(parts(sim_logs, "impressions")[0]).slice(0, n).to_pylist()
    return [{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in r.items()} for r in rows]


def quarantined(root):
    return duckdb.sql(f"select line, reason, raw from read_parquet('{root}/**/*.parquet') order by line").fetchall()


def test_bad_rows_go_to_quarantine_with_their_reason_and_raw_row(tmp_path, sim_logs):
    rows = impression_rows(sim_logs)
    rows[1]["position"] = 0
    rows[2]["propensity"] = "abc"
    rows[3]["ts"] = "1970-01-01T00:00:00+00:00"
    del rows[4]["user_id"]
    path = tmp_path / "imps.jsonl"
    write_jsonl(path, [*rows, "{this is not json", "[1, 2]"])
    report = ingest(path, "impressions", "jsonl", Lake(tmp_path / "lake"), tmp_path / "q", NOW)
    assert report.rows_in == 8
    assert report.written == 2
    assert report.quarantined == 6
    assert report.balanced
    reasons = {line: reason for line, reason, _ in quarantined(tmp_path / "q")}
    assert reasons[2] == "position:greater_than_or_equal_to(1)"
    assert reasons[3] == "type:propensity"
    assert reasons[4].startswith("ts:in_range")
    assert reasons[5] == "user_id:null"
    assert reasons[7] == reasons[8] == "malformed:not_a_json_object"
    raw = {line: r for line, _, r in quarantined(tmp_path / "q")}
    assert json.loads(raw[3])["propensity"] == "abc"
    assert raw[7] == "{this is not json"


@pytest.mark.parametrize("lines", [["null"], ["ROWS", "null"], ["ROWS", "null", "  42"]])
def test_a_line_that_is_json_but_not_an_object_is_quarantined_not_read_as_a_row_of_nulls(tmp_path, sim_logs, lines):
    """Arrow's JSON reader takes ``null`` for a row of nulls (and crashed on a file of only ``null``, pyarrow 26)."""
    rows = impression_rows(sim_logs)[:2]
    content = [r for line in lines for r in (rows if line == "ROWS" else [line])]
    path = tmp_path / "imps.jsonl"
    write_jsonl(path, content)
    report = ingest(path, "impressions", "jsonl", Lake(tmp_path / "lake"), tmp_path / "q", NOW)
    assert report.rows_in == len(content) and report.balanced
    assert report.written == len(content) - (len(lines) - ("ROWS" in lines))
    bad = [(line, reason, raw) for line, reason, raw in quarantined(tmp_path / "q")]
    assert {reason for _, reason, _ in bad} == {"malformed:not_a_json_object"}
    assert [raw.strip() for _, _, raw in bad] == [line.strip() for line in lines if line != "ROWS"]


def test_engagements_without_an_impression_are_quarantined(tmp_path, sim_logs):
    lake = Lake(tmp_path / "lake")
    load_all(lake, tmp_path / "q", sim_logs, tables=("impressions",))
    engagements = pq.read_table(parts(sim_logs, "engagements")[0]).slice(0, 4)
    request_ids = engagements["request_id"].to_pylist()
    request_ids[0] = "no-such-request"
    engagements = engagements.set_column(3, "request_id", pa.array(request_ids))
    path = tmp_path / "eng.parquet"
    pq.write_table(engagements, path)
    report = ingest(path, "engagements", "parquet", lake, tmp_path / "q", NOW)
    assert report.reasons == {"orphan:no_matching_impression": 1}
    assert report.written == 3


def test_csv_cells_are_typed_by_the_contract(tmp_path, sim_logs):
    rows = impression_rows(sim_logs, 3)
    rows[2]["position"] = "second"
    path = tmp_path / "imps.csv"
    header = ["request_id", "ts", "user_id", "item_id", "surface", "position", "country", "model_version", "propensity"]
    lines = [",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lake = Lake(tmp_path / "lake")
    report = ingest(path, "impressions", "csv", lake, tmp_path / "q", NOW)
    assert (report.written, report.quarantined, report.reasons) == (2, 1, {"type:position": 1})
    assert lake.read("impressions").schema.equals(TABLES["impressions"])


@pytest.mark.parametrize(
    ("fmt", "content", "message"),
    [
        ("parquet", b"PAR1 this is not parquet", "cannot be read as parquet"),
        ("csv", b"a,b\n1,2\n3,4\n5,6,7\n", "cannot be read as csv at line 4"),
    ],
)
def test_a_file_that_cannot_be_parsed_is_refused_by_name_and_nothing_is_written(tmp_path, fmt, content, message):
    path = tmp_path / f"broken.{fmt}"
    path.write_bytes(content)
    with pytest.raises(IngestError, match=message) as exc:
        ingest(path, "impressions", fmt, Lake(tmp_path / "lake"), tmp_path / "q", NOW)
    assert str(path) in str(exc.value)
    assert not (tmp_path / "lake").exists()
    assert not (tmp_path / "q").exists()


def test_unknown_table_and_format_are_refused(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("{}\n")
    with pytest.raises(IngestError, match="unknown table 'clicks'"):
        ingest(path, "clicks", "jsonl", Lake(tmp_path), tmp_path / "q", NOW)
    with pytest.raises(IngestError, match="unknown format 'xml'"):
        ingest(path, "users", "xml", Lake(tmp_path), tmp_path / "q", NOW)


json_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.floats(allow_nan=False), max_size=2),
)  # fmt: skip
columns = st.sampled_from(["request_id", "ts", "user_id", "item_id", "surface", "position", "propensity", "junk"])
rows = st.one_of(
    st.dictionaries(columns, json_values, max_size=8),
    st.text(max_size=30).filter(lambda s: "\n" not in s and "\r" not in s),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(rows, min_size=1, max_size=12))
def test_malformed_input_never_crashes_and_never_loses_a_row(tmp_path_factory, batch):
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "rows.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for row in batch:
            fh.write((json.dumps(row) if isinstance(row, dict) else row) + "\n")
    non_blank = sum(1 for row in batch if not isinstance(row, str) or row.strip())
    report = ingest(path, "impressions", "jsonl", Lake(tmp / "lake"), tmp / "q", NOW)
    assert report.rows_in == non_blank
    assert report.balanced
    stored = Lake(tmp / "lake").read("impressions").num_rows
    kept = len(quarantined(tmp / "q")) if report.quarantined else 0
    assert stored + kept + report.duplicates == report.rows_in


# --- one row per key, nothing lost, nothing quarantined twice (issue 12) --------------------------------------------


def test_a_re_sent_item_with_an_earlier_time_is_a_duplicate_not_a_second_row(tmp_path, sim_logs):
    lake = Lake(tmp_path / "lake")
    load_all(lake, tmp_path / "q", sim_logs, tables=("items",))
    stored = lake.read("items")
    again = shifted(stored.slice(stored.num_rows - 3, 3), "created_at", -dt.timedelta(days=2))  # another partition
    path = tmp_path / "resent.parquet"
    pq.write_table(again, path)
    report = ingest(path, "items", "parquet", lake, tmp_path / "q", NOW)
    assert (report.written, report.duplicates) == (0, 3)
    assert lake.read("items").num_rows == stored.num_rows == len(set(lake.read("items")["item_id"].to_pylist()))


@pytest.mark.parametrize("days", [1, -1])
def test_an_impression_logged_again_on_the_next_or_previous_day_is_a_duplicate(tmp_path, sim_logs, days):
    lake = Lake(tmp_path / "lake")
    load_all(lake, tmp_path / "q", sim_logs, tables=("impressions",))
    before = lake.read("impressions").num_rows
    middle = lake.dates("impressions")[1]
    relogged = shifted(lake.read("impressions", middle, middle).slice(0, 5), "ts", dt.timedelta(days=days))
    path = tmp_path / "relogged.parquet"
    pq.write_table(relogged, path)
    report = ingest(path, "impressions", "parquet", lake, tmp_path / "q", NOW)
    assert (report.written, report.duplicates) == (0, 5)
    assert lake.read("impressions").num_rows == before


def test_invalid_utf8_in_json_lines_is_quarantined_and_the_day_stays_readable(tmp_path, sim_logs):
    rows = impression_rows(sim_logs, 4)
    lines = [json.dumps(r).encode() for r in rows]
    lines[1] = lines[1].replace(b'"surface": "', b'"surface": "home\xff\xfe')  # bytes that are not UTF-8
    lines[2] = lines[2].replace(b'"surface": "', b'"surface": "\\ud800')  # an escape that is no character
    path = tmp_path / "imps.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    lake = Lake(tmp_path / "lake")
    report = ingest(path, "impressions", "jsonl", lake, tmp_path / "q", NOW)
    assert (report.written, report.quarantined, report.balanced) == (2, 2, True)
    assert report.reasons == {"malformed:invalid_utf8": 2}
    raw = {line: text for line, _, text in quarantined(tmp_path / "q")}
    assert "home\\xff\\xfe" in raw[2] and "\\ud800" in raw[3]
    # The day is still readable, and ingesting into it again works (its stored keys are read back).
    assert lake.read("impressions").num_rows == 2
    again = ingest(path, "impressions", "jsonl", lake, tmp_path / "q", NOW)
    assert (again.written, again.duplicates) == (0, 2)


def test_invalid_utf8_in_a_parquet_file_is_quarantined(tmp_path, sim_logs):
    rows = pq.read_table(parts(sim_logs, "impressions")[0]).slice(0, 3)
    values = [s.encode() for s in rows["surface"].to_pylist()]
    values[1] = b"home\xff"
    offsets = np.cumsum([0, *map(len, values)]).astype(np.int32)
    surface = pa.Array.from_buffers(
        pa.string(), 3, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))]
    )
    path = tmp_path / "imps.parquet"
    pq.write_table(rows.set_column(rows.schema.get_field_index("surface"), "surface", surface), path)
    lake = Lake(tmp_path / "lake")
    report = ingest(path, "impressions", "parquet", lake, tmp_path / "q", NOW)
    assert (report.written, report.quarantined, report.reasons) == (2, 1, {"malformed:invalid_utf8": 1})
    assert [line for line, _, _ in quarantined(tmp_path / "q")] == [2]
    assert lake.read("impressions")["surface"].to_pylist() == [rows["surface"][0].as_py(), rows["surface"][2].as_py()]


@pytest.fixture(scope="module")
def impressions_lake(tmp_path_factory, sim_logs):
    root = tmp_path_factory.mktemp("impressions_lake")
    lake = Lake(root / "lake")
    load_all(lake, root / "q", sim_logs, tables=("impressions",))
    return lake


def engagement_of(impression: dict, after: dt.timedelta, **changes) -> dict:
    row = {k: impression[k] for k in ("user_id", "item_id", "request_id")}
    return {**row, "ts": impression["ts"] + after, "action": "click", "dwell": 3.0, **changes}


def test_an_engagements_verdict_does_not_depend_on_the_other_rows_of_its_file(tmp_path, impressions_lake):
    lake = Lake(tmp_path / "lake")
    shutil.copytree(impressions_lake.root, lake.root)
    first, second, _ = lake.dates("impressions")
    old = lake.read("impressions", first, first).slice(0, 1).to_pylist()[0]
    recent = lake.read("impressions", second, second).slice(0, 1).to_pylist()[0]
    late = engagement_of(old, dt.timedelta(days=2))  # two days after its impression: past the day looked back
    timely = engagement_of(recent, dt.timedelta(minutes=5))
    verdicts = []
    for batch in ([late], [late, timely]):
        report = ingest_table(
            pa.Table.from_pylist(batch, schema=TABLES["engagements"]), "engagements", lake, tmp_path / "q",
            source=f"batch-{len(batch)}", now=NOW,
        )  # fmt: skip
        verdicts.append((report.reasons, report.written))
    assert verdicts == [({"orphan:no_matching_impression": 1}, 0), ({"orphan:no_matching_impression": 1}, 1)]


def test_engagements_that_do_not_follow_their_impression_are_quarantined_with_a_reason(tmp_path, impressions_lake):
    lake = Lake(tmp_path / "lake")
    shutil.copytree(impressions_lake.root, lake.root)
    day = lake.dates("impressions")[1]
    shown = lake.read("impressions", day, day).slice(0, 6).to_pylist()
    minute = dt.timedelta(minutes=1)
    batch = [
        engagement_of(shown[0], minute, dwell=float("nan")),
        engagement_of(shown[1], minute, dwell=float("inf")),
        engagement_of(shown[2], -minute),  # before the impression it answers
        engagement_of(shown[3], minute, user_id=shown[3]["user_id"] + 1),  # by someone who was not shown it
        engagement_of(shown[4], minute),
        engagement_of(shown[5], dt.timedelta(0), dwell=None),  # at the impression's instant, no dwell: fine
    ]
    report = ingest_table(
        pa.Table.from_pylist(batch, schema=TABLES["engagements"]), "engagements", lake, tmp_path / "q",
        source="mixed", now=NOW,
    )  # fmt: skip
    assert report.written == 2 and report.balanced
    reasons = {line: reason for line, reason, _ in quarantined(tmp_path / "q")}
    assert reasons == {
        1: "dwell:finite",
        2: "dwell:finite",
        3: "ts:before_impression",
        4: "user_id:not_the_impressions_user",
    }


def test_re_ingesting_a_file_does_not_quarantine_its_bad_rows_again(tmp_path, sim_logs):
    rows = impression_rows(sim_logs, 4)
    rows[1]["position"] = -1
    path = tmp_path / "imps.jsonl"
    write_jsonl(path, [*rows, "not json"])
    lake = Lake(tmp_path / "lake")
    killed = tmp_path / "q" / "impressions" / "date=2026-03-31" / ".imps-0123.parquet.k1ll3d.tmp"
    for now in (NOW, NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=1)):  # another day, then the same one
        report = ingest(path, "impressions", "jsonl", lake, tmp_path / "q", now)
        assert report.quarantined == 2 and report.balanced
        assert not killed.exists()  # what a killed ingest left in quarantine goes with the next one
        killed.parent.mkdir(parents=True, exist_ok=True)
        killed.write_bytes(b"half a file")
    assert [(line, reason) for line, reason, _ in quarantined(tmp_path / "q")] == [
        (2, "position:greater_than_or_equal_to(1)"),
        (5, "malformed:not_a_json_object"),
    ]
