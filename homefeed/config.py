"""The project file, ``homefeed.toml``, loaded into typed settings.

Every knob a stage reads lives here, so a backend switch (DuckDB → Spark,
SQLite → Redis) is a line in the project file and never a code change.
Unknown keys are errors: a misspelt setting silently falling back to its
default is how a broken launch goes unnoticed.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from homefeed.files import atomic_write_text
from homefeed.schema import LABELS

CONFIG_FILE = "homefeed.toml"


class ConfigError(ValueError):
    """The project file is missing, unreadable or holds a bad value; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(_Section):
    """Where things live; relative paths are resolved against ``root``, itself relative to the project file."""

    root: Path = Path(".homefeed")
    lake: Path = Path("lake")
    quarantine: Path = Path("quarantine")
    sim_logs: Path = Path("sim")
    online_store: Path = Path("online.sqlite")
    registry: Path = Path("registry.sqlite")
    models: Path = Path("models")
    reports: Path = Path("reports")
    etl: Path = Path("etl")
    checks: Path = Path("checks")
    datasets: Path = Path("datasets")

    def resolve(self, base: Path) -> Paths:
        root = self.root if self.root.is_absolute() else (base / self.root)
        values = {name: (p if p.is_absolute() else root / p) for name, p in self if name != "root"}
        return Paths(root=root, **values)


class Backends(_Section):
    etl: Literal["duckdb", "spark"] = "duckdb"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    spark_master: str = "local[2]"


class EtlSettings(_Section):
    """The daily aggregations' windows and smoothing."""

    windows: list[Annotated[int, Field(ge=1, le=365)]] = Field(default_factory=lambda: [1, 7, 28], min_length=1)
    half_life_days: float = Field(7.0, gt=0.0)  # decay of user x topic / creator affinities
    prior_strength: float = Field(100.0, ge=0.0)  # exposures of the global rate added to each item/creator rate
    pair_prior_strength: float = Field(5.0, ge=0.0)  # impressions of the user's rate added to each affinity
    memory_limit: str = Field("3GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")  # DuckDB spills past it

    @model_validator(mode="after")
    def _windows_distinct_ascending(self) -> EtlSettings:
        if self.windows != sorted(set(self.windows)):
            raise ValueError(f"windows: must be distinct and ascending (got {self.windows})")
        return self


class FeatureSettings(_Section):
    """Which features the models read, and when a value counts as known."""

    set: str = "default"  # the feature set datasets and models use: default, all, or one of [features.sets]
    lag_minutes: int = Field(60, ge=0)  # an ETL snapshot valid from midnight is readable this much later
    ttl_hours: int = Field(36, ge=1)  # older values are missing, offline and in the online store
    missing_flags: bool = True  # add an <entity>_missing column per source
    sets: dict[str, list[str]] = Field(default_factory=dict)  # name -> feature names
    skew_tolerance: float = Field(1e-4, ge=0.0)  # relative difference still counted as equal
    skew_mismatch_share: float = Field(0.01, ge=0.0, le=1.0)  # more differing rows flag a feature
    skew_psi: float = Field(0.1, gt=0.0)  # or a served distribution this far from the offline one


#: Row columns a ``[dataset.sampling.segment_weights]`` key may name (``"country=BR" = 2.0``).
SEGMENT_COLUMNS = ("country", "surface", "model_version", "topic")


class DatasetSplit(_Section):
    """A time-based split of the impressions' days: test is the latest, validation just before it, train the rest.

    The explicit first days, when given, replace the day counts: a split that must stay put while the range grows.
    """

    validation_days: int = Field(1, ge=0)
    test_days: int = Field(1, ge=0)
    validation_start: dt.date | None = None
    test_start: dt.date | None = None

    @model_validator(mode="after")
    def _validation_before_test(self) -> DatasetSplit:
        if self.validation_start and self.test_start and self.validation_start >= self.test_start:
            raise ValueError(f"validation_start: {self.validation_start} is not before test_start ({self.test_start})")
        return self


