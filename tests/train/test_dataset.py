"""The dataset builder: labels against the raw logs, point-in-time features, sampling and weights, splits,
reproducible ids and bytes, all-or-nothing builds, and the `homefeed dataset` commands."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from homefeed.cli import main
from homefeed.config import ConfigError, EtlSettings, Paths, Settings
from homefeed.config import load as load_config
from homefeed.data.etl import DuckDBEngine, Params, run_etl, snapshot_lake
from homefeed.data.lake import Lake
from homefeed.errors import DamagedStateError
from homefeed.features.pit import join_frame
from homefeed.schema import ENGAGEMENTS, IMPRESSIONS, NEGATIVE_ACTIONS, POSITIVE_ACTIONS
from homefeed.train import DatasetError, DatasetSpec, DatasetStore, build_dataset, load_spec, validation
from homefeed.train import dataset as dataset_mod
from homefeed.train.model import TrainingData
from tests.conftest import load_lake, run_world, shifted
from tests.test_cli import assert_one_line_error

START = dt.date(2026, 3, 2)
ETL = EtlSettings(windows=[1, 7])
DAY = dt.timedelta(days=1)


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def settings_for(root: Path, datasets: str = "datasets") -> Settings:
    return Settings(paths=Paths(root=root, datasets=Path(datasets)), etl=ETL)


def copy_world(root: Path, dest: Path) -> tuple[Settings, Lake]:
    """A copy of a world's lake and ETL snapshots under ``dest`` (to change), its settings and its lake."""
    for folder in ("lake", "etl"):
        shutil.copytree(root / folder, dest / folder)
    return settings_for(dest), Lake(dest / "lake")


def spec(settings: Settings, **overrides) -> DatasetSpec:
    """The spec of [dataset] defaults over days 1-5 (train 1-3, validation 4, test 5), with ``overrides``."""
    data = {"start": day(1), "end": day(5), "feature_set": "default", **overrides}
    return DatasetSpec(**{**settings.dataset.model_dump(), **data})


def rows(built, *splits: str) -> pa.Table:
    names = splits or tuple(built.manifest["splits"])
    return pa.concat_tables([pq.read_table(built.path / f"{s}.parquet") for s in names])


def _requests_group(request_ids: pa.Array) -> np.ndarray:
    """A fixed group (0-3) per request, from its id: which logging the request had."""
    return np.array([int(hashlib.md5(r.encode()).hexdigest(), 16) % 4 for r in request_ids.to_pylist()])


def _plant(lake: Lake) -> dict[str, tuple[str, int]]:
    """Engagements at the edges of the attribution window on day-3 impressions that had none."""
    imp = lake.read("impressions", day(3), day(3))
    eng = lake.read("engagements")
    engaged = set(zip(eng["request_id"].to_pylist(), eng["item_id"].to_pylist(), strict=True))
    quiet = [
        r
        for r in imp.filter(pc.is_valid(imp["propensity"])).to_pylist()
        if (r["request_id"], r["item_id"]) not in engaged
    ][:5]
    second, window = dt.timedelta(seconds=1), dt.timedelta(hours=24)
    plans = {
        "outside": [("closeup", window + second)],  # one second too late: not a positive
        "edge": [("save", window)],  # exactly at the window's end: a positive
        "before": [("click", -second)],  # before the impression: not attributed
        "hidden": [("closeup", 10 * second), ("hide", 20 * second)],  # engaged, then hidden: negative only
        "late_hide": [("closeup", 10 * second), ("hide", window + 3600 * second)],  # the hide is too late
    }
    planted, out = [], {}
    for (name, actions), r in zip(plans.items(), quiet, strict=True):
        out[name] = (r["request_id"], r["position"])
        for action, offset in actions:
            planted.append(
                {
                    "ts": r["ts"] + offset,
                    "user_id": r["user_id"],
                    "item_id": r["item_id"],
                    "request_id": r["request_id"],
                    "action": action,
                    "dwell": None,
                }
            )
    lake.append("engagements", pa.Table.from_pylist(planted, schema=ENGAGEMENTS), ["planted"])
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict]:
    """Six days of random feeds in a lake; a quarter of requests logged as a ranker's (propensity 1), a quarter
    without propensities; planted engagements at the window's edges; ETL snapshots for every day."""
    root = tmp_path_factory.mktemp("dataset")
    run_world(root / "logs", "random", days=6, users=1_200, items_per_day=250, creators=100, seed=4)
    lake = load_lake(root / "logs", root / "lake", tables=("users", "items", "engagements"))
    imp = ds.dataset(str(root / "logs" / "impressions"), schema=IMPRESSIONS, format="parquet").to_table()
    group = _requests_group(imp["request_id"])
    propensity = imp["propensity"].to_numpy(zero_copy_only=False).copy()
    propensity[group == 0] = 1.0
    column = pa.array(propensity, pa.float64(), mask=group == 1)
    imp = imp.set_column(imp.schema.get_field_index("propensity"), "propensity", column)
    lake.append("impressions", imp, ["logs"])
    planted = _plant(lake)
    run_etl(lake, Lake(root / "etl"), Params.from_settings(ETL, day(0), day(5)), DuckDBEngine())
    return root, planted


