"""ETL on DuckDB: daily snapshots that match the raw logs, depend on the past only, and re-run safely."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from homefeed.data.etl import DuckDBEngine, EtlError, Params, outputs, run_etl, snapshot_lake
from homefeed.data.etl.engines import SPILL
from homefeed.data.etl.run import STAGING_PREFIX
from homefeed.data.lake import MANIFEST, NEW, Lake
from homefeed.errors import DamagedStateError
from homefeed.sim import Simulation
from tests.conftest import assert_same_table, load_lake, run_world

START = dt.date(2026, 3, 2)
WINDOWS = (1, 3, 7)


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def params(first: int, last: int) -> Params:
    return Params(start=day(first), end=day(last), windows=WINDOWS, half_life_days=3.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Simulation, Lake]:
    root = tmp_path_factory.mktemp("etl")
    sim = run_world(root / "logs", "random", days=9, users=1_500, items_per_day=300, creators=150, seed=5)
    return sim, load_lake(root / "logs", root / "lake")


@pytest.fixture(scope="module")
def backfill(world, tmp_path_factory) -> Lake:
    """Snapshots of days 2..8 computed in one run."""
    features = Lake(tmp_path_factory.mktemp("features"))
    report = run_etl(world[1], features, params(2, 8), DuckDBEngine())
    assert report.computed == [day(i) for i in range(2, 9)]
    return features


@pytest.fixture
def engine():
    e = DuckDBEngine()
    yield e
    e.close()


def raw(con, lake: Lake, table: str) -> None:
    con.register(f"{table}_raw", lake.read(table))


def test_item_counts_match_the_raw_logs_for_every_window(world, backfill, con):
    _, lake = world
    raw(con, lake, "impressions")
    raw(con, lake, "engagements")
    con.execute("SET TimeZone = 'UTC'")
    snapshot = day(6)
    stats = backfill.read("item_stats", snapshot, snapshot)
    assert stats.num_rows > 0
    for w in WINDOWS:
        first = snapshot - dt.timedelta(days=w - 1)
        expected = dict(
            con.execute(
                "select item_id, count(*) from impressions_raw where ts::date between ? and ? group by item_id",
                [first, snapshot],
            ).fetchall()
        )
        saves = dict(
            con.execute(
                "select item_id, count(*) from engagements_raw where action = 'save' and ts::date between ? and ? "
                "group by item_id",
                [first, snapshot],
            ).fetchall()
        )
        got = dict(zip(stats["item_id"].to_pylist(), stats[f"impressions_{w}d"].to_pylist(), strict=True))
        got_saves = dict(zip(stats["item_id"].to_pylist(), stats[f"save_{w}d"].to_pylist(), strict=True))
        assert {k: v for k, v in got.items() if v} == expected
        assert {k: v for k, v in got_saves.items() if v} == saves


def test_user_profile_counts_requests_active_days_and_negatives(world, backfill, con):
    _, lake = world
    raw(con, lake, "impressions")
    raw(con, lake, "engagements")
    con.execute("SET TimeZone = 'UTC'")
    snapshot = day(8)
    first = snapshot - dt.timedelta(days=6)
    profile = backfill.read("user_profile", snapshot, snapshot)
    expected = {
        u: (r, a)
        for u, r, a in con.execute(
            "select user_id, count(distinct request_id), count(distinct ts::date) from impressions_raw "
            "where ts::date between ? and ? group by user_id",
            [first, snapshot],
        ).fetchall()
    }
    negatives = dict(
        con.execute(
            "select user_id, count(*) from engagements_raw where action in ('hide', 'report') "
            "and ts::date between ? and ? group by user_id",
            [first, snapshot],
        ).fetchall()
    )
    rows = profile.to_pylist()
    assert {r["user_id"]: (r["requests_7d"], r["active_days_7d"]) for r in rows if r["requests_7d"]} == expected
    assert {r["user_id"]: r["negatives_7d"] for r in rows if r["negatives_7d"]} == negatives
    assert min(r["tenure_days"] for r in rows) >= 1  # nobody is counted before they signed up


def test_every_row_is_valid_from_the_midnight_after_its_snapshot_day(backfill):
    for name in outputs(params(2, 8)):
        for i in (2, 8):
            rows = backfill.read(name, day(i), day(i))
            assert rows.num_rows > 0, name
            valid = set(rows["valid_from"].to_pylist())
            assert valid == {dt.datetime.combine(day(i + 1), dt.time(), dt.UTC)}, name


def test_a_count_falls_back_to_zero_then_the_row_leaves_after_the_longest_window(world, backfill):
    """An item last shown or engaged with on day 1: zeros in its short windows later, no row after 7 days."""
    _, lake = world
    shown = lake.read("impressions")
    last_seen = {}
    for item, ts in zip(shown["item_id"].to_pylist(), shown["ts"].to_pylist(), strict=True):
        last_seen[item] = max(last_seen.get(item, ts), ts)
    for item, ts in zip(*(lake.read("engagements")[c].to_pylist() for c in ("item_id", "ts")), strict=True):
        last_seen[item] = max(last_seen.get(item, ts), ts)  # a next-day save keeps an item in the windows too
    gone = [i for i, ts in last_seen.items() if ts.date() == day(1)]
    assert gone, "the random policy retires some items early"
    later = backfill.read("item_stats", day(4), day(4))
    row = later.filter(pc.is_in(later["item_id"], pa.array(gone)))
    assert row.num_rows > 0
    assert pc.max(row["impressions_1d"]).as_py() == 0 and pc.max(row["impressions_3d"]).as_py() == 0
    assert pc.min(row["impressions_7d"]).as_py() > 0
    expired = backfill.read("item_stats", day(8), day(8))
    assert not pc.any(pc.is_in(expired["item_id"], pa.array(gone))).as_py()


def test_rates_are_smoothed_towards_the_global_rate(backfill):
    stats = backfill.read("item_stats", day(8), day(8))
    exposure = stats["exposure_7d"].to_numpy()
    rate = stats["save_rate_7d"].to_numpy()
    raw_rate = stats["save_7d"].to_numpy() / np.maximum(exposure, 1e-9)
    prior = stats["save_7d"].to_numpy().sum() / exposure.sum()
    # Shrinkage: every smoothed rate lies between the item's own rate and the prior.
    assert np.all(rate <= np.maximum(raw_rate, prior) + 1e-12)
    assert np.all(rate >= np.minimum(raw_rate, prior) - 1e-12)
    assert np.all((rate >= 0) & (rate <= 1))
    # A next-day save can land in a window its impression has left: only items with no exposure and no
    # engagement at all have nothing but the prior.
    never_shown = (exposure == 0) & (stats["save_7d"].to_numpy() == 0) & (stats["closeup_7d"].to_numpy() == 0)
    assert never_shown.any(), "items created that day and not yet shown have a row with zero exposure"
    assert np.allclose(rate[never_shown], rate[never_shown][0])


def test_position_curve_recovers_the_simulated_bias_from_random_logs(world, backfill):
    sim, lake = world
    curve = backfill.read("position_curve", day(8), day(8))
    home = curve.filter(pc.and_(pc.equal(curve["surface"], "home"), pc.less_equal(curve["position"], 6)))
    home = home.sort_by("position")
    assert home["position"].to_pylist() == [1, 2, 3, 4, 5, 6]  # one curve per surface, the slots in order
    truth = sim.settings.position_bias.examination(np.arange(1, 7))
    # The tolerance is the estimate's own noise: three standard errors of a ratio of two closeup counts over the
    # curve's window (a small world sees ~100 closeups per slot, so ~10% noise), plus the shrinkage towards 1.
    imp = lake.read("impressions", day(8) - dt.timedelta(days=6), day(8))
    imp = imp.filter(pc.equal(imp["surface"], "home"))
    eng = lake.read("engagements")
    opened = {
        (r, i)
        for r, i, a in zip(*(eng[c].to_pylist() for c in ("request_id", "item_id", "action")), strict=True)
        if a == "closeup"
    }
    closeups = np.zeros(6)
    for r, i, slot in zip(*(imp[c].to_pylist() for c in ("request_id", "item_id", "position")), strict=True):
        if slot <= 6 and (r, i) in opened:
            closeups[slot - 1] += 1
    se = (truth / truth[0]) * np.sqrt(1 / closeups + 1 / closeups[0])
    error = np.abs(home["examination"].to_numpy() - truth / truth[0])
    assert np.all(error <= 3 * se + 0.03), (home["examination"].to_numpy(), truth / truth[0], se)
    assert np.all(np.diff(home["examination"].to_numpy()) < 0)  # examination falls slot by slot


def test_decayed_affinity_weights_each_engagement_by_its_age(world, backfill):
    _, lake = world
    eng = lake.read("engagements")
    items = lake.read("items")
    topic = dict(zip(items["item_id"].to_pylist(), items["topic"].to_pylist(), strict=True))
    snapshot = day(8)
    expected: dict[tuple[int, str], float] = {}
    columns = (eng[c].to_pylist() for c in ("user_id", "item_id", "action", "ts"))
    for user, item, action, ts in zip(*columns, strict=True):
        age = (snapshot - ts.date()).days
        if action == "save" and 0 <= age < 7:
            key = (user, topic[item])
            expected[key] = expected.get(key, 0.0) + 0.5 ** (age / 3.0)
    pairs = backfill.read("user_topic", snapshot, snapshot)
    got = {
        (u, t): s
        for u, t, s in zip(*(pairs[c].to_pylist() for c in ("user_id", "topic", "saves_decayed")), strict=True)
        if s > 0
    }
    assert got.keys() == expected.keys()
    # Sums are kept exact to 1e-9 so that every run and both engines give the same bits.
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=0, atol=1e-9)
    shares = pairs.group_by(["user_id"]).aggregate([("positive_share", "sum")])["positive_share_sum"].to_numpy()
    np.testing.assert_allclose(shares[~np.isnan(shares)], 1.0)


def test_day_by_day_runs_equal_the_backfill(world, backfill, tmp_path, engine):
    """A snapshot depends on the past only: computing days one at a time gives the backfill's rows.

    Day 8's window starts after the lake's first day, and the slot curve of that first window day needs the
    days before it: a run of day 8 alone must read them too.
    """
    features = Lake(tmp_path / "daily")
    for i in (5, 6, 8):
        run_etl(world[1], features, params(i, i), engine)
    for name in outputs(params(5, 6)):
        for i in (5, 6, 8):
            assert_same_table(backfill.read(name, day(i), day(i)), features.read(name, day(i), day(i)), name, 1e-9)


def test_rerun_skips_up_to_date_days_and_a_late_partition_recomputes_its_windows(world, tmp_path, engine):
    _, source = world
    lake = Lake(tmp_path / "lake")
    shutil.copytree(source.root, lake.root)
    features = Lake(tmp_path / "features")
    first = run_etl(lake, features, params(2, 8), engine)
    assert first.computed and not first.up_to_date
    again = run_etl(lake, features, params(2, 8), engine)
    assert again.computed == [] and again.up_to_date == [day(i) for i in range(2, 9)]

    # A late file lands in day 4's impressions: days 4..8 (whose 7-day windows hold day 4) are recomputed.
    late = lake.read("impressions", day(4), day(4)).slice(0, 10)
    late = late.set_column(0, "request_id", pc.binary_join_element_wise(late["request_id"], "-late", ""))
    lake.append("impressions", late, ["late.parquet"])
    before = features.read("item_stats", day(4), day(4))
    third = run_etl(lake, features, params(2, 8), engine)
    assert third.computed == [day(i) for i in range(4, 9)]
    after = features.read("item_stats", day(4), day(4))
    assert pc.sum(after["impressions_1d"]).as_py() == pc.sum(before["impressions_1d"]).as_py() + 10
    manifest = features.manifest("item_stats", day(4))
    assert any("late" not in s and "impressions/date=2026-03-06" in s for s in manifest.files[0].sources)
    assert len(manifest.files) == 1 and features.verify("item_stats", day(4)) == []


class _FailingEngine(DuckDBEngine):
    """Fails while giving the third output's rows, as a crash midway through a run would."""

    def __init__(self) -> None:
        super().__init__()
        self.exported = 0

    def days(self, sql: str, days: list[int], keys: tuple[str, ...], directory: Path) -> Iterator[tuple[int, pa.Table]]:
        self.exported += 1
        if self.exported == 3:
            raise RuntimeError("disk full")
        yield from super().days(sql, days, keys, directory)


