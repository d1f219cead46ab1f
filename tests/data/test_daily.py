"""The daily check through the lake: a day and its baseline read from partitions, findings stored per date."""

from __future__ import annotations

import datetime as dt

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from homefeed.config import Checks, SimSettings, Thresholds
from homefeed.data import checks
from homefeed.data.checks import FINDINGS_SCHEMA, summarize, to_table
from homefeed.data.daily import CheckError, check_date, findings_path, read_findings
from homefeed.schema import USERS
from homefeed.sim import RandomPolicy, Simulation
from tests.conftest import load_lake

START = dt.date(2026, 3, 2)  # a Monday
FAULT_DAY = 8  # a Tuesday; day 7 is the normal Monday before it
WORLD = {"users": 4_000, "items_per_day": 600, "creators": 250, "seed": 23}
FAULTS = [  # from the fault day on: BR's impressions lose their country, closeups are no longer logged
    {"kind": "coverage_drop", "table": "impressions", "column": "country", "country": "BR", "from_day": FAULT_DAY},
    {"kind": "logging_change", "action": "closeup", "from_day": FAULT_DAY},
]


def day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("daily")
    Simulation(SimSettings(**WORLD, faults=FAULTS)).run(RandomPolicy(seed=1), FAULT_DAY + 1, root / "logs")
    return root


@pytest.fixture(scope="module")
def lake(world):
    """Read only by the tests; each stores its findings under its own tmp_path."""
    return load_lake(world / "logs", world / "lake")


def errors(result):
    return [f for f in result.findings if f.severity == "error"]


def test_a_normal_day_raises_no_error_and_its_findings_are_stored(lake, tmp_path):
    result = check_date(lake, day(FAULT_DAY - 1), tmp_path / "checks", Checks())
    assert result.worst != "error", summarize(result.findings)
    assert not [f for f in result.findings if f.severity == "warning"], summarize(result.findings)
    assert result.tables == ("users", "items", "impressions", "engagements")
    # Every table says what it was judged against: the 7 days the lake holds before the day, of a 14-day window.
    coverage = {f.table: f for f in result.findings if f.check == "baseline"}
    assert set(coverage) == set(result.tables)
    assert (coverage["impressions"].value, coverage["impressions"].baseline) == (7.0, 14.0)
    assert "7 of the 14 days before" in coverage["impressions"].message
    assert result.path == findings_path(tmp_path / "checks", day(FAULT_DAY - 1))
    assert result.path == tmp_path / "checks" / "date=2026-03-09" / "findings.parquet"
    stored = read_findings(tmp_path / "checks", day(FAULT_DAY - 1))
    assert stored.schema == FINDINGS_SCHEMA and stored.equals(to_table(result.findings))


def test_a_broken_day_is_an_error_naming_the_market_and_the_action(lake, tmp_path):
    result = check_date(lake, day(FAULT_DAY), tmp_path / "checks", Checks(), tables=["impressions", "engagements"])
    assert result.worst == "error"
    found = {(f.table, f.check, f.column, f.segment) for f in errors(result)}
    assert ("impressions", "null_rate", "country", "country=BR") in found
    assert ("engagements", "vanished_category", "action", None) in found
    assert any("'closeup'" in f.message for f in errors(result))
    assert read_findings(tmp_path / "checks", day(FAULT_DAY)).num_rows == len(result.findings)


def test_rerunning_replaces_and_checking_one_table_keeps_the_others(lake, tmp_path):
    both = ["users", "engagements"]
    first = check_date(lake, day(FAULT_DAY), tmp_path / "checks", Checks(), tables=both)
    again = check_date(lake, day(FAULT_DAY), tmp_path / "checks", Checks(), tables=both)
    stored = read_findings(tmp_path / "checks", day(FAULT_DAY))
    assert stored.num_rows == len(first.findings) == len(again.findings)
    assert stored.equals(to_table(again.findings))
    only = check_date(lake, day(FAULT_DAY), tmp_path / "checks", Checks(), tables=["engagements"])
    assert {f.table for f in only.findings} == {"engagements"}
    stored = read_findings(tmp_path / "checks", day(FAULT_DAY))
    assert stored.num_rows == len(first.findings)
    by_table = pc.value_counts(stored["table"]).to_pylist()
    assert {c["values"]: c["counts"] for c in by_table} == {
        t: sum(f.table == t for f in first.findings) for t in first.tables
    }