@pytest.fixture(scope="module")
def base(world):
    """The default dataset: no sampling, every row weighing 1."""
    root, _ = world
    settings = settings_for(root)
    return build_dataset(spec(settings), settings)


# --- labels and features ---------------------------------------------------------------------------------------------


def test_labels_match_the_raw_logs_and_respect_the_window(world, base):
    root, planted = world
    lake = Lake(root / "lake")
    imp = lake.read("impressions", day(1), day(5)).select(["request_id", "position", "item_id", "ts"]).to_pandas()
    eng = lake.read("engagements").select(["request_id", "item_id", "ts", "action"]).to_pandas()
    m = imp.merge(eng, on=["request_id", "item_id"], suffixes=("", "_e"))
    delay = m["ts_e"] - m["ts"]
    inside = m[(delay >= dt.timedelta(0)) & (delay <= dt.timedelta(hours=24))]
    positive = set(map(tuple, inside[inside.action.isin(POSITIVE_ACTIONS)][["request_id", "position"]].values))
    negative = set(map(tuple, inside[inside.action.isin(NEGATIVE_ACTIONS)][["request_id", "position"]].values))

    got = rows(base).select(["request_id", "position", "engaged", "negative"]).to_pylist()
    assert len(got) == len(imp)  # no sampling: every impression of the range is a row
    keys = [(r["request_id"], r["position"]) for r in got]
    assert [r["engaged"] for r in got] == [int(k in positive and k not in negative) for k in keys]
    assert [r["negative"] for r in got] == [int(k in negative) for k in keys]
    assert sum(r["negative"] for r in got) > 20 and sum(r["engaged"] for r in got) > 500

    by_key = {(r["request_id"], r["position"]): (r["engaged"], r["negative"]) for r in got}
    assert by_key[planted["outside"]] == (0, 0)
    assert by_key[planted["edge"]] == (1, 0)
    assert by_key[planted["before"]] == (0, 0)
    assert by_key[planted["hidden"]] == (0, 1)  # a negative action is never a positive of engaged
    assert by_key[planted["late_hide"]] == (1, 0)


def test_features_are_the_point_in_time_join(world, base):
    root, _ = world
    fs = dataset_mod.resolve_feature_set(spec(settings_for(root)), settings_for(root))
    train = rows(base, "train")
    assert train.column_names[-len(fs.columns) :] == fs.columns
    with duckdb.connect() as con:
        impressions = train.select(["request_id", "ts", "user_id", "item_id", "position"])
        joined = join_frame(fs, Lake(root / "etl"), Lake(root / "lake"), impressions, con)
        want = joined.order("ts, request_id, position").to_arrow_table()
    for column in ["topic", "creator_id", *fs.columns]:
        assert train[column].equals(want[column]), column
    assert 0 < pc.mean(train["item_missing"]).as_py() < 1