def test_a_failed_run_leaves_the_previous_snapshots_readable(world, tmp_path, engine):
    _, lake = world
    features = Lake(tmp_path / "features")
    run_etl(lake, features, params(6, 6), engine)
    before = {name: features.read(name, day(6), day(6)) for name in outputs(params(6, 6))}
    with pytest.raises(RuntimeError, match="disk full"):
        run_etl(lake, features, params(6, 6), _FailingEngine(), force=True)
    for name, table in before.items():
        assert features.read(name, day(6), day(6)).equals(table), name
        assert features.verify(name, day(6)) == []
    assert not list(features.root.glob(".etl-*")), "the staging folder is removed"


def test_bad_ranges_and_missing_data_are_clear_errors(world, tmp_path, engine):
    with pytest.raises(EtlError, match="before start"):
        run_etl(world[1], Lake(tmp_path / "f"), params(5, 3), engine)
    with pytest.raises(EtlError, match="no impressions or engagements"):
        run_etl(world[1], Lake(tmp_path / "f"), Params(start=dt.date(2025, 1, 1), end=dt.date(2025, 1, 2)), engine)


# --- damaged inputs, damaged outputs, careless ranges, a killed run (issue 12) ------------------------------------


@pytest.fixture
def own_lake(world, tmp_path) -> Lake:
    """A copy of the world's lake a test may damage."""
    lake = Lake(tmp_path / "lake")
    shutil.copytree(world[1].root, lake.root)
    return lake


