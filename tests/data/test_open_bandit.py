"""The Open Bandit Dataset adapter, on the sample bundled with the package: what OPE reads must survive exactly."""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from homefeed.cli import main
from homefeed.data.ingest import IngestError
from homefeed.data.lake import UNKNOWN_TIME, Lake
from homefeed.data.open_bandit import (
    CAMPAIGNS,
    USER_FEATURES,
    bandit_feedback,
    find_campaigns,
    ingest_open_bandit,
    obd_item_ids,
)
from homefeed.datasets import OPEN_BANDIT_ROOT
from homefeed.schema import TABLES, check_values, conform

NOW = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def obd() -> Path:
    """The bundled sample (gzip-compressed CSV); its absence is a failure, never a skip."""
    assert (OPEN_BANDIT_ROOT / "random").is_dir(), f"the bundled Open Bandit sample is missing at {OPEN_BANDIT_ROOT}"
    return OPEN_BANDIT_ROOT


@functools.cache
def csv(obd: Path, campaign: str) -> pd.DataFrame:
    """A campaign log as OBD's own tools read it (pandas, the unnamed index as the row index).  Read-only."""
    frame = pd.read_csv(obd / "random" / campaign / f"{campaign}.csv.gz", index_col=0)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


@pytest.fixture(scope="module")
def ingested(obd, tmp_path_factory):
    root = tmp_path_factory.mktemp("obd")
    lake = Lake(root / "lake")
    reports = ingest_open_bandit(obd, lake, root / "quarantine", NOW)
    return lake, reports, root / "quarantine"


@functools.cache
def impressions_of(lake: Lake, campaign: str) -> pd.DataFrame:
    """A campaign's impressions in the lake, indexed by OBD row; ``served_features`` as a (rows, keys) matrix."""
    rows = lake.read("impressions")
    rows = rows.filter(pc.equal(rows["surface"], campaign))
    frame = rows.drop_columns(["served_features"]).to_pandas()
    served = rows["served_features"].combine_chunks()
    width = np.unique(np.diff(served.offsets.to_numpy()))
    assert len(width) == 1  # the same number of features in every row
    frame["served"] = list(served.items.to_numpy().reshape(len(frame), -1))
    frame["served_keys"] = list(np.array(served.keys.to_pylist(), dtype=object).reshape(len(frame), -1))
    frame["row"] = frame["request_id"].str.rsplit("-", n=1).str[1].astype(int)
    return frame.set_index("row").sort_index()


# --- the bundled sample, whole ----------------------------------------------------------------------------------------


def test_every_row_is_one_impression_and_every_click_one_engagement(obd, ingested):
    lake, reports, quarantine = ingested
    assert [c.campaign for c in find_campaigns(obd)] == sorted(CAMPAIGNS)
    assert all(r.balanced and r.quarantined == 0 for r in reports)
    assert not quarantine.exists()
    engagements = lake.read("engagements").to_pandas()
    for campaign in CAMPAIGNS:
        raw = csv(obd, campaign)
        impressions = impressions_of(lake, campaign)
        assert len(impressions) == len(raw) == 10_000
        assert impressions.index.equals(raw.index)  # one impression per OBD row, keyed by OBD's row index
        clicks = engagements[engagements["request_id"].str.startswith(f"obd-random-{campaign}-")]
        assert len(clicks) == raw["click"].sum() > 0
        assert (clicks["action"] == "click").all() and clicks["dwell"].isna().all()
        clicked = impressions.loc[raw.index[raw["click"] == 1]]
        assert sorted(clicks["request_id"]) == sorted(clicked["request_id"])
        on = clicks.merge(clicked, on="request_id", suffixes=("", "_impression"))
        assert (on["ts"] == on["ts_impression"]).all() and (on["item_id"] == on["item_id_impression"]).all()
        assert (on["user_id"] == on["user_id_impression"]).all()
    by_table = {t: sum(r.written for r in reports if r.table == t) for t in TABLES}
    assert by_table["impressions"] == 30_000 and by_table["engagements"] == sum(
        csv(obd, c)["click"].sum() for c in CAMPAIGNS
    )


