import tomllib
from pathlib import Path

import numpy as np
import pytest

from homefeed import config
from homefeed.config import (
    ConfigError,
    CoverageDrop,
    DelayedArrival,
    LoggingChange,
    MarketShift,
    PositionBias,
    Settings,
    VolumeDrop,
)
from homefeed.data import checks

DEFAULTS = Settings().model_dump(exclude={"base_dir"})


@pytest.fixture(autouse=True)
def no_config_env(monkeypatch):
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and the template ---------------------------------------------------------------------------------------


def test_load_without_a_project_file_gives_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = config.load(None)
    assert settings.model_dump(exclude={"base_dir"}) == DEFAULTS
    assert settings.sim.users == 20_000
    assert settings.backends.etl == "duckdb"
    assert settings.resolved_paths.lake == Path.cwd() / ".homefeed" / "lake"


def test_load_picks_up_homefeed_toml_in_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "homefeed.toml", "[sim]\nusers = 123\n")
    monkeypatch.chdir(tmp_path)
    assert config.load(None).sim.users == 123


def test_init_writes_a_template_whose_settings_are_the_defaults(tmp_path):
    target = config.init(tmp_path / "project")
    assert target == tmp_path / "project" / "homefeed.toml"
    assert target.read_text(encoding="utf-8") == config.DEFAULT_TOML
    assert config.load(target).model_dump(exclude={"base_dir"}) == DEFAULTS


def test_template_spells_out_every_setting():
    """A knob added to the code but not to the template would be invisible to users."""
    template = tomllib.loads(config.DEFAULT_TOML)
    optional = {  # shown commented out
        ("sim", "position_bias", "curve"),
        ("sim", "faults"),
        ("features", "declared"),
        ("dataset", "feature_set"),
        ("dataset", "split", "validation_start"),
        ("dataset", "split", "test_start"),
    }

    def missing(defaults, written, prefix):
        for key, value in defaults.items():
            path = (*prefix, key)
            if path in optional:
                continue
            if key not in written:
                yield ".".join(path)
            elif isinstance(value, dict) and key != "countries":
                yield from missing(value, written[key], path)

    assert list(missing(DEFAULTS, template, ())) == []
    assert "curve" in config.DEFAULT_TOML
    assert "[[sim.faults]]" in config.DEFAULT_TOML
    assert "[[features.declared]]" in config.DEFAULT_TOML


def test_init_refuses_to_overwrite_unless_asked(tmp_path):
    target = write(tmp_path / "homefeed.toml", "[sim]\nusers = 5\n")
    with pytest.raises(ConfigError, match="already exists"):
        config.init(tmp_path)
    assert target.read_text(encoding="utf-8") == "[sim]\nusers = 5\n"
    config.init(tmp_path, overwrite=True)
    assert target.read_text(encoding="utf-8") == config.DEFAULT_TOML