def test_a_deleted_lake_manifest_is_an_error_not_a_day_of_zeros(own_lake, tmp_path, engine):
    (own_lake.partition("impressions", day(4)) / MANIFEST).unlink()
    features = snapshot_lake(tmp_path / "features")
    with pytest.raises(DamagedStateError, match=r"impressions/date=2026-03-06: holds data files but no _manifest"):
        run_etl(own_lake, features, params(4, 5), engine)
    assert not features.dates("item_stats")


@pytest.mark.parametrize("force", [False, True])
def test_the_etl_verifies_the_bytes_it_reads(own_lake, tmp_path, engine, force):
    features = snapshot_lake(tmp_path / "features")
    run_etl(own_lake, features, params(5, 5), engine)
    before = features.read("item_stats", day(5), day(5))
    victim = own_lake.files("engagements", day(5), day(5))[0]
    pq.write_table(pq.read_table(victim).slice(0, 10), victim)  # the same file name, other bytes
    with pytest.raises(DamagedStateError, match=rf"{victim.name}: its bytes no longer match"):
        run_etl(own_lake, features, params(5, 6), engine, force=force)
    assert features.read("item_stats", day(5), day(5)).equals(before)


@pytest.mark.parametrize(("first", "last"), [(-400, 8), (2, 4_000), (-1, 2)])
def test_a_range_beyond_the_lakes_events_is_refused_and_nothing_is_written(world, tmp_path, engine, first, last):
    features = snapshot_lake(tmp_path / "features")
    with pytest.raises(
        EtlError, match=r"reaches beyond the lake's events .* choose days from 2026-03-02 to 2026-03-10"
    ):
        run_etl(world[1], features, params(first, last), engine)
    assert not (features.root / "item_stats").exists()


