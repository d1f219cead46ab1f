"""Daily data checks: each injected fault is an error on the day it starts; normal days raise no error."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from homefeed.config import SimSettings
from homefeed.data import drift
from homefeed.data.checks import FINDINGS_SCHEMA, Finding, Thresholds, check_day, summarize, to_table, worst_severity
from homefeed.sim import RandomPolicy, Simulation

BASE = {"users": 6_000, "items_per_day": 1_000, "creators": 400, "seed": 23}
START = dt.date(2026, 3, 2)  # a Monday: days 5 and 6 are the weekend
DAYS = 10
FAULT_DAY = 8
BASELINE_DAYS = 7


@dataclass
class Logs:
    """A simulated world's logs, read back one day partition at a time, as the lake will feed the checks."""

    root: Path
    users: pa.Table

    def part(self, table: str, day: int) -> pa.Table:
        return pq.read_table(self.root / table / f"date={START + dt.timedelta(days=day):%Y-%m-%d}")

    def check(self, table: str, day: int, users: bool = True, **thresholds) -> list[Finding]:
        baseline = [self.part(table, d) for d in range(max(0, day - BASELINE_DAYS), day)]
        return check_day(
            table, self.part(table, day), baseline, self.users if users else None, Thresholds(**thresholds)
        )


def simulate(tmp_path_factory, name: str, faults: list[dict]) -> Logs:
    root = tmp_path_factory.mktemp(name)
    Simulation(SimSettings(**BASE, faults=faults)).run(RandomPolicy(seed=1), DAYS, root)
    with duckdb.connect() as con:
        users = con.sql(
            f"select * exclude (date) from read_parquet('{root}/users/*/*.parquet', hive_partitioning = true)"
        ).to_arrow_table()
    return Logs(root, users)


@pytest.fixture(scope="module")
def normal(tmp_path_factory) -> Logs:
    return simulate(tmp_path_factory, "normal", [])


@pytest.fixture(scope="module")
def coverage(tmp_path_factory) -> Logs:
    """Two coverage drops on one day, in different tables: all of BR's impression country, 90% of DE's dwell."""
    return simulate(
        tmp_path_factory,
        "coverage",
        [
            {"kind": "coverage_drop", "table": "impressions", "column": "country", "country": "BR", "from_day": 8},
            {
                "kind": "coverage_drop",
                "table": "engagements",
                "column": "dwell",
                "country": "DE",
                "share": 0.9,
                "from_day": 8,
            },
        ],
    )


@pytest.fixture(scope="module")
def logging_change(tmp_path_factory) -> Logs:
    return simulate(tmp_path_factory, "logging", [{"kind": "logging_change", "action": "closeup", "from_day": 8}])


@pytest.fixture(scope="module")
def volume_drop(tmp_path_factory) -> Logs:
    fault = {"kind": "volume_drop", "table": "impressions", "share": 0.5, "from_day": 8}
    return simulate(tmp_path_factory, "volume", [fault])


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


# ------------------------------------------------------------------------------------------- simulated faults
def test_normal_days_raise_no_error_weekend_included(normal):
    for day in range(3, DAYS):  # Thu .. Wed, with Saturday and Sunday
        for table in ("impressions", "engagements"):
            findings = normal.check(table, day)
            assert worst_severity(findings) != "error", f"day {day} {table}\n{summarize(findings)}"
            # Busy weekends may warn about volume; nothing else should even warn on a normal day.
            assert {f.check for f in findings if f.severity == "warning"} <= {"volume"}, summarize(findings)
    for day in (8, 9):  # users and items once the baseline no longer holds day 0's initial backfill
        for table in ("users", "items"):
            assert not errors(normal.check(table, day)), summarize(normal.check(table, day))


def test_propensity_drift_of_a_growing_catalogue_is_info_only(normal):
    """1 / catalogue size moves 0.2% a day: every bin sees it, no consumer of the data cares."""
    findings = [f for f in normal.check("impressions", 8) if f.column == "propensity"]
    assert findings and {f.severity for f in findings} == {"info"}
    assert max(f.value for f in findings if f.check == "psi") > 0.25


def test_coverage_drop_for_one_market_is_an_error_naming_it(coverage):
    assert not errors(coverage.check("impressions", FAULT_DAY - 1))
    findings = coverage.check("impressions", FAULT_DAY)
    br = [f for f in errors(findings) if f.check == "null_rate" and f.segment == "country=BR"]
    assert [(f.column, f.value, f.baseline) for f in br] == [("country", 1.0, 0.0)]
    assert "BR" in br[0].message and "impressions.country" in br[0].message
    assert any(f.check == "vanished_category" and "'BR'" in f.message for f in errors(findings))
    # Without the users table the market comes from the impression's own (now null) country: BR's rows vanish.
    alone = coverage.check("impressions", FAULT_DAY, users=False)
    assert any(f.check == "volume" and f.segment == "country=BR" for f in errors(alone))