def test_rows_carry_what_training_and_evaluation_need(base):
    table = rows(base, "test")
    for column in ("request_id", "ts", "user_id", "item_id", "position", "surface", "country", "model_version"):
        assert table[column].null_count == 0, column
    assert {"propensity", "topic", "creator_id", "engaged", "negative", "weight"} <= set(table.column_names)
    assert pc.all(pc.equal(table["weight"], 1.0)).as_py()
    order = table.select(["ts", "request_id", "position"]).to_pylist()
    assert order == sorted(order, key=lambda r: (r["ts"], r["request_id"], r["position"]))


# --- sampling and weights --------------------------------------------------------------------------------------------


def test_negative_down_sampling_keeps_the_rate_and_weights_restore_the_totals(world, base):
    root, _ = world
    settings = settings_for(root)
    sampled = build_dataset(spec(settings, sampling={"negative_rate": 0.3}), settings)
    full, kept = rows(base), rows(sampled)
    zero = lambda t: pc.and_(pc.equal(t["engaged"], 0), pc.equal(t["negative"], 0))  # noqa: E731
    n_zero, k_zero = pc.sum(zero(full).cast("int64")).as_py(), pc.sum(zero(kept).cast("int64")).as_py()
    assert k_zero / n_zero == pytest.approx(0.3, abs=0.02)
    assert kept.num_rows - k_zero == full.num_rows - n_zero  # every row with a positive label is kept
    assert pc.sum(kept["weight"]).as_py() == pytest.approx(full.num_rows, rel=0.03)
    for name in ("engaged", "negative"):
        weighted = sampled.manifest["stats"]["all"]["labels"][name]["weighted_rate"]
        assert weighted == pytest.approx(base.manifest["stats"]["all"]["labels"][name]["rate"], rel=0.05)
    # The choice is the row's own: a second seed keeps other rows, the same seed the same ones.
    reseeded = build_dataset(spec(settings, sampling={"negative_rate": 0.3}, seed=1), settings)
    assert not rows(reseeded)["request_id"].equals(kept["request_id"])


def test_the_per_user_cap_keeps_at_most_n_impressions_per_user_and_day(world, base):
    root, _ = world
    settings = settings_for(root)
    capped = build_dataset(spec(settings, sampling={"max_per_user_per_day": 5}), settings)
    table = rows(capped).to_pandas()
    per = table.groupby([table["user_id"], table["ts"].dt.date]).size()
    assert per.max() == 5
    full = rows(base).to_pandas()
    want = full.groupby([full["user_id"], full["ts"].dt.date]).size().clip(upper=5).sum()
    assert len(table) == want
    assert set(table["weight"]) == {1.0}  # a cap is not re-weighted: heavy users are meant to count less


def test_segment_weights_multiply(world):
    root, _ = world
    settings = settings_for(root)
    weights = {"country=BR": 2.0, "topic=humor": 3.0}
    built = build_dataset(spec(settings, sampling={"segment_weights": weights}), settings)
    t = rows(built)
    br, humor = pc.equal(t["country"], "BR").to_numpy(), pc.equal(t["topic"], "humor").to_numpy(zero_copy_only=False)
    want = np.where(br, 2.0, 1.0) * np.where(humor, 3.0, 1.0)
    np.testing.assert_array_equal(t["weight"].to_numpy(), want)
    assert br.any() and humor.any() and (br & humor).any()


def test_exploration_only_keeps_impressions_placed_at_random(world, base):
    root, _ = world
    settings = settings_for(root)
    built = build_dataset(spec(settings, sampling={"exploration_only": True}), settings)
    t = rows(built)
    p = t["propensity"]
    assert p.null_count == 0 and pc.max(p).as_py() < 1
    full = rows(base)["propensity"]
    assert t.num_rows == pc.sum(pc.less(full, 1.0).cast("int64")).as_py()
    funnel = built.manifest["splits"]["train"]["funnel"]
    assert funnel["impressions"] > funnel["in_scope"] == funnel["kept"]


def test_ips_weights_are_clipped_inverse_propensities(world):
    root, _ = world
    settings = settings_for(root)
    logged = Lake(root / "lake").read("impressions", day(1), day(5))["propensity"].to_numpy(zero_copy_only=False)
    clip = float(np.median(1.0 / logged[logged < 1]))  # the random policy's 1 / catalogue size: clip half of them
    ips = {"exploration_only": True, "ips": True, "ips_max_weight": clip}
    t = rows(build_dataset(spec(settings, sampling=ips), settings))
    inverse = 1.0 / t["propensity"].to_numpy()
    assert inverse.min() < clip < inverse.max()
    np.testing.assert_allclose(t["weight"].to_numpy(), np.minimum(inverse, clip), rtol=1e-12)