@pytest.mark.parametrize("damage", ["corrupt", "lost"])
def test_a_damaged_snapshot_is_an_error_for_readers_and_the_etl_recomputes_it(world, tmp_path, engine, damage):
    features = snapshot_lake(tmp_path / "features")
    run_etl(world[1], features, params(5, 6), engine)
    expected = features.read("user_profile", day(5), day(5))
    manifest = features.partition("user_profile", day(5)) / MANIFEST
    if damage == "corrupt":
        manifest.write_text('{"files": [', encoding="utf-8")
    else:
        manifest.unlink()
    with pytest.raises(DamagedStateError, match=r"run `homefeed data etl --start 2026-03-07 --end 2026-03-07`"):
        features.read("user_profile", day(5), day(5))
    report = run_etl(world[1], features, params(5, 6), engine)
    assert report.computed == [day(5)] and report.up_to_date == [day(6)]
    assert_same_table(features.read("user_profile", day(5), day(5)), expected, "user_profile")
    assert features.verify("user_profile", day(5)) == []
    assert len(list(features.partition("user_profile", day(5)).glob("part-*.parquet"))) == 1


def test_what_a_killed_run_left_is_removed_by_the_next_run(world, tmp_path, engine):
    features = snapshot_lake(tmp_path / "features")
    run_etl(world[1], features, params(5, 5), engine)
    # A run killed while computing: its staging folder and spill file, a staged file no manifest names yet,
    # and a first snapshot of a day that never committed.
    (features.root / f"{STAGING_PREFIX}killed" / "item_stats").mkdir(parents=True)
    (features.root / SPILL).mkdir()
    (features.root / SPILL / "duckdb_temp_storage-0.tmp").write_bytes(b"spilled")
    staged = features.partition("item_stats", day(5)) / "part-20260101T000000000000.parquet"
    staged.write_bytes(b"half")
    uncommitted = features.partition("item_stats", day(7))
    uncommitted.mkdir()
    (uncommitted / NEW).touch()
    (uncommitted / "part-20260101T000000000001.parquet").write_bytes(b"half")
    report = run_etl(world[1], features, params(5, 5), engine)
    assert report.up_to_date == [day(5)]
    assert not list(features.root.glob(f"{STAGING_PREFIX}*")) and not list((features.root / SPILL).iterdir())
    assert not staged.exists() and not uncommitted.exists()
    assert features.dates("item_stats") == [day(5)] and features.verify("item_stats", day(5)) == []