class DatasetSampling(_Section):
    """Which impressions a dataset keeps and what each row weighs; every choice is a hash of the row and the seed."""

    negative_rate: float = Field(1.0, gt=0.0, le=1.0)  # share kept of rows with no positive label; weight x 1/rate
    max_per_user_per_day: int = Field(0, ge=0)  # 0 = no cap; capped rows are dropped, not re-weighted
    segment_weights: dict[str, Annotated[float, Field(gt=0.0)]] = Field(default_factory=dict)  # "column=value" -> w
    exploration_only: bool = False  # keep only impressions a randomized choice placed: 0 < propensity < 1
    ips: bool = False  # weight x 1/propensity, clipped at ips_max_weight
    ips_max_weight: float = Field(100.0, ge=1.0)

    @model_validator(mode="after")
    def _segments_name_known_columns(self) -> DatasetSampling:
        for key in self.segment_weights:
            column, sep, value = key.partition("=")
            if not sep or not value or column not in SEGMENT_COLUMNS:
                raise ValueError(
                    f"segment_weights: {key!r} is not 'column=value' with a column among {', '.join(SEGMENT_COLUMNS)}"
                )
        return self


class DatasetSettings(_Section):
    """Defaults of every training dataset (``homefeed dataset build``); a dataset file overrides any of them."""

    feature_set: str | None = None  # default: [features] set
    labels: list[str] = Field(default_factory=lambda: ["engaged", "negative"], min_length=1)
    seed: int = 0
    split: DatasetSplit = DatasetSplit()
    sampling: DatasetSampling = DatasetSampling()

    @model_validator(mode="after")
    def _labels_known(self) -> DatasetSettings:
        unknown = [name for name in self.labels if name not in LABELS]
        if unknown:
            raise ValueError(f"labels: unknown label(s) {', '.join(map(repr, unknown))}; expected {', '.join(LABELS)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels: a label is listed twice ({', '.join(self.labels)})")
        return self


class PositionBias(_Section):
    """Examination probability by slot: ``curve`` if given, else ``(1 / position) ** eta``."""

    eta: float = Field(0.7, ge=0.0, le=5.0)
    curve: list[Annotated[float, Field(gt=0.0, le=1.0)]] | None = None

    def examination(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions)
        if self.curve:
            curve = np.asarray(self.curve, dtype=np.float64)
            return curve[np.minimum(positions, len(curve)) - 1]
        return np.power(positions.astype(np.float64), -self.eta)


class Behaviour(_Section):
    """Weights of the engagement model (logit scale).  Defaults give a feed-like funnel."""

    closeup_base: float = -1.6
    affinity: float = 1.0  # weight of log(topics * interest) on closeups and saves
    quality: float = 2.0
    clickbait_closeup: float = 1.2  # click-bait attracts attention ...
    click_base: float = -0.8
    clickbait_click: float = 2.0  # ... and clicks ...
    save_base: float = -1.2
    clickbait_save: float = -2.5  # ... but few saves
    hide_base: float = -4.8
    clickbait_hide: float = 2.0  # ... and more hides
    unsafe_hide: float = 2.5
    report_given_hide: float = -2.0
    unsafe_report: float = 2.5
    freshness: float = 0.8  # boost for a brand-new item, decaying with age
    freshness_days: float = 2.0
    fatigue: float = 0.6  # logit penalty per earlier exposure of the same item to the user
    # Satisfaction: what a session is worth to the user, and how much it moves tomorrow's visit.
    value_save: float = 1.0
    value_click: float = 0.25
    regret_clickbait_click: float = 0.9  # a click on click-bait disappoints
    cost_hide: float = 1.0
    cost_report: float = 2.0
    cost_unsafe_seen: float = 0.3
    satisfaction_memory: float = Field(0.6, ge=0.0, lt=1.0)
    return_sensitivity: float = 1.5


class Sessions(_Section):
    depth_mean: float = Field(18.0, gt=0.0)  # rendered slots per session; heavier users scroll further
    depth_max: int = Field(40, ge=1, le=500)
    weekly_seasonality: float = Field(0.25, ge=0.0, le=3.0)  # visit logit swing, weekend high
    surface: str = "home"


class MarketShift(_Section):
    """A market that behaves differently, from ``from_day`` on (day 0 = always)."""

    kind: Literal["market_shift"]
    country: str
    from_day: int = Field(0, ge=0)
    closeup_shift: float = 0.0
    hide_shift: float = 0.0
    visit_shift: float = 0.0


class CoverageDrop(_Section):
    """A column of a table goes null for a share of rows of one market (all if unset) from ``from_day``."""

    kind: Literal["coverage_drop"]
    table: Literal["users", "items", "impressions", "engagements"]
    column: str
    from_day: int = Field(0, ge=0)
    country: str | None = None
    share: float = Field(1.0, gt=0.0, le=1.0)