def test_a_date_with_no_data_is_an_error_saying_what_the_lake_holds(lake, tmp_path):
    with pytest.raises(CheckError, match=r"no data for 2026-04-01 in the lake") as info:
        check_date(lake, dt.date(2026, 4, 1), tmp_path / "checks", Checks())
    assert "impressions 2026-03-02 .. 2026-03-11" in str(info.value)
    assert read_findings(tmp_path / "checks", dt.date(2026, 4, 1)) is None
    with pytest.raises(CheckError, match="the lake is empty"):
        check_date(type(lake)(tmp_path / "empty"), day(3), tmp_path / "checks", Checks())


def test_an_unknown_table_is_an_error(lake, tmp_path):
    with pytest.raises(CheckError, match=r"unknown table 'clicks'; choose from: users, items"):
        check_date(lake, day(3), tmp_path / "checks", Checks(), tables=["impressions", "clicks"])


def test_a_table_not_loaded_for_the_day_is_an_error_finding_not_a_usage_error(world, tmp_path):
    """Impressions are there, engagements are not (yet): the day must not be trained on."""
    both = ("impressions", "engagements")
    lake = load_lake(world / "logs", tmp_path / "lake", tables=both, skip={"engagements": "2026-03-09"})
    result = check_date(lake, day(FAULT_DAY - 1), tmp_path / "checks", Checks(), tables=["impressions", "engagements"])
    assert result.rows["engagements"] == 0 and result.rows["impressions"] > 0
    volume = [f for f in errors(result) if f.check == "volume" and f.segment is None]
    assert [f.table for f in volume] == ["engagements"] and volume[0].value == 0


def test_a_thin_baseline_runs_with_what_exists_and_warns(lake, tmp_path):
    def check(n, **settings):
        return check_date(lake, day(n), tmp_path / "checks", Checks(**settings), tables=["impressions"])

    first = check(0)
    assert first.worst == "warning" and first.baseline_days["impressions"] == 0
    (note,) = [f for f in first.findings if f.table == "impressions"]  # nothing to compare with: only this
    assert (note.check, note.severity) == ("baseline", "warning") and "nothing to compare with" in note.message
    third = check(2)
    assert third.worst == "warning" and third.baseline_days["impressions"] == 2
    note = next(f for f in third.findings if f.table == "impressions" and f.check == "baseline")
    assert note.severity == "warning" and "2 of the 14 days before" in note.message
    assert "min_baseline_days = 7" in note.message
    # Two days are enough when the project says so; a window of 2 is full.
    relaxed = check(2, min_baseline_days=2)
    assert {f.severity for f in relaxed.findings if f.check == "baseline"} == {"info"}
    full = check(2, baseline_days=2)
    note = next(f for f in full.findings if f.table == "impressions" and f.check == "baseline")
    assert note.severity == "info" and "all 2 days before" in note.message


def test_users_are_checked_a_day_of_sign_ups_at_a_time(lake, world, tmp_path):
    """The lake partitions users by month; the check takes the day's sign-ups out of the month."""
    result = check_date(lake, day(3), tmp_path / "checks", Checks(), tables=["users"])
    users = ds.dataset(str(world / "logs" / "users"), schema=USERS, format="parquet").to_table()
    signed_up = pc.equal(pc.strftime(users["signup_at"], format="%Y-%m-%d"), "2026-03-05")
    assert result.rows == {"users": pc.sum(signed_up).as_py()} and result.rows["users"] > 0


def test_thresholds_come_from_the_settings(lake, tmp_path):
    assert checks.Thresholds is Thresholds  # one type: the project file's [checks.thresholds]
    lenient = Checks(thresholds=Thresholds(vanished_min_expected=1e12))
    result = check_date(lake, day(FAULT_DAY), tmp_path / "checks", lenient, tables=["engagements"])
    assert result.worst == "error"
    assert not [f for f in result.findings if f.check == "vanished_category"]