def test_ips_over_logs_without_propensities_is_a_clear_error(world):
    root, _ = world
    settings = settings_for(root)
    with pytest.raises(DatasetError, match=r"have no logged propensity: logs without propensities cannot be IPS"):
        build_dataset(spec(settings, sampling={"ips": True}), settings)


# --- splits ----------------------------------------------------------------------------------------------------------


def test_the_time_split_has_no_overlap_and_test_is_the_latest(base):
    days = {}
    for split in ("train", "validation", "test"):
        ts = rows(base, split)["ts"]
        days[split] = (pc.min(ts).as_py().date(), pc.max(ts).as_py().date())
    assert days == {"train": (day(1), day(3)), "validation": (day(4), day(4)), "test": (day(5), day(5))}
    info = base.manifest["splits"]
    assert [info[s]["first_day"] for s in ("train", "validation", "test")] == [str(day(i)) for i in (1, 4, 5)]


def test_explicit_split_days_and_too_short_ranges(world):
    root, _ = world
    settings = settings_for(root)
    s = spec(settings, split={"validation_start": day(3), "test_start": day(5)})
    want = {"train": (day(1), day(2)), "validation": (day(3), day(4)), "test": (day(5), day(5))}
    assert dataset_mod.split_days(s) == want
    with pytest.raises(ValueError, match="not enough for validation"):
        spec(settings, start=day(4), end=day(5))
    only_train = spec(settings, split={"validation_days": 0, "test_days": 0})
    assert dataset_mod.split_days(only_train) == {"train": (day(1), day(5))}


# --- versioned snapshots ---------------------------------------------------------------------------------------------


def _bytes(built) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(built.path.glob("*.parquet"))}


def test_same_spec_and_inputs_give_the_same_id_and_bytes_anywhere(world, base, tmp_path, monkeypatch):
    root, _ = world
    elsewhere = tmp_path / "copy"
    copy_world(root, elsewhere)
    again = build_dataset(spec(settings_for(elsewhere)), settings_for(elsewhere))
    assert not again.reused and again.id == base.id
    assert _bytes(again) == _bytes(base)
    assert build_dataset(spec(settings_for(root)), settings_for(root)).reused  # an id that exists is not rebuilt
    connect = duckdb.connect

    def one_thread(*args, **kwargs):
        con = connect(*args, **kwargs)
        con.execute("SET threads = 1")
        return con

    monkeypatch.setattr(dataset_mod.duckdb, "connect", one_thread)  # the bytes do not depend on parallelism
    forced = build_dataset(spec(settings_for(elsewhere)), settings_for(elsewhere), force=True)
    assert not forced.reused and _bytes(forced) == _bytes(base)
    monkeypatch.undo()

    # A new file in the lake is a new input: a new id.
    late = Lake(root / "lake").read("engagements", day(3), day(3)).slice(0, 1)  # a duplicate row, but a new file
    Lake(elsewhere / "lake").append("engagements", late, ["late"])
    changed = build_dataset(spec(settings_for(elsewhere)), settings_for(elsewhere))
    assert changed.id != base.id
    assert set(changed.manifest["inputs"]) - set(base.manifest["inputs"])


def test_an_interrupted_build_leaves_no_dataset(world, monkeypatch, tmp_path):
    root, _ = world
    settings = settings_for(root, datasets=str(tmp_path / "ds"))

    def crash(*args, **kwargs):
        raise RuntimeError("killed while checking the written files")

    monkeypatch.setattr(validation, "statistics", crash)
    with pytest.raises(RuntimeError, match="killed"):
        build_dataset(spec(settings), settings)
    store = DatasetStore(tmp_path / "ds")
    assert store.ids() == []
    assert [p.name for p in (tmp_path / "ds").iterdir()] == [".locks"]  # no staging folder left behind either