# --- paths -----------------------------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_files_directory(tmp_path, monkeypatch):
    config.init(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    paths = config.load(tmp_path / "project" / "homefeed.toml").resolved_paths
    assert paths.root == tmp_path / "project" / ".homefeed"
    assert paths.lake == tmp_path / "project" / ".homefeed" / "lake"
    assert paths.sim_logs == tmp_path / "project" / ".homefeed" / "sim"


def test_relative_config_path_resolves_against_its_own_directory(tmp_path, monkeypatch):
    write(tmp_path / "project" / "homefeed.toml", "")
    monkeypatch.chdir(tmp_path)
    assert config.load("project/homefeed.toml").resolved_paths.lake == tmp_path / "project" / ".homefeed" / "lake"


def test_custom_root_and_absolute_paths(tmp_path):
    absolute = tmp_path / "big-disk" / "lake"
    cfg = write(tmp_path / "homefeed.toml", f'[paths]\nroot = "data"\nlake = "{absolute.as_posix()}"\n')
    paths = config.load(cfg).resolved_paths
    assert paths.lake == absolute
    assert paths.registry == tmp_path / "data" / "registry.sqlite"


# --- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[sim]\nuserz = 3\n", "sim.userz"),
        ("[sim.sessions]\ndepthmean = 3.0\n", "sim.sessions.depthmean"),
        ("[backend]\netl = 'spark'\n", "backend"),
        ("[[sim.faults]]\nkind = 'volume_drop'\ntable = 'impressions'\nform_day = 3\n", "sim.faults.0.form_day"),
        ("[checks]\nbaseline_dayz = 7\n", "checks.baseline_dayz"),
        ("[checks.thresholds]\npsi_eror = 0.3\n", "checks.thresholds.psi_eror"),
    ],
)
def test_an_unknown_key_is_an_error_naming_it(tmp_path, text, key):
    cfg = write(tmp_path / "homefeed.toml", text)
    with pytest.raises(ConfigError) as info:
        config.load(cfg)
    message = str(info.value)
    assert f"{key}: unknown key" in message
    assert str(cfg) in message


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("[sim]\nusers = 'many'\n", "sim.users", "'many'"),
        ("[sim]\nusers = 0\n", "sim.users", "0"),
        ("[backends]\netl = 'postgres'\n", "backends.etl", "'postgres'"),
        ("[sim.position_bias]\ncurve = [1.0, 0.0]\n", "sim.position_bias.curve.1", "0.0"),
        ("[sim]\nstart_date = 'yesterday'\n", "sim.start_date", "'yesterday'"),
        ("[checks]\nbaseline_days = 0\n", "checks.baseline_days", "0"),
        ("[checks.thresholds]\njs_error = 1.5\n", "checks.thresholds.js_error", "1.5"),
        ("[checks.thresholds]\nmin_segment_rows = 'many'\n", "checks.thresholds.min_segment_rows", "'many'"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_key_and_the_value(tmp_path, text, key, value):
    cfg = write(tmp_path / "homefeed.toml", text)
    with pytest.raises(ConfigError) as info:
        config.load(cfg)
    message = str(info.value)
    assert message.startswith(f"{cfg}: {key}: ")
    assert f"(got {value})" in message


def test_a_warning_threshold_above_its_error_is_an_error_naming_both(tmp_path):
    cfg = write(tmp_path / "homefeed.toml", "[checks.thresholds]\npsi_warning = 0.5\n")
    with pytest.raises(ConfigError) as info:
        config.load(cfg)
    assert str(info.value) == (
        f"{cfg}: checks.thresholds: psi_warning: 0.5 is above psi_error (0.25); a warning must start at or below "
        "its error"
    )


def test_checks_settings_load_and_are_what_the_checks_use(tmp_path):
    text = "[paths]\nchecks = 'qa'\n\n[checks]\nbaseline_days = 28\n\n[checks.thresholds]\npsi_error = 0.3\n"
    settings = config.load(write(tmp_path / "homefeed.toml", text))
    assert (settings.checks.baseline_days, settings.checks.min_baseline_days) == (28, 7)
    assert settings.checks.thresholds.psi_error == 0.3 and settings.checks.thresholds.psi_warning == 0.1
    assert settings.resolved_paths.checks == tmp_path / ".homefeed" / "qa"
    assert checks.Thresholds is config.Thresholds  # one definition: the template and the code cannot drift
    # Shortening the window alone is enough: min_baseline_days is capped at it, not an error.
    assert config.parse({"checks": {"baseline_days": 3}}).checks.baseline_days == 3


def test_invalid_toml_names_the_file(tmp_path):
    cfg = write(tmp_path / "broken.toml", "[sim\nusers = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        config.load(cfg)
    assert str(cfg) in str(info.value)


def test_a_missing_file_is_an_error(tmp_path):
    cfg = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="no such config file") as info:
        config.load(cfg)
    assert str(cfg) in str(info.value)


# --- faults ----------------------------------------------------------------------------------------------------------

FAULTS = """\
[[sim.faults]]
kind = "market_shift"
country = "JP"
hide_shift = 1.0

[[sim.faults]]
kind = "coverage_drop"
table = "impressions"
column = "country"
country = "BR"
from_day = 10

[[sim.faults]]
kind = "logging_change"
action = "closeup"
rename_to = "zoom"

[[sim.faults]]
kind = "volume_drop"
table = "engagements"
share = 0.25

[[sim.faults]]
kind = "delayed_arrival"
day = 6
delay_days = 2
"""


def test_faults_parse_by_kind(tmp_path):
    faults = config.load(write(tmp_path / "homefeed.toml", FAULTS)).sim.faults
    assert [type(f) for f in faults] == [MarketShift, CoverageDrop, LoggingChange, VolumeDrop, DelayedArrival]
    shift, drop, change, volume, delay = faults
    assert (shift.country, shift.hide_shift, shift.closeup_shift) == ("JP", 1.0, 0.0)
    assert (drop.table, drop.column, drop.country) == ("impressions", "country", "BR")
    assert (drop.from_day, drop.share) == (10, 1.0)
    assert (change.action, change.rename_to) == ("closeup", "zoom")
    assert (volume.table, volume.share, volume.country) == ("engagements", 0.25, None)
    assert (delay.day, delay.delay_days, delay.share) == (6, 2, 1.0)


def test_a_fault_of_unknown_kind_is_an_error(tmp_path):
    cfg = write(tmp_path / "homefeed.toml", "[[sim.faults]]\nkind = 'meteor'\n")
    with pytest.raises(ConfigError, match=r"sim\.faults\.0: .*'meteor'"):
        config.load(cfg)


def test_a_fault_in_an_unknown_market_is_an_error(tmp_path):
    cfg = write(tmp_path / "homefeed.toml", "[[sim.faults]]\nkind = 'market_shift'\ncountry = 'FR'\n")
    with pytest.raises(ConfigError, match=r"faults\[0\]\.country: 'FR'"):
        config.load(cfg)


def test_a_fault_may_name_a_market_added_in_the_config(tmp_path):
    text = "[sim.countries]\nFR = 1.0\n\n[[sim.faults]]\nkind = 'market_shift'\ncountry = 'FR'\n"
    settings = config.load(write(tmp_path / "homefeed.toml", text))
    assert settings.sim.countries == {"FR": 1.0}
    assert settings.sim.faults[0].country == "FR"


# --- $HOMEFEED_CONFIG ------------------------------------------------------------------------------------------------


def test_homefeed_config_env_is_honoured(tmp_path, monkeypatch):
    env_cfg = write(tmp_path / "env" / "custom.toml", "[sim]\nusers = 321\n")
    write(tmp_path / "cwd" / "homefeed.toml", "[sim]\nusers = 111\n")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOMEFEED_CONFIG", str(env_cfg))
    settings = config.load(None)
    assert settings.sim.users == 321
    assert settings.resolved_paths.lake == tmp_path / "env" / ".homefeed" / "lake"
    # An explicit path still wins over the environment.
    assert config.load(tmp_path / "cwd" / "homefeed.toml").sim.users == 111


def test_homefeed_config_env_pointing_nowhere_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOMEFEED_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(None)


# --- position bias ---------------------------------------------------------------------------------------------------


def test_examination_follows_a_power_law_by_default():
    positions = np.array([1, 2, 3, 10, 40])
    np.testing.assert_allclose(PositionBias().examination(positions), (1.0 / positions) ** 0.7)
    np.testing.assert_allclose(PositionBias(eta=1.5).examination(positions), (1.0 / positions) ** 1.5)
    np.testing.assert_allclose(PositionBias(eta=0.0).examination(positions), np.ones(5))


def test_examination_uses_an_explicit_curve_holding_the_last_value():
    bias = PositionBias(curve=[1.0, 0.8, 0.65, 0.55])
    np.testing.assert_allclose(bias.examination(np.array([1, 2, 3, 4, 5, 30])), [1.0, 0.8, 0.65, 0.55, 0.55, 0.55])


def test_examination_curve_comes_from_the_project_file(tmp_path):
    cfg = write(tmp_path / "homefeed.toml", "[sim.position_bias]\ncurve = [0.9, 0.3]\n")
    bias = config.load(cfg).sim.position_bias
    np.testing.assert_allclose(bias.examination(np.array([1, 2, 3])), [0.9, 0.3, 0.3])