def test_coverage_drop_in_one_small_market_is_an_error_though_the_overall_rate_moves_less(coverage):
    assert not errors(coverage.check("engagements", FAULT_DAY - 1))
    findings = coverage.check("engagements", FAULT_DAY)
    dwell = {f.segment: f for f in findings if f.check == "null_rate" and f.column == "dwell"}
    assert dwell["country=DE"].severity == "error"
    assert dwell["country=DE"].value - dwell["country=DE"].baseline > 0.6
    overall = dwell[None]  # DE is a tenth of the rows: the overall rate moves less than the error threshold
    assert overall.value - overall.baseline < Thresholds().null_rate_increase_error and overall.severity == "warning"
    assert {f.segment for f in errors(findings)} == {"country=DE"}


def test_an_action_that_stops_being_logged_is_an_error_naming_it(logging_change):
    assert not errors(logging_change.check("engagements", FAULT_DAY - 1))
    findings = errors(logging_change.check("engagements", FAULT_DAY))
    vanished = [f for f in findings if f.check == "vanished_category"]
    assert [(f.column, f.value) for f in vanished] == [("action", 0.0)]
    assert "'closeup'" in vanished[0].message and vanished[0].baseline > 0.4
    assert {"psi", "js", "volume"} <= {f.check for f in findings if f.column in ("action", None)}


def test_volume_drop_is_an_error(volume_drop):
    assert not errors(volume_drop.check("impressions", FAULT_DAY - 1))
    findings = errors(volume_drop.check("impressions", FAULT_DAY))
    overall = [f for f in findings if f.check == "volume" and f.segment is None]
    assert len(overall) == 1 and 0.4 < overall[0].value / overall[0].baseline < 0.55
    assert not [f for f in findings if f.check in ("null_rate", "psi", "js")]  # rows lost, not changed


def test_schema_changes_are_errors(normal):
    day = normal.part("impressions", FAULT_DAY)
    i = day.schema.get_field_index("position")
    day = day.set_column(i, "position", day["position"].cast(pa.int64())).drop_columns(["score"])
    day = day.append_column("debug", pa.array(np.zeros(day.num_rows)))
    baseline = [normal.part("impressions", d) for d in range(FAULT_DAY - BASELINE_DAYS, FAULT_DAY)]
    found = errors(check_day("impressions", day, baseline, normal.users))
    assert {(f.check, f.column) for f in found} == {("schema", "position"), ("schema", "score"), ("schema", "debug")}
    assert any("int32 to int64" in f.message for f in found)


# ------------------------------------------------------------------------------------------------ by hand
def test_psi_and_js_against_hand_computed_values():
    # day 50/50 vs baseline 40/60: PSI = .1 ln(.5/.4) + .1 ln(.6/.5); M = (.45, .55)
    assert drift.psi([50, 50], [40, 60]) == pytest.approx(0.1 * math.log(5 / 4) + 0.1 * math.log(6 / 5))
    m = (0.45, 0.55)
    kl_p = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    kl_q = 0.4 * math.log2(0.4 / m[0]) + 0.6 * math.log2(0.6 / m[1])
    assert drift.js_distance([50, 50], [40, 60]) == pytest.approx(math.sqrt((kl_p + kl_q) / 2))
    assert drift.js_distance([3, 7], [6, 14]) == pytest.approx(0.0, abs=1e-12) and drift.psi([3, 7], [6, 14]) == 0
    assert drift.js_distance([5, 0], [0, 5]) == pytest.approx(1.0)  # disjoint: the maximum, in base 2


def test_psi_floors_an_empty_bin_without_renormalising_so_a_vanished_category_is_capped():
    # a category of share p gone from the day adds exactly (p - floor) ln(p / floor): finite, and small for rare ones
    for share in (0.10, 0.02, 0.01):
        base = [1 - share, share]
        day = [1.0, 0.0]
        capped = (share - drift.PSI_FLOOR) * math.log(share / drift.PSI_FLOOR)
        kept = (1 - (1 - share)) * math.log(1 / (1 - share))
        assert drift.psi(day, base) == pytest.approx(capped + kept)
    assert drift.psi([1.0, 0.0], [0.98, 0.02]) > 0.1 > drift.psi([1.0, 0.0], [0.99, 0.01])  # ~1.9% crosses 0.1
    # the JS distance has no floor: the 1% category's vanishing is 0.07 there, 5x its chance level at 10,000 rows
    assert drift.js_distance([1.0, 0.0], [0.99, 0.01]) > 5 * drift.chance_js(10_000, 10_000, 2, 3.0)