def test_what_a_killed_build_left_is_removed_or_restored_by_the_next_build(world, base, tmp_path):
    """``kill -9`` skips every ``finally``: the staging and spill folders stay, and a dataset being replaced
    (``--force``) may sit aside under ``.<id>.old``; the next build, holding the store's lock, cleans up."""
    root, _ = world
    settings = settings_for(root, datasets=str(tmp_path / "ds"))
    store = tmp_path / "ds"
    shutil.copytree(base.path, store / f".{base.id}.old")  # killed between moving the old one aside and renaming
    (store / f".{base.id}.k1ll3d.tmp").mkdir()
    (store / f".{base.id}.k1ll3d.tmp" / "train.parquet").write_bytes(b"half")
    (store / ".spill-k1ll3d").mkdir()
    other = build_dataset(spec(settings, seed=9), settings)
    assert sorted(p.name for p in store.iterdir()) == sorted([".locks", base.id, other.id])
    assert DatasetStore(store).load(base.id)["splits"] == base.manifest["splits"]  # the old one is back, whole
    assert _bytes(build_dataset(spec(settings), settings)) == _bytes(base)


def test_an_item_stored_twice_makes_the_build_refuse_a_join_that_multiplies_rows(world, tmp_path):
    """An item re-sent with another time once landed in a second partition and doubled its impressions."""
    settings, lake = copy_world(world[0], tmp_path)
    shown = lake.read("impressions", day(2), day(2))["item_id"][0].as_py()
    items = lake.read("items")
    resent = shifted(items.filter(pc.equal(items["item_id"], shown)), "created_at", -DAY)
    lake.append("items", resent, ["resent"])  # what ingestion now refuses; a lake written before may hold it
    run_etl(lake, snapshot_lake(tmp_path / "etl"), Params.from_settings(ETL, day(0), day(5)), DuckDBEngine())
    with pytest.raises(DamagedStateError, match=rf"feature_items holds more than one row for item_id={shown}"):
        build_dataset(spec(settings), settings)
    assert DatasetStore(tmp_path / "datasets").ids() == []


def test_an_impression_stored_twice_makes_the_build_refuse(world, tmp_path):
    settings, lake = copy_world(world[0], tmp_path)
    again = shifted(lake.read("impressions", day(2), day(2)).slice(0, 3), "ts", 2 * DAY)
    lake.append("impressions", again, ["relogged days later"])
    with pytest.raises(
        DamagedStateError,
        match=r"the lake holds 3 impression key\(s\) more than once .* 2 times, in "
        r"date=2026-03-04/part-00000.parquet, date=2026-03-06/part-00001.parquet",
    ):
        build_dataset(spec(settings), settings)


def test_values_outside_the_definitions_are_reported(world, tmp_path):
    root, _ = world
    copy = tmp_path / "broken"
    for folder in ("lake", "etl"):
        shutil.copytree(root / folder, copy / folder)
    etl = Lake(copy / "etl")
    snapshot = etl.read("item_stats", day(2), day(2))
    rates = pc.multiply(snapshot["save_rate_1d"], -1.0)  # a sign error in a job
    snapshot = snapshot.set_column(snapshot.schema.get_field_index("save_rate_1d"), "save_rate_1d", rates)
    etl.commit("item_stats", day(2), etl.stage("item_stats", day(2), snapshot, ["broken"]))
    built = build_dataset(spec(settings_for(copy)), settings_for(copy))
    found = {(v["split"], v["column"], v["rule"]) for v in built.manifest["violations"]}
    assert ("train", "item_save_rate_1d", "below_min") in found
    assert all(v["column"] == "item_save_rate_1d" for v in built.manifest["violations"])
    stats = built.manifest["stats"]["train"]["features"]["item_save_rate_1d"]
    assert stats["below"] > 0 and stats["min"] < 0