class LoggingChange(_Section):
    """From ``from_day`` an action is logged under another name, or (``rename_to`` unset) not at all."""

    kind: Literal["logging_change"]
    action: Literal["closeup", "click", "save", "hide", "report"]
    from_day: int = Field(0, ge=0)
    rename_to: str | None = None


class VolumeDrop(_Section):
    """A share of a table's rows is lost in logging (for one market if set) from ``from_day``."""

    kind: Literal["volume_drop"]
    table: Literal["impressions", "engagements"]
    from_day: int = Field(0, ge=0)
    country: str | None = None
    share: float = Field(0.5, gt=0.0, le=1.0)


class DelayedArrival(_Section):
    """A share of day ``day``'s events arrives ``delay_days`` late (written to the lake later)."""

    kind: Literal["delayed_arrival"]
    day: int = Field(ge=0)
    delay_days: int = Field(1, ge=1)
    share: float = Field(1.0, gt=0.0, le=1.0)


Fault = Annotated[MarketShift | CoverageDrop | LoggingChange | VolumeDrop | DelayedArrival, Field(discriminator="kind")]

DEFAULT_COUNTRIES = {"US": 0.35, "BR": 0.2, "IN": 0.15, "DE": 0.1, "JP": 0.1, "MX": 0.1}


class SimSettings(_Section):
    seed: int = Field(7, ge=0)
    users: int = Field(20_000, ge=1)
    creators: int = Field(2_000, ge=1)
    topics: int = Field(24, ge=2, le=256)
    items_per_day: int = Field(3_000, ge=1)
    item_lifetime_days: int = Field(30, ge=1)
    start_date: dt.date = dt.date(2026, 3, 2)
    new_user_share: float = Field(0.15, ge=0.0, le=1.0)  # users who sign up during the run
    interest_concentration: float = Field(0.15, gt=0.0)  # Dirichlet alpha; small = sparse interests
    unsafe_share: float = Field(0.03, ge=0.0, le=1.0)
    content_noise: float = Field(0.15, ge=0.0)  # std of content features around the hidden truth
    countries: dict[str, Annotated[float, Field(gt=0.0)]] = Field(default_factory=lambda: dict(DEFAULT_COUNTRIES))
    position_bias: PositionBias = PositionBias()
    sessions: Sessions = Sessions()
    behaviour: Behaviour = Behaviour()
    faults: list[Fault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _faults_name_known_markets(self) -> SimSettings:
        for i, fault in enumerate(self.faults):
            country = getattr(fault, "country", None)
            if country is not None and country not in self.countries:
                raise ValueError(f"faults[{i}].country: {country!r} is not one of the markets {sorted(self.countries)}")
        return self


class Thresholds(_Section):
    """When a daily check's finding is a warning or an error (``[checks.thresholds]``).

    This model *is* the thresholds type :mod:`homefeed.data.checks` judges with, so the project file and the
    checks cannot disagree on a name or a default.  Each limit is raised by the sampling noise of the sizes
    compared, so small segments do not cry wolf while large ones are held to the configured value.
    """

    #: Relative change of the row count vs the baseline's mean daily count.  Feeds swing ±10-20% over the
    #: week (weekends are busy), so a warning starts just past that and an error at a loss no season explains.
    volume_change_warning: float = Field(0.2, gt=0.0)
    volume_change_error: float = Field(0.4, gt=0.0)
    #: Absolute increase of a column's null rate (0.02 = 2 percentage points), overall and per segment.  A
    #: 10-point jump is never organic: something stopped logging the column.
    null_rate_increase_warning: float = Field(0.02, gt=0.0, le=1.0)
    null_rate_increase_error: float = Field(0.10, gt=0.0, le=1.0)
    #: Relative change of the distinct users / items / requests of the day vs the baseline's daily mean.
    distinct_change_warning: float = Field(0.2, gt=0.0)
    distinct_change_error: float = Field(0.4, gt=0.0)
    #: Population stability index: the industry's rule of thumb (< 0.1 stable, 0.1-0.25 moderate, > 0.25 major).
    psi_warning: float = Field(0.1, gt=0.0)
    psi_error: float = Field(0.25, gt=0.0)
    #: Jensen–Shannon distance, base 2.  For small shifts PSI ≈ 8 ln 2 · JS², so 0.1 and 0.2 sit at PSI ≈
    #: 0.055 and 0.22; JS stays bounded where PSI explodes (a category appearing or vanishing).
    js_warning: float = Field(0.1, gt=0.0, le=1.0)
    js_error: float = Field(0.2, gt=0.0, le=1.0)
    #: Segments (and columns) with fewer rows than this, in the day or the baseline, are not judged.
    min_segment_rows: int = Field(200, ge=1)
    #: Standard deviations of sampling noise added to every threshold (see :mod:`homefeed.data.drift`).
    noise_z: float = Field(3.0, ge=0.0)
    #: Numeric columns are cut into this many baseline-quantile bins; categorical columns keep at most
    #: ``max_categories`` categories (the rest are pooled as "(other)").
    bins: int = Field(10, ge=2)
    max_categories: int = Field(30, ge=1)
    #: A baseline category missing from the day is an error once the day would have expected this many rows
    #: of it (P(0 rows | Poisson(20)) ≈ 2e-9: not chance).
    vanished_min_expected: float = Field(20.0, gt=0.0)
    #: A category unseen in the baseline is a warning from this share of the day's rows.
    new_category_share: float = Field(0.01, gt=0.0, le=1.0)
    #: A numeric shift whose quantiles move less than this share of the column's magnitude is reported as
    #: info only, however significant: a 1 / catalogue-size propensity drifting 0.2% a day is no data problem.
    numeric_materiality: float = Field(0.01, ge=0.0)

    @model_validator(mode="after")
    def _warning_before_error(self) -> Thresholds:
        for name in type(self).model_fields:
            if name.endswith("_warning"):
                error = name.removesuffix("_warning") + "_error"
                if getattr(self, name) > getattr(self, error):
                    raise ValueError(
                        f"{name}: {getattr(self, name)!r} is above {error} ({getattr(self, error)!r}); "
                        "a warning must start at or below its error"
                    )
        return self


class Checks(_Section):
    """Daily data checks (``homefeed data check --date D``): the baseline a day is compared with, and thresholds."""

    #: Trailing days (before the checked day) whose data form the baseline; two weeks hold the weekly cycle twice.
    baseline_days: int = Field(14, ge=1, le=366)
    #: With fewer baseline days than this (a young lake, a gap) the checks still run, with a warning finding:
    #: a baseline shorter than a week does not cover the weekly cycle, so volume findings may be the weekend.
    #: Capped at ``baseline_days``, so shortening the window alone never needs this changed too.
    min_baseline_days: int = Field(7, ge=0)
    thresholds: Thresholds = Thresholds()


class Settings(_Section):
    paths: Paths = Paths()
    backends: Backends = Backends()
    etl: EtlSettings = EtlSettings()
    features: FeatureSettings = FeatureSettings()
    sim: SimSettings = SimSettings()
    checks: Checks = Checks()
    dataset: DatasetSettings = DatasetSettings()
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        """Directory of the project file; relative paths resolve against it."""
        return self._base_dir

    @property
    def resolved_paths(self) -> Paths:
        return self.paths.resolve(self.base_dir)


def _describe(error: dict) -> str:
    loc = ".".join(str(p) for p in error["loc"] if not (isinstance(p, str) and p in _FAULT_KINDS))
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown key"
    else:
        msg = msg.removeprefix("Value error, ")  # our validators' messages name the key themselves
        if "input" in error and not isinstance(error["input"], dict | list):
            msg = f"{msg} (got {error['input']!r})"
    return f"{loc}: {msg}" if loc else msg


_FAULT_KINDS = {"market_shift", "coverage_drop", "logging_change", "volume_drop", "delayed_arrival"}


def describe_errors(source: str, exc: ValidationError) -> str:
    """One line for a failed validation: the file, the first dotted key with its problem and value, how many more."""
    errors = exc.errors()
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {_describe(errors[0])}{more}"


def parse(data: dict, source: str = CONFIG_FILE, base_dir: Path | None = None) -> Settings:
    """Validate a parsed project file; errors name the file, the key and what was expected."""
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(source, exc)) from None
    except TypeError as exc:  # e.g. a section given as a scalar
        raise ConfigError(f"{source}: {exc}") from None
    settings._base_dir = base_dir or Path.cwd()
    return settings


