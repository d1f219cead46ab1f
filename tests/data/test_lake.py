"""The lake's guarantees: damage is an error naming the partition, never an empty day; a killed write is swept."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow.parquet as pq
import pytest

from homefeed.data.lake import MANIFEST, NEW, Lake
from homefeed.errors import DamagedStateError
from tests.conftest import load_lake, run_world


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("lake_logs")
    run_world(out, "random", days=3, users=600, items_per_day=150, creators=60, seed=3)
    return out


@pytest.fixture
def lake(logs, tmp_path) -> Lake:
    return load_lake(logs, tmp_path / "lake", tables=("items", "impressions"))


def test_a_lost_manifest_is_an_error_naming_the_partition_never_a_missing_day(lake):
    day = lake.dates("impressions")[1]
    rows = lake.read("impressions", day, day)
    (lake.partition("impressions", day) / MANIFEST).unlink()
    for read in (
        lambda: lake.dates("impressions"),
        lambda: lake.read("impressions"),
        lambda: lake.files("impressions"),
    ):
        with pytest.raises(DamagedStateError, match=rf"date={day}: holds data files but no {MANIFEST}"):
            read()
    # A write into that day is refused too: it would otherwise start the partition over as `part-00000`.
    with pytest.raises(DamagedStateError, match="restore it from a backup"):
        lake.append("impressions", rows.slice(0, 3), ["again"])
    assert pq.read_table(lake.partition("impressions", day) / "part-00000.parquet").equals(rows)


@pytest.mark.parametrize("content", ["{not json", '{"table": "impressions"}', "[]", ""])
def test_a_corrupt_manifest_is_an_error_naming_the_file(lake, content):
    day = lake.dates("impressions")[0]
    (lake.partition("impressions", day) / MANIFEST).write_text(content, encoding="utf-8")
    with pytest.raises(DamagedStateError, match=rf"date={day}: {MANIFEST} is corrupt"):
        lake.read("impressions")


def test_a_deleted_or_changed_part_file_is_an_error(lake):
    day = lake.dates("impressions")[0]
    files = lake.files("impressions", day, day)
    victim = files[0]
    victim.write_bytes(victim.read_bytes()[:-5] + b"XXXXX")
    with pytest.raises(DamagedStateError, match=f"{victim.name}: its bytes no longer match"):
        lake.checksums(files, verify=True)
    victim.unlink()
    with pytest.raises(DamagedStateError, match=f"{victim.name} is named in its {MANIFEST} but missing"):
        lake.read("impressions")


def test_what_a_killed_write_left_is_swept_by_the_next_write(lake, logs):
    items = lake.read("items")
    first, last = lake.dates("items")[0], lake.dates("items")[-1]
    kept = {d: lake.manifest("items", d).files for d in lake.dates("items")}
    # A write killed before its first manifest: a marked partition with a file; one killed mid-file: a temporary
    # file; one killed between file and manifest: a file no manifest names.
    new_day = last + dt.timedelta(days=30)
    fresh = lake.partition("items", new_day)
    fresh.mkdir()
    (fresh / NEW).touch()
    pq.write_table(items.slice(0, 5), fresh / "part-00000.parquet")
    old = lake.partition("items", first)
    (old / ".part-00001.parquet.abc123.tmp").write_bytes(b"half a file")
    pq.write_table(items.slice(0, 5), old / "part-00001.parquet")
    assert lake.dates("items") == sorted(kept) and lake.read("items").num_rows == items.num_rows  # never read

    lake.append("items", items.slice(0, 1), ["later"])  # the first day's partition again
    assert not fresh.exists()
    assert sorted(p.name for p in old.iterdir()) == sorted(
        [MANIFEST, *(f.name for f in lake.manifest("items", first).files)]
    )
    assert lake.read("items").num_rows == items.num_rows + 1
    for day in lake.dates("items"):
        assert lake.verify("items", day) == []


def test_a_manifest_is_written_as_json_naming_each_file_once(lake):
    day = lake.dates("impressions")[0]
    lake.append("impressions", lake.read("impressions", day, day).slice(0, 2), ["x"])
    data = json.loads((lake.partition("impressions", day) / MANIFEST).read_text(encoding="utf-8"))
    names = [f["name"] for f in data["files"]]
    assert names == ["part-00000.parquet", "part-00001.parquet"]
    assert not (lake.partition("impressions", day) / NEW).exists()


def test_a_stamp_moves_when_a_partition_from_its_date_on_is_written_and_only_then(lake):
    days = lake.dates("items")
    since = days[1]
    before = lake.stamp("items", since)
    assert [s[0] for s in before] == [f"{d:%Y-%m-%d}" for d in days[1:]]
    assert lake.stamp("items", since) == before  # nothing written: the same token
    rows = lake.read("items", days[0], days[0])
    lake.append("items", rows.slice(0, 1), ["older"])  # before `since`: not part of the token
    assert lake.stamp("items", since) == before
    lake.append("items", lake.read("items", days[-1], days[-1]).slice(0, 1), ["again"])
    assert lake.stamp("items", since) != before
    assert lake.stamp("nothing_here", since) == ()