def test_a_build_over_a_damaged_dataset_of_its_id_rebuilds_it(world, base, tmp_path):
    """Its inputs are all still there and verified, so the next build repairs a swapped split and says so."""
    root, _ = world
    settings = settings_for(root, datasets=str(tmp_path / "ds"))
    shutil.copytree(base.path, tmp_path / "ds" / base.id)
    shutil.copy(base.path / "validation.parquet", tmp_path / "ds" / base.id / "test.parquet")
    with pytest.raises(DamagedStateError, match=r"test\.parquet: its bytes do not match"):
        TrainingData.load(DatasetStore(tmp_path / "ds"), base.id)
    rebuilt = build_dataset(spec(settings), settings)
    assert rebuilt.id == base.id and not rebuilt.reused
    assert any(w.startswith("rebuilt: the dataset of this id was damaged") for w in rebuilt.manifest["warnings"])
    assert _bytes(rebuilt) == _bytes(base)
    assert (
        TrainingData.load(DatasetStore(tmp_path / "ds"), base.id)
        .splits["test"]
        .equals(pq.read_table(base.path / "test.parquet"))
    )
    assert build_dataset(spec(settings), settings).reused  # intact now: the next build is a no-op again


# --- the command line ------------------------------------------------------------------------------------------------


@pytest.fixture
def project(world, tmp_path, monkeypatch):
    """A project file over the module's lake and ETL, with its own datasets folder."""
    root, _ = world
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "homefeed.toml"
    paths = f'[paths]\nroot = "{root.as_posix()}"\ndatasets = "{(tmp_path / "ds").as_posix()}"\n'
    config.write_text(f"{paths}\n[etl]\nwindows = [1, 7]\n", encoding="utf-8")
    return config


def test_build_list_show_and_diff_on_the_command_line(project, tmp_path, capsys):
    spec_file = tmp_path / "dataset.toml"
    spec_file.write_text(f"start = {day(1)}\nend = {day(5)}\n\n[sampling]\nnegative_rate = 0.5\n", encoding="utf-8")
    assert main(["dataset", "build", "--spec", str(spec_file), "-c", str(project)]) == 0
    out = capsys.readouterr()
    assert "written to" in out.out and "labels may be incomplete" in out.err
    assert main(["dataset", "build", "--start", str(day(1)), "--end", str(day(5)), "-c", str(project)]) == 0
    first = DatasetStore(tmp_path / "ds").ids()
    assert len(first) == 2
    capsys.readouterr()
    assert main(["dataset", "build", "--spec", str(spec_file), "-c", str(project)]) == 0
    assert "already built" in capsys.readouterr().out

    assert main(["dataset", "list", "-c", str(project)]) == 0
    listing = capsys.readouterr().out
    assert all(i in listing for i in first)

    a, b = sorted(first, key=lambda i: DatasetStore(tmp_path / "ds").load(i)["spec"]["sampling"]["negative_rate"])
    assert main(["dataset", "show", a[:6], "-c", str(project)]) == 0
    shown = capsys.readouterr().out
    assert a in shown and "item_save_rate_7d" in shown and "negative_rate = 0.5" in shown

    assert main(["dataset", "diff", a, b, "-c", str(project)]) == 0
    second = capsys.readouterr().out
    assert "sampling.negative_rate" in second and "0.5" in second and "1.0" in second
    assert "rows and label rates" in second


@pytest.mark.parametrize(
    ("args", "spec_text", "expected"),
    [
        ([], 'start = 2026-03-03\nend = 2026-03-07\nlabels = ["engaged", "liked"]\n', ("labels", "'liked'")),
        ([], "start = 2026-03-07\nend = 2026-03-03\n", ("end", "before start", "empty")),
        (["--start", "2026-04-01", "--end", "2026-04-05"], "", ("no impressions in the lake from 2026-04-01",)),
        ([], 'start = 2026-03-03\nend = 2026-03-07\nfeature_set = "tiny"\n', ("unknown feature set 'tiny'",)),
        ([], "start = 2026-03-03\n", ("end: required", "--end")),
        ([], "start = 2026-03-03\nend = 2026-03-07\n[sampling]\nips = true\n", ("no logged propensity",)),
        ([], "start = 2026-03-03\nend = 2026-03-07\n[sampling]\nnegative_rate = 0\n", ("sampling.negative_rate",)),
    ],
)
def test_bad_dataset_specs_are_one_line_errors(project, tmp_path, capsys, args, spec_text, expected):
    spec_file = tmp_path / "dataset.toml"
    spec_file.write_text(spec_text, encoding="utf-8")
    assert main(["dataset", "build", "--spec", str(spec_file), *args, "-c", str(project)]) == 2
    assert_one_line_error(capsys.readouterr().err, *expected)
    assert DatasetStore(tmp_path / "ds").ids() == []