def test_propensities_positions_actions_and_campaigns_survive_exactly(obd, ingested):
    lake, _, _ = ingested
    for campaign in CAMPAIGNS:
        raw, impressions = csv(obd, campaign), impressions_of(lake, campaign)
        assert (impressions["propensity"].to_numpy() == raw["propensity_score"].to_numpy()).all()
        assert (impressions["position"].to_numpy() == raw["position"].to_numpy()).all()
        assert set(impressions["position"]) == {1, 2, 3}  # OBD's slots are 1-based already
        assert (obd_item_ids(impressions["item_id"].to_numpy()) == raw["item_id"].to_numpy()).all()
        assert (impressions["ts"].to_numpy() == raw["timestamp"].to_numpy()).all()
        assert (impressions["surface"] == campaign).all() and (impressions["model_version"] == "random").all()
        assert (impressions["request_id"] == [f"obd-random-{campaign}-{i}" for i in raw.index]).all()
        affinity = [c for c in raw.columns if c.startswith("user-item_affinity_")]
        assert (np.stack(impressions["served_keys"]) == np.array(affinity, dtype=object)).all()
        assert (np.stack(impressions["served"]) == raw[affinity].to_numpy()).all()


def test_bandit_feedback_reads_back_the_logs_as_obd_wrote_them(obd, ingested):
    lake, _, _ = ingested
    for campaign in CAMPAIGNS:
        back = bandit_feedback(lake, "random", campaign).to_pandas().set_index("row")
        back.index.name = None
        pd.testing.assert_frame_equal(back, csv(obd, campaign), check_exact=True, check_dtype=False)
    assert bandit_feedback(lake, "bts", "all").num_rows == 0


def test_item_context_is_joined_to_every_impression(obd, ingested):
    lake, _, _ = ingested
    items = lake.read("items").to_pandas().set_index("item_id")
    assert len(items) == sum(len(pd.read_csv(obd / "random" / c / "item_context.csv.gz")) for c in CAMPAIGNS)
    assert (items["creator_id"] == -1).all() and (items["safety_label"] == "safe").all()
    for campaign in CAMPAIGNS:
        context = pd.read_csv(obd / "random" / campaign / "item_context.csv.gz", index_col=0)
        impressions = impressions_of(lake, campaign)
        assert set(impressions["item_id"]) <= set(items.index)  # every shown item has its context
        mine = items.loc[impressions["item_id"].unique()]
        assert (obd_item_ids(mine.index.to_numpy()) < len(context)).all()
        assert (mine["created_at"] == impressions["ts"].min()).all()
        for item_id, content in mine["content"].items():
            row = context.loc[context["item_id"] == obd_item_ids(np.array([item_id]))[0]].iloc[0]
            expected = {"item_feature_0": row["item_feature_0"]} | {f"{k}={row[k]}": 1.0 for k in context.columns[2:]}
            assert dict(content) == expected


def test_users_are_the_user_feature_combinations(obd, ingested):
    lake, _, _ = ingested
    users = lake.read("users").to_pandas()
    assert users["user_id"].is_unique and (users["country"] == "JP").all()
    attributes = pd.DataFrame([dict(a) for a in users["attributes"]], index=users["user_id"])
    assert list(attributes.columns) == list(USER_FEATURES)
    logs = pd.concat([csv(obd, c) for c in CAMPAIGNS])
    assert len(attributes) == len(logs[list(USER_FEATURES)].drop_duplicates())
    for campaign in CAMPAIGNS:
        raw, impressions = csv(obd, campaign), impressions_of(lake, campaign)
        seen = attributes.loc[impressions["user_id"]].to_numpy()
        assert (seen == raw[list(USER_FEATURES)].to_numpy()).all()  # each row's user has exactly its features
    # OBD has no sign-up time: none is invented (a made-up one gave negative tenures), and the users sit in the
    # partition of unknown times.
    assert users["signup_at"].isna().all()
    assert lake.dates("users") == [UNKNOWN_TIME]


def test_canonical_tables_conform_and_obey_the_value_rules(ingested):
    lake, _, _ = ingested
    for table in TABLES:
        rows = lake.read(table)
        assert conform(table, rows).equals(rows)
        assert check_values(table, rows) == []


# --- re-ingesting, quarantine, refusals ------------------------------------------------------------------------------


def copy_campaigns(obd: Path, target: Path, *campaigns: str) -> Path:
    """Plain-CSV copies of bundled campaigns (the form OBD publishes), to break or to read uncompressed."""
    for campaign in campaigns:
        folder = target / "random" / campaign
        folder.mkdir(parents=True)
        for packed in (obd / "random" / campaign).glob("*.csv.gz"):
            with gzip.open(packed) as src, (folder / packed.stem).open("wb") as dst:
                shutil.copyfileobj(src, dst)
    return target