def load(path: str | Path | None = None) -> Settings:
    """Load ``path``, else ``$HOMEFEED_CONFIG``, else ``./homefeed.toml`` if present, else the defaults."""
    if path is None:
        path = os.environ.get("HOMEFEED_CONFIG") or (CONFIG_FILE if Path(CONFIG_FILE).exists() else None)
    if path is None:
        return Settings()
    path = Path(path)
    return parse(read_toml(path), source=str(path), base_dir=path.resolve().parent)


def read_toml(path: str | Path, kind: str = "config file") -> dict:
    """A TOML file's contents; a missing, unreadable or malformed file is one ConfigError naming it."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {kind}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


DEFAULT_TOML = """\
# homefeed project file.  Every key is optional; the values shown are the defaults.
# Relative paths resolve against paths.root, itself relative to this file.

[paths]
root = ".homefeed"              # working directory of the project
lake = "lake"                   # partitioned Parquet: users, items, impressions, engagements
quarantine = "quarantine"       # rows that failed their contract, with the reason
sim_logs = "sim"                # logs written by the simulator
online_store = "online.sqlite"  # online feature store (SQLite backend)
registry = "registry.sqlite"    # model registry metadata: versions, lineage, aliases and their history
models = "models"               # the registered models' files, one folder per version
reports = "reports"             # launch reviews, as JSON and HTML
etl = "etl"                     # daily feature sources computed from the lake
checks = "checks"               # findings of the daily data checks, by date
datasets = "datasets"           # versioned training datasets: <id>/train|validation|test.parquet + manifest.json

