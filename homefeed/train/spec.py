"""What a training dataset is made of: the spec (dates, labels, split, sampling), loaded from a file or the config.

A dataset file (``dataset.toml``) holds the keys of the project file's ``[dataset]``
section plus ``start`` and ``end``; every key it leaves out comes from ``[dataset]``,
so a team keeps its conventions in one place and a dataset file says only what is
particular to it.  The spec is frozen and hashed into the dataset's id: two builds
from the same spec and inputs are the same dataset.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from homefeed.config import ConfigError, DatasetSettings, Settings, describe_errors, read_toml
from homefeed.errors import HomefeedError
from homefeed.schema import LABELS, Label

SPLITS = ("train", "validation", "test")


class DatasetError(HomefeedError, ValueError):
    """A dataset cannot be built or found as asked; the message says what to change."""


class DatasetSpec(DatasetSettings):
    """A dataset's full recipe: the impressions of days [start, end] (UTC), with the ``[dataset]`` knobs resolved."""

    start: dt.date
    end: dt.date
    feature_set: str

    @model_validator(mode="after")
    def _a_range_that_splits(self) -> DatasetSpec:
        if self.end < self.start:
            raise ValueError(f"end: {self.end} is before start ({self.start}); the date range is empty")
        split_days(self)  # raises with the split's problem
        return self

    @property
    def targets(self) -> list[Label]:
        return [LABELS[name] for name in self.labels]

    @property
    def attribution_days(self) -> int:
        """Days after ``end`` whose engagements can still label an impression of ``end``."""
        longest = max(label.window for label in self.targets)
        return -(-longest // dt.timedelta(days=1))  # ceiling


def split_days(spec: DatasetSettings | DatasetSpec) -> dict[str, tuple[dt.date, dt.date]]:
    """First and last day of each non-empty split; test holds the latest days, so no split sees its future."""
    start, end, split = spec.start, spec.end, spec.split  # type: ignore[union-attr]
    one = dt.timedelta(days=1)
    test_start = split.test_start or end - dt.timedelta(days=split.test_days) + one
    validation_start = split.validation_start or test_start - dt.timedelta(days=split.validation_days)
    for key, day in (("split.test_start", split.test_start), ("split.validation_start", split.validation_start)):
        if day is not None and not start < day <= end:
            raise ValueError(f"{key}: {day} is not inside ({start}, {end}]: the train split needs the first day")
    if validation_start > test_start:
        raise ValueError(f"split: validation would start on {validation_start}, after test ({test_start})")
    if validation_start <= start:
        days = (end - start).days + 1
        raise ValueError(
            f"split: {start} to {end} holds {days} day(s), not enough for validation from {validation_start} "
            f"and test from {test_start} with at least one training day before them"
        )
    ranges = {"train": (start, validation_start - one), "validation": (validation_start, test_start - one)}
    ranges["test"] = (test_start, end)
    return {name: (first, last) for name, (first, last) in ranges.items() if first <= last}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_spec(
    settings: Settings,
    path: str | Path | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> DatasetSpec:
    """The spec of ``path`` (a dataset file) over the project's ``[dataset]`` defaults; ``start``/``end`` win.

    Errors name the file, the dotted key and the value, as the project file's do.
    """
    data: dict[str, Any] = settings.dataset.model_dump(exclude_unset=False)
    data["feature_set"] = data["feature_set"] or settings.features.set
    source = "[dataset]"
    if path is not None:
        source = str(path)
        try:
            data = _merge(data, read_toml(path, "dataset file"))
        except ConfigError as exc:
            raise DatasetError(str(exc)) from None
    data.update({k: v for k, v in (("start", start), ("end", end)) if v is not None})
    for key, flag in (("start", "--start"), ("end", "--end")):
        if key not in data:
            where = f"in {path} or " if path else ""
            raise DatasetError(f"{source}: {key}: required: give it {where}as {flag} YYYY-MM-DD")
    try:
        return DatasetSpec(**data)
    except ValidationError as exc:
        raise DatasetError(describe_errors(source, exc)) from None


__all__ = ["SPLITS", "DatasetError", "DatasetSpec", "load_spec", "split_days"]