def test_reingesting_a_campaign_any_way_it_is_named_adds_nothing(obd, tmp_path):
    lake = Lake(tmp_path / "lake")
    first = ingest_open_bandit(obd / "random" / "men", lake, tmp_path / "q", NOW)
    assert [r.table for r in first] == ["users", "items", "impressions", "engagements"]
    counts = {t: lake.read(t).num_rows for t in TABLES}
    for path in (obd / "random" / "men" / "men.csv.gz", obd / "random" / "men"):
        again = ingest_open_bandit(path, lake, tmp_path / "q", NOW)
        assert all(r.written == 0 and r.duplicates == r.rows_in and r.balanced for r in again)
        assert {t: lake.read(t).num_rows for t in TABLES} == counts


def test_bad_values_quarantine_their_rows_and_the_books_balance(obd, tmp_path):
    root = copy_campaigns(obd, tmp_path / "obd", "men")
    log = root / "random" / "men" / "men.csv"
    frame = pd.read_csv(log, index_col=0)
    clicked = frame.index[frame["click"] == 1]
    assert clicked[0] > 5
    frame.loc[3, "propensity_score"] = 0.0
    frame.loc[4, "position"] = 0
    frame.loc[clicked[0], "propensity_score"] = 1.5  # a clicked row: its click is orphaned too
    frame.loc[5, "timestamp"] = "2031-01-01 00:00:00+00:00"
    frame.to_csv(log)
    lake = Lake(tmp_path / "lake")
    reports = {r.table: r for r in ingest_open_bandit(root, lake, tmp_path / "q", NOW)}
    assert all(r.balanced for r in reports.values())
    impressions, engagements = reports["impressions"], reports["engagements"]
    assert (impressions.rows_in, impressions.quarantined, impressions.written) == (10_000, 4, 9_996)
    (future,) = [r for r in impressions.reasons if r.startswith("ts:in_range")]
    assert impressions.reasons == {
        "propensity:greater_than(0.0)": 1,
        "propensity:less_than_or_equal_to(1.0)": 1,
        "position:greater_than_or_equal_to(1)": 1,
        future: 1,
    }
    assert engagements.reasons == {"orphan:no_matching_impression": 1}
    assert engagements.written == len(clicked) - 1
    quarantined = pd.concat(pd.read_parquet(p) for p in (tmp_path / "q").rglob("*.parquet"))
    assert sorted(quarantined["line"][quarantined["table"] == "impressions"]) == sorted([4, 5, 6, clicked[0] + 1])
    assert (quarantined["source"] == str(log)).all()


@pytest.mark.parametrize(
    ("break_it", "expected", "checked_up_front"),
    [
        (
            lambda d: _drop_column(d / "men.csv", "propensity_score"),
            "men.csv: missing Open Bandit column(s) propensity_score",
            True,
        ),
        (lambda d: (d / "item_context.csv").unlink(), "men/item_context.csv: no such file", True),
        (lambda d: _set_cell(d / "men.csv", "click", "2"), "men.csv: click must be 0 or 1; data row 1 has 2", False),
        (
            lambda d: _set_cell(d / "men.csv", "propensity_score", "high"),
            "men.csv: cannot be read as Open Bandit data",
            False,
        ),
        (lambda d: _gzip(d / "men.csv", b"not gzip"), "men.csv.gz: cannot be read as Open Bandit data", True),
        (lambda d: _gzip(d / "men.csv", half=True), "men.csv.gz: cannot be read as Open Bandit data", False),
    ],
    ids=["missing-column", "missing-item-context", "bad-click", "unparseable-cell", "not-gzip", "truncated-gzip"],
)
def test_a_malformed_campaign_is_refused_by_name_before_it_is_written(
    obd, tmp_path, break_it, expected, checked_up_front
):
    root = copy_campaigns(obd, tmp_path / "obd", "all", "men")  # `all` is sound and comes first
    break_it(root / "random" / "men")
    lake = Lake(tmp_path / "lake")
    with pytest.raises(IngestError, match=re.escape(expected)):
        ingest_open_bandit(root, lake, tmp_path / "q", NOW)
    surfaces = set(lake.read("impressions")["surface"].to_pylist())
    # Headers are checked for every file before any is read; a bad cell is found when its file is read,
    # after the files before it are in, and before anything of its own is written.
    assert surfaces == (set() if checked_up_front else {"all"})
    assert len(lake.read("items")) == (0 if checked_up_front else 80)
    assert not (tmp_path / "q").exists()


def _drop_column(path: Path, column: str) -> None:
    pd.read_csv(path, index_col=0).drop(columns=[column]).to_csv(path)