def test_numeric_bins_are_baseline_quantiles():
    baseline = np.arange(1, 10_001)  # uniform on 1 .. 10000: deciles at 1000, 2000, ...
    edges = drift.quantile_edges(baseline, 10)
    assert edges.tolist() == list(range(1_000, 10_000, 1_000))  # observed values, right-closed bins
    shifted = drift.histogram(baseline + 500, edges)  # half a bin to the right: 5% | 10% x 8 | 15%
    assert shifted.tolist() == [500] + [1000] * 8 + [1500]
    expected = 0.05 * math.log(0.10 / 0.05) + 0.05 * math.log(0.15 / 0.10)
    assert drift.psi(shifted, drift.histogram(baseline, edges)) == pytest.approx(expected)
    assert drift.quantile_edges(np.repeat([1.0, 2.0, 3.0], [50, 30, 20]), 10).tolist() == [1.0, 2.0, 3.0]


def test_chance_level_matches_samples_of_one_distribution():
    rng = np.random.default_rng(0)
    pi, n, m = rng.dirichlet(np.ones(10)), 500, 3_500
    runs = [(rng.multinomial(n, pi), rng.multinomial(m, pi)) for _ in range(2_000)]
    psis = np.array([drift.psi(a, b) for a, b in runs])
    assert psis.mean() == pytest.approx(9 * (1 / n + 1 / m), rel=0.15)  # E[PSI] ≈ (k - 1)(1/n + 1/m)
    assert np.mean(psis > drift.chance_psi(n, m, 10, 3.0)) < 0.03
    jss = np.array([drift.js_distance(a, b) for a, b in runs])
    assert np.mean(jss > drift.chance_js(n, m, 10, 3.0)) < 0.03


def actions(counts: list[int]) -> pa.Table:
    return pa.table({"action": pa.array(np.repeat(["closeup", "click", "save"], counts))})


@pytest.mark.parametrize(("rows", "worst"), [(20_000, "error"), (40, "warning")])
def test_the_same_shift_is_an_error_in_large_samples_and_not_in_tiny_ones(rows, worst):
    """Shares .60/.30/.10 -> .35/.35/.30: PSI 0.36, JS 0.25, over the error thresholds by themselves."""
    baseline = [actions([rows * 60 // 100, rows * 30 // 100, rows * 10 // 100])] * BASELINE_DAYS
    day = actions([rows * 35 // 100, rows * 35 // 100, rows * 30 // 100])
    findings = check_day("engagements", day, baseline, thresholds=Thresholds(min_segment_rows=20))
    shift = {f.check: f for f in findings if f.check in ("psi", "js")}
    assert shift["psi"].value == pytest.approx(0.362, abs=0.005)
    assert shift["js"].value == pytest.approx(0.251, abs=0.005)
    assert {f.severity for f in shift.values()} == {worst}
    if worst == "warning":  # 40 rows a day: PSI reaches 0.23 by chance alone
        assert shift["psi"].baseline == pytest.approx(drift.chance_psi(40, 280, 3, 3.0))
        assert shift["psi"].value < Thresholds().psi_error + shift["psi"].baseline


def test_a_category_is_only_called_vanished_when_rows_of_it_were_expected():
    baseline = [actions([600, 300, 30])] * BASELINE_DAYS
    big, small = actions([600, 300, 0]), actions([60, 30, 0])  # the day would expect 30 and 3 saves
    assert [f.message for f in check_day("engagements", big, baseline) if f.check == "vanished_category"]
    assert not [
        f
        for f in check_day("engagements", small, baseline, thresholds=Thresholds(min_segment_rows=50))
        if f.check == "vanished_category"
    ]


def test_no_baseline_checks_only_the_schema_and_reporting_helpers():
    findings = check_day("engagements", actions([5, 5, 5]), [])
    assert [(f.check, f.severity) for f in findings] == [("baseline", "info")]
    assert worst_severity(findings) == "info" and worst_severity([]) is None
    text = summarize(findings).splitlines()
    assert text[0].split()[:5] == ["severity", "table", "check", "column", "segment"] and "no baseline" in text[1]
    assert summarize([]) == "no findings"
    stored = to_table(findings)
    assert stored.schema == FINDINGS_SCHEMA and stored.num_rows == 1 and stored["check"][0].as_py() == "baseline"