[backends]
etl = "duckdb"                  # duckdb | spark
online_store = "sqlite"         # sqlite | redis
redis_url = "redis://127.0.0.1:6379/0"
spark_master = "local[2]"       # with etl = "spark": local[N], spark://host:7077, yarn, ...

[etl]                           # daily aggregations of the lake: item, creator, user, user x topic/creator
windows = [1, 7, 28]            # trailing windows in days; counts and rates are kept for each
half_life_days = 7.0            # decay of user x topic and user x creator affinities
prior_strength = 100.0          # exposures of the global rate blended into every item and creator rate
pair_prior_strength = 5.0       # impressions of the user's own rate blended into every affinity
memory_limit = "3GB"            # DuckDB engine: past this, joins and aggregations spill to <paths.etl>/.spill

[features]                      # what the models read; `homefeed features list` shows every feature
set = "default"                 # default | all | a name under [features.sets]
lag_minutes = 60                # an ETL snapshot valid from midnight is readable this much later
ttl_hours = 36                  # older values count as missing, offline and in the online store
missing_flags = true            # add an <entity>_missing column per source (cold start, late ETL)
skew_tolerance = 0.0001         # train/serve skew: relative difference still counted as equal
skew_mismatch_share = 0.01      # a feature differing on more rows than this is flagged
skew_psi = 0.1                  # ... or whose served distribution is this far (PSI) from the offline one

[features.sets]                 # your own sets: name = [feature names]
# small = ["item_save_rate_7d", "user_topic_affinity", "context_item_age_hours"]

[sim]                           # the simulated world, deterministic for a seed
seed = 7
users = 20000
creators = 2000
topics = 24
items_per_day = 3000
item_lifetime_days = 30         # items older than this leave the catalogue
start_date = 2026-03-02
new_user_share = 0.15           # share of users who sign up during the run
interest_concentration = 0.15   # Dirichlet alpha of user interests; small = sparse
unsafe_share = 0.03             # share of items that are spam or racy
content_noise = 0.15            # noise of content features around the hidden truth

[sim.countries]                 # markets and their share of users
US = 0.35
BR = 0.2
IN = 0.15
DE = 0.1
JP = 0.1
MX = 0.1

[sim.position_bias]             # examination probability by slot
eta = 0.7                       # (1 / position) ** eta, unless a curve is given
# curve = [1.0, 0.8, 0.65, 0.55]  # explicit per-slot values; the last one holds for deeper slots

[sim.sessions]
depth_mean = 18.0               # rendered slots per session
depth_max = 40
weekly_seasonality = 0.25       # swing of the visit logit over the week (weekends high)
surface = "home"