def _gzip(path: Path, data: bytes | None = None, half: bool = False) -> None:
    """Replace a CSV by a ``.csv.gz`` holding ``data``, or its gzip stream cut in half (the header still reads)."""
    packed = gzip.compress(path.read_bytes())
    path.unlink()
    path.with_name(f"{path.name}.gz").write_bytes(
        data if data is not None else packed[: len(packed) // 2 if half else None]
    )


def _set_cell(path: Path, column: str, value: str) -> None:
    frame = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    frame.loc[frame.index[0], column] = value
    frame.to_csv(path)


def test_paths_that_are_not_open_bandit_logs_are_refused(obd, tmp_path):
    with pytest.raises(IngestError, match="no Open Bandit campaign logs"):
        ingest_open_bandit(tmp_path, Lake(tmp_path / "lake"), tmp_path / "q", NOW)
    kids = tmp_path / "random" / "kids"
    kids.mkdir(parents=True)
    shutil.copy(obd / "random" / "men" / "men.csv.gz", kids / "kids.csv.gz")
    with pytest.raises(IngestError, match=re.escape("kids.csv.gz: not an Open Bandit campaign log")):
        ingest_open_bandit(tmp_path, Lake(tmp_path / "lake"), tmp_path / "q", NOW)


# --- the command line ------------------------------------------------------------------------------------------------


def test_cli_ingests_the_dataset_once_and_prints_a_report_per_table(obd, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def report() -> list[list[str]]:
        lines = ANSI.sub("", capsys.readouterr().out).splitlines()
        return [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if ".csv" in line]

    assert main(["ingest", "--sample", "random/men"]) == 0  # the bundled sample, by name: no path to know
    clicks = str(csv(obd, "men")["click"].sum())
    assert report() == [
        ["men.csv.gz", "users", "230", "230", "0", "0"],
        ["item_context.csv.gz", "items", "34", "34", "0", "0"],
        ["men.csv.gz", "impressions", "10,000", "10,000", "0", "0"],
        ["men.csv.gz", "engagements", clicks, clicks, "0", "0"],
    ]
    assert Lake(tmp_path / ".homefeed" / "lake").read("impressions").num_rows == 10_000
    assert main(["ingest", str(obd / "random" / "men" / "men.csv.gz"), "-f", "open-bandit"]) == 0
    assert [row[3] for row in report()] == ["0"] * 4  # written: nothing the second time (the same rows by path)
    assert main(["ingest", "--format", "open-bandit", "--sample", "random"]) == 0
    tables = {
        "users": "{c}.csv.gz",
        "items": "item_context.csv.gz",
        "impressions": "{c}.csv.gz",
        "engagements": "{c}.csv.gz",
    }
    expected = [[f"{c}/{f.format(c=c)}", t] for c in sorted(CAMPAIGNS) for t, f in tables.items()]
    assert [row[:2] for row in report()] == expected  # all three campaigns, each file named under random/
    assert Lake(tmp_path / ".homefeed" / "lake").read("impressions").num_rows == 30_000


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sample", "random/kids"], "error: no bundled Open Bandit sample 'random/kids'; expected one of random, "),
        (["--sample", "random/men", "--format", "csv"], "error: --sample names the bundled Open Bandit sample"),
        (["somewhere", "--sample", "random/men"], "error: --sample names the bundled Open Bandit sample"),
        (["--sample", "random/men", "--table", "users"], "error: --table does not apply to --format open-bandit"),
        ([], "error: give a PATH to ingest, or --sample for the bundled Open Bandit sample"),
    ],
    ids=["unknown-sample", "other-format", "path-and-sample", "sample-and-table", "neither"],
)
def test_cli_refuses_a_bad_sample_request_by_name(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", *args]) == 2
    assert capsys.readouterr().err.startswith(expected)
    assert not (tmp_path / ".homefeed" / "lake").exists()


def test_cli_refuses_a_table_with_open_bandit_and_requires_one_otherwise(obd, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", str(obd), "--format", "open-bandit", "--table", "impressions"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --table does not apply to --format open-bandit") and "\n" not in err
    assert main(["ingest", str(tmp_path / "x.csv"), "--format", "csv"]) == 2
    assert capsys.readouterr().err.strip() == "error: --table is required for --format csv"
    assert main(["ingest", str(tmp_path), "--format", "open-bandit"]) == 2
    assert "no Open Bandit campaign logs" in capsys.readouterr().err
    assert not (tmp_path / ".homefeed" / "lake").exists()
