"""The project file, ``homefeed.toml``, loaded into typed settings.

Every knob a stage reads lives here, so a backend switch (DuckDB → Spark,
SQLite → Redis) is a line in the project file and never a code change.
Unknown keys are errors: a misspelt setting silently falling back to its
default is how a broken launch goes unnoticed.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import PrivateAttr, ValidationError

from homefeed.config.base import ConfigError, Section
from homefeed.config.defaults import CONFIG_FILE, DEFAULT_TOML, init
from homefeed.config.serving import Caps, ServeSettings, Surface
from homefeed.config.sim import (
    DEFAULT_COUNTRIES,
    Behaviour,
    CoverageDrop,
    DelayedArrival,
    LoggingChange,
    MarketShift,
    PositionBias,
    Sessions,
    SimSettings,
    VolumeDrop,
)
from homefeed.config.stages import (
    SEGMENT_COLUMNS,
    Backends,
    Checks,
    DatasetSampling,
    DatasetSettings,
    DatasetSplit,
    EtlSettings,
    FeatureSettings,
    Paths,
    Thresholds,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_COUNTRIES",
    "DEFAULT_TOML",
    "SEGMENT_COLUMNS",
    "Backends",
    "Behaviour",
    "Caps",
    "Checks",
    "ConfigError",
    "CoverageDrop",
    "DatasetSampling",
    "DatasetSettings",
    "DatasetSplit",
    "DelayedArrival",
    "EtlSettings",
    "FeatureSettings",
    "LoggingChange",
    "MarketShift",
    "Paths",
    "PositionBias",
    "ServeSettings",
    "Sessions",
    "Settings",
    "SimSettings",
    "Surface",
    "Thresholds",
    "VolumeDrop",
    "describe_errors",
    "init",
    "load",
    "parse",
    "read_toml",
]


class Settings(Section):
    paths: Paths = Paths()
    backends: Backends = Backends()
    etl: EtlSettings = EtlSettings()
    features: FeatureSettings = FeatureSettings()
    sim: SimSettings = SimSettings()
    checks: Checks = Checks()
    dataset: DatasetSettings = DatasetSettings()
    serve: ServeSettings = ServeSettings()
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