[sim.behaviour]                 # engagement model weights, logit scale
closeup_base = -1.6
affinity = 1.0
quality = 2.0
clickbait_closeup = 1.2
click_base = -0.8
clickbait_click = 2.0
save_base = -1.2
clickbait_save = -2.5
hide_base = -4.8
clickbait_hide = 2.0
unsafe_hide = 2.5
report_given_hide = -2.0
unsafe_report = 2.5
freshness = 0.8
freshness_days = 2.0
fatigue = 0.6
value_save = 1.0
value_click = 0.25
regret_clickbait_click = 0.9
cost_hide = 1.0
cost_report = 2.0
cost_unsafe_seen = 0.3
satisfaction_memory = 0.6
return_sensitivity = 1.5

# Fault injection, to prove checks and monitors catch what breaks in real logs.
# [[sim.faults]]
# kind = "coverage_drop"        # a column goes null for one market
# table = "impressions"
# column = "country"
# country = "BR"
# from_day = 10
# share = 1.0
# [[sim.faults]]
# kind = "logging_change"       # an action renamed (rename_to = "...") or dropped
# action = "closeup"
# from_day = 5
# [[sim.faults]]
# kind = "volume_drop"          # rows lost in logging
# table = "impressions"
# share = 0.5
# from_day = 8
# [[sim.faults]]
# kind = "delayed_arrival"      # a day's events land late
# day = 6
# delay_days = 2
# [[sim.faults]]
# kind = "market_shift"         # a market that behaves differently
# country = "JP"
# hide_shift = 1.0

[checks]                        # daily data checks: homefeed data check --date D
baseline_days = 14              # trailing days a day is compared with
min_baseline_days = 7           # a shorter baseline (young lake, gap) runs with a warning; at most baseline_days

[checks.thresholds]             # warning and error levels; each is raised by the sampling noise of the sizes
volume_change_warning = 0.2     # relative change of rows vs the baseline's daily mean, overall and per market
volume_change_error = 0.4
null_rate_increase_warning = 0.02  # absolute rise of a column's null rate, overall and per segment
null_rate_increase_error = 0.1
distinct_change_warning = 0.2   # relative change of distinct users, items, requests
distinct_change_error = 0.4
psi_warning = 0.1               # population stability index of a column's distribution
psi_error = 0.25
js_warning = 0.1                # Jensen-Shannon distance (base 2)
js_error = 0.2
min_segment_rows = 200          # smaller segments (in the day or the baseline) are not judged
noise_z = 3.0                   # standard deviations of sampling noise added to every threshold
bins = 10                       # baseline-quantile bins of a numeric column
max_categories = 30             # categories kept per column; the rest pooled as "(other)"
vanished_min_expected = 20.0    # a missing category is an error once this many rows of it were expected
new_category_share = 0.01       # a category new to the day is a warning from this share of rows
numeric_materiality = 0.01      # numeric shifts moving quantiles less than this share are info only

[dataset]                       # defaults of `homefeed dataset build`; a dataset file (--spec) overrides any key
# feature_set = "default"       # default: [features] set
labels = ["engaged", "negative"]  # from: engaged, saved, clicked, negative (each with its attribution window)
seed = 0                        # every sampling choice is a hash of (request_id, position, seed)

[dataset.split]                 # by the impressions' day: test = the last days, validation the days before
validation_days = 1
test_days = 1
# validation_start = 2026-03-20   # explicit first days instead of the counts
# test_start = 2026-03-22

[dataset.sampling]
negative_rate = 1.0             # share kept of rows with no positive label; kept ones weigh 1 / rate
max_per_user_per_day = 0        # at most this many impressions per user and day (0 = no cap; not re-weighted)
exploration_only = false        # keep only impressions placed by a randomized choice (0 < propensity < 1)
ips = false                     # weight by 1 / propensity (every kept row needs one) ...
ips_max_weight = 100.0          # ... clipped at this

[dataset.sampling.segment_weights]  # "column=value" = weight, column in country, surface, model_version, topic
# "country=BR" = 2.0
"""


def init(directory: str | Path, overwrite: bool = False) -> Path:
    """Write a commented default ``homefeed.toml`` into ``directory``."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: is a file, not a directory")
    target = directory / CONFIG_FILE
    if target.exists() and not overwrite:
        raise ConfigError(f"{target}: already exists (pass --force to overwrite)")
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, DEFAULT_TOML)
    return target