def test_missing_tables_and_unknown_ids_are_one_line_errors(project, tmp_path, capsys):
    empty = tmp_path / "empty.toml"
    empty.write_text(f'[paths]\nroot = "{(tmp_path / "nothing").as_posix()}"\n', encoding="utf-8")
    assert main(["dataset", "build", "--start", str(day(1)), "--end", str(day(5)), "-c", str(empty)]) == 2
    assert_one_line_error(capsys.readouterr().err, "no impressions in the lake", "ingest impressions first")
    no_etl = tmp_path / "no-etl.toml"
    no_etl.write_text(project.read_text().replace("[paths]\n", f'[paths]\netl = "{tmp_path / "etl"}"\n'))
    assert main(["dataset", "build", "--start", str(day(1)), "--end", str(day(5)), "-c", str(no_etl)]) == 2
    assert_one_line_error(
        capsys.readouterr().err, "no user_profile snapshots from 2026-02-28 to 2026-03-06", "homefeed data etl"
    )
    assert main(["dataset", "show", "feedfacecafe", "-c", str(project)]) == 2
    assert_one_line_error(capsys.readouterr().err, "unknown dataset 'feedfacecafe'")
    assert main(["dataset", "build", "--spec", str(tmp_path / "nope.toml"), "-c", str(project)]) == 2
    assert_one_line_error(capsys.readouterr().err, "nope.toml", "no such dataset file")


def test_damaged_datasets_are_one_line_errors_with_exit_code_3(project, tmp_path, capsys):
    assert main(["dataset", "build", "--start", str(day(1)), "--end", str(day(5)), "-c", str(project)]) == 0
    did = DatasetStore(tmp_path / "ds").ids()[0]
    folder = tmp_path / "ds" / did
    (folder / "train.parquet").rename(tmp_path / "train.parquet")
    capsys.readouterr()
    assert main(["train", "--model", "gbdt", "--dataset", did, "-c", str(project)]) == 3
    assert_one_line_error(capsys.readouterr().err, f"{did}/train.parquet", "missing", "homefeed dataset build")
    (tmp_path / "train.parquet").rename(folder / "train.parquet")
    (folder / "manifest.json").write_text('{"id": "' + did + '", "spec": ')
    for argv in (["dataset", "show", did], ["dataset", "list"], ["train", "--model", "nn", "--dataset", did]):
        assert main([*argv, "-c", str(project)]) == 3
        assert_one_line_error(capsys.readouterr().err, f"{did}/manifest.json", "not a readable manifest")


def test_the_spec_file_overrides_the_project_defaults(world, tmp_path):
    root, _ = world
    defaults = {"seed": 9, "sampling": {"negative_rate": 0.5}}
    settings = Settings.model_validate({"paths": {"root": root}, "etl": {"windows": [1, 7]}, "dataset": defaults})
    path = tmp_path / "d.toml"
    path.write_text(f"start = {day(1)}\nend = {day(5)}\n[sampling]\nmax_per_user_per_day = 7\n", encoding="utf-8")
    s = load_spec(settings, path, end=day(4))
    assert (s.seed, s.sampling.negative_rate, s.sampling.max_per_user_per_day, s.end) == (9, 0.5, 7, day(4))
    assert s.feature_set == "default" and s.labels == ["engaged", "negative"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[dataset]\nlabels = ["engaged", "liked"]\n', "dataset: labels: unknown label(s) 'liked'"),
        ('[dataset.sampling.segment_weights]\n"BR" = 2.0\n', "dataset.sampling: segment_weights: 'BR' is not"),
        ("[dataset.sampling]\nips_max_weight = 0.5\n", "dataset.sampling.ips_max_weight"),
        ("[dataset.split]\ntest_days = -1\n", "dataset.split.test_days"),
    ],
)
def test_bad_dataset_defaults_in_the_project_file_name_the_key(tmp_path, section, message):
    path = tmp_path / "homefeed.toml"
    path.write_text(section, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}")
