"""Settings of the pipeline's stages: where things live, which backends, ETL, features, datasets, checks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from homefeed.config.base import Section
from homefeed.schema import LABELS


class Paths(Section):
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
    compiled: Path = Path("compiled")  # serving's compiled trees, by model text and CPU (a cache: safe to delete)

    def resolve(self, base: Path) -> Paths:
        root = self.root if self.root.is_absolute() else (base / self.root)
        values = {name: (p if p.is_absolute() else root / p) for name, p in self if name != "root"}
        return Paths(root=root, **values)


class Backends(Section):
    etl: Literal["duckdb", "spark"] = "duckdb"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    spark_master: str = "local[2]"


class EtlSettings(Section):
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


#: The entities a declared feature describes; its name starts with the entity (``user_item_`` for the pair).
DECLARED_ENTITIES = ("context", "user", "item", "user_item")
#: The tables a declared feature may read: their plain columns, and their map column (one value per ``key``).
DECLARED_SOURCES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "impressions": (("position", "score", "propensity", "surface", "country"), "served_features"),
    "users": (("country", "language"), "attributes"),
    "items": (("topic", "creator_id"), "content"),
    "engagements": (("dwell",), None),
}
DECLARED_MAP = "served_features"  # the impression's map: context features and the user x item cross read it
#: What a declared feature does with its source: the value (as a number or a category), a reduction over a
#: map's values, or an aggregation over a window of past events ending ``lag`` before the impression.
VALUES = ("raw", "categorical")
REDUCTIONS = ("count_nonzero", "sum", "max")
AGGREGATIONS = ("count", "rate", "mean", "last")
DECLARED_TRANSFORMATIONS = (*VALUES, *REDUCTIONS, *AGGREGATIONS)
#: Where the entity's value is known: the impression's own columns (no lag), or its table's latest row.
ENTITY_TABLE = {"context": "impressions", "user": "users", "item": "items"}


class DeclaredFeature(Section):
    """A feature declared in ``homefeed.toml`` from the logs' own columns (``[[features.declared]]``).

    Four shapes, each checked here before anything runs:

    - **context**: a value the impression itself carries (``impressions.<column>``, a ``key`` of
      ``impressions.served_features``, or a reduction over that map's values).  Known at the impression: no lag,
      no TTL; whether the logging system computed it from the past only is the source's promise, which the
      walkthrough checks for the Open Bandit Dataset.
    - **user / item attributes**: ``users.<column>``, a ``key`` of ``users.attributes``, ``items.<column>`` or a
      ``key`` of ``items.content``, as a number (``raw``) or a category, as the table's latest row says.
    - **user x item cross**: ``cross`` names a key of ``impressions.served_features`` by the shown item
      (``"user-item_affinity_{item_id}"``), the affinity column named by the item; known at the impression.
    - **aggregations** (any entity but context): ``count``, ``rate``, ``mean`` or ``last`` over the entity's
      past ``impressions`` or ``engagements`` in a window of ``window_days`` ending ``lag_minutes`` before the
      impression (``rate``: engagements of ``action`` per impression).  They flow through the ETL's daily
      snapshots, the point-in-time join and the online store like the built-in features.

    Categories reach LightGBM as categorical features and the NN as hashed embeddings; a value not seen in
    training shares one bucket.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    entity: Literal["context", "user", "item", "user_item"] = "context"
    source: str  # "<table>.<column>", or "<table>" for count and rate
    key: str | None = None  # a key of the source's map column
    cross: str | None = Field(None, min_length=1)  # user_item: a served_features key template with "{item_id}"
    transformation: Literal["raw", "categorical", "count_nonzero", "sum", "max", "count", "rate", "mean", "last"] = (
        "raw"
    )
    window_days: int | None = None  # aggregations: how many days of events, >= 1
    lag_minutes: int | None = Field(None, ge=0)  # aggregations: default [features] lag_minutes
    ttl_hours: int | None = Field(None, ge=1)  # user/item/user_item: default [features] ttl_hours
    action: str | None = None  # count/rate over engagements: which action
    default: float = Field(0.0, allow_inf_nan=False)  # where the value is absent (a category: the shared bucket)
    description: str = ""

    @property
    def table(self) -> str:
        return self.source.partition(".")[0]

    @property
    def column(self) -> str | None:
        """The column read, or None for ``count``/``rate`` over a whole table."""
        return self.source.partition(".")[2] or None

    @property
    def is_aggregation(self) -> bool:
        return self.transformation in AGGREGATIONS

    @property
    def at_impression(self) -> bool:
        """Known from the impression's own columns (context, the cross): no lag, no TTL, no snapshot."""
        return self.entity == "context" or (self.cross is not None and not self.is_aggregation)

    @model_validator(mode="after")
    def _check(self) -> DeclaredFeature:
        where = f"declared feature {self.name!r}"
        prefix = f"{self.entity}_"
        if not self.name.startswith(prefix) or (self.entity == "user" and self.name.startswith("user_item_")):
            raise ValueError(f"{where}: the name must start with its entity, {prefix}")
        if self.is_aggregation and self.entity == "context":
            raise ValueError(
                f"{where}: a context feature is the impression's own value; "
                "aggregations describe user, item or user_item"
            )
        table, column = self.table, self.column
        if table not in DECLARED_SOURCES:
            raise ValueError(
                f"{where}: unknown table in source {self.source!r}; expected one of {', '.join(DECLARED_SOURCES)}"
            )
        columns, map_column = DECLARED_SOURCES[table]
        readable = (*columns, *([map_column] if map_column else []))
        if column is not None and column not in readable:
            known = ", ".join(f"{table}.{c}" for c in readable)
            raise ValueError(f"{where}: unknown column in source {self.source!r}; {table} offers {known}")
        if column is None and self.transformation not in ("count", "rate"):
            raise ValueError(f"{where}: source {self.source!r} names no column; only count and rate read a whole table")
        is_map = column is not None and column == map_column
        if self.key is not None and not is_map:
            raise ValueError(f"{where}: key {self.key!r} needs a map column as source ({table}.{map_column or '-'})")
        if self.cross is not None:
            if self.entity != "user_item" or self.source != f"impressions.{DECLARED_MAP}":
                raise ValueError(f"{where}: a cross is a user_item feature over impressions.{DECLARED_MAP}")
            if "{item_id}" not in self.cross or self.key is not None:
                raise ValueError(
                    f"{where}: cross {self.cross!r} must name the key by the shown item: '{{item_id}}', no key"
                )
        if self.transformation in REDUCTIONS:
            if not is_map or self.key is not None or self.entity != "context":
                raise ValueError(
                    f"{where}: {self.transformation} reduces the values of impressions.{DECLARED_MAP}: "
                    "a context feature, no key"
                )
        elif is_map and self.key is None and self.cross is None:
            raise ValueError(f"{where}: {self.source} is a map: give a key (or a cross), or reduce its values")
        if self.is_aggregation:
            if table not in ("impressions", "engagements"):
                raise ValueError(
                    f"{where}: {self.transformation} aggregates past impressions or engagements, not {table}"
                )
            if self.window_days is None or self.window_days < 1:
                raise ValueError(f"{where}: {self.transformation} needs window_days >= 1 (got {self.window_days})")
            if self.transformation == "rate" and (table != "engagements" or self.action is None):
                raise ValueError(
                    f"{where}: rate counts engagements of an action per impression: source 'engagements', action = ..."
                )
            if self.transformation in ("mean", "last") and column is None:
                raise ValueError(f"{where}: {self.transformation} needs a column")
        else:
            for knob in ("window_days", "lag_minutes", "action"):
                if getattr(self, knob) is not None:
                    raise ValueError(
                        f"{where}: {knob} belongs to aggregations (count, rate, mean, last), not {self.transformation}"
                    )
            if self.cross is None:
                expected = ENTITY_TABLE.get(self.entity)
                if table != expected:
                    raise ValueError(
                        f"{where}: a {self.entity} feature's value comes from "
                        f"{expected or 'an aggregation or a cross'}, "
                        f"not {table}"
                    )
        if self.action is not None:
            from homefeed.schema import ACTIONS

            if table != "engagements" or self.action not in ACTIONS:
                raise ValueError(f"{where}: action {self.action!r} filters engagements; one of {', '.join(ACTIONS)}")
        if self.at_impression and self.ttl_hours is not None:
            raise ValueError(f"{where}: a value known at the impression has no TTL")
        return self


class FeatureSettings(Section):
    """Which features the models read, and when a value counts as known."""

    set: str = "default"  # the feature set datasets and models use: default, all, or one of [features.sets]
    lag_minutes: int = Field(60, ge=0)  # an ETL snapshot valid from midnight is readable this much later
    ttl_hours: int = Field(36, ge=1)  # older values are missing, offline and in the online store
    missing_flags: bool = True  # add an <entity>_missing column per source
    sets: dict[str, list[str]] = Field(default_factory=dict)  # name -> feature names
    skew_tolerance: float = Field(1e-4, ge=0.0)  # relative difference still counted as equal
    skew_mismatch_share: float = Field(0.01, ge=0.0, le=1.0)  # more differing rows flag a feature
    skew_psi: float = Field(0.1, gt=0.0)  # or a served distribution this far from the offline one
    # `features materialize` refuses (without --force) a snapshot with fewer keys than this share of the store's
    materialize_min_share: float = Field(0.5, ge=0.0, le=1.0)
    declared: list[DeclaredFeature] = Field(default_factory=list)  # [[features.declared]]: from your own columns

    @model_validator(mode="after")
    def _distinct_declared(self) -> FeatureSettings:
        names = [d.name for d in self.declared]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"declared: two features named {', '.join(map(repr, twice))}")
        return self


#: Row columns a ``[dataset.sampling.segment_weights]`` key may name (``"country=BR" = 2.0``).
SEGMENT_COLUMNS = ("country", "surface", "model_version", "topic")


class DatasetSplit(Section):
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


class DatasetSampling(Section):
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


class DatasetSettings(Section):
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


class Thresholds(Section):
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


class Checks(Section):
    """Daily data checks (``homefeed data check --date D``): the baseline a day is compared with, and thresholds."""

    #: Trailing days (before the checked day) whose data form the baseline; two weeks hold the weekly cycle twice.
    baseline_days: int = Field(14, ge=1, le=366)
    #: With fewer baseline days than this (a young lake, a gap) the checks still run, with a warning finding:
    #: a baseline shorter than a week does not cover the weekly cycle, so volume findings may be the weekend.
    #: Capped at ``baseline_days``, so shortening the window alone never needs this changed too.
    min_baseline_days: int = Field(7, ge=0)
    thresholds: Thresholds = Thresholds()
