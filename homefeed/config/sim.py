"""Settings of the simulated world: its size, its users' behaviour, and the faults it can be told to inject."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from homefeed.config.base import Section


class PositionBias(Section):
    """Examination probability by slot: ``curve`` if given, else ``(1 / position) ** eta``."""

    eta: float = Field(0.7, ge=0.0, le=5.0)
    curve: list[Annotated[float, Field(gt=0.0, le=1.0)]] | None = None

    def examination(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions)
        if self.curve:
            curve = np.asarray(self.curve, dtype=np.float64)
            return curve[np.minimum(positions, len(curve)) - 1]
        return np.power(positions.astype(np.float64), -self.eta)


class Behaviour(Section):
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


class Sessions(Section):
    depth_mean: float = Field(18.0, gt=0.0)  # rendered slots per session; heavier users scroll further
    depth_max: int = Field(40, ge=1, le=500)
    weekly_seasonality: float = Field(0.25, ge=0.0, le=3.0)  # visit logit swing, weekend high
    surface: str = "home"


class MarketShift(Section):
    """A market that behaves differently, from ``from_day`` on (day 0 = always)."""

    kind: Literal["market_shift"]
    country: str
    from_day: int = Field(0, ge=0)
    closeup_shift: float = 0.0
    hide_shift: float = 0.0
    visit_shift: float = 0.0


class CoverageDrop(Section):
    """A column of a table goes null for a share of rows of one market (all if unset) from ``from_day``."""

    kind: Literal["coverage_drop"]
    table: Literal["users", "items", "impressions", "engagements"]
    column: str
    from_day: int = Field(0, ge=0)
    country: str | None = None
    share: float = Field(1.0, gt=0.0, le=1.0)


class LoggingChange(Section):
    """From ``from_day`` an action is logged under another name, or (``rename_to`` unset) not at all."""

    kind: Literal["logging_change"]
    action: Literal["closeup", "click", "save", "hide", "report"]
    from_day: int = Field(0, ge=0)
    rename_to: str | None = None


class VolumeDrop(Section):
    """A share of a table's rows is lost in logging (for one market if set) from ``from_day``."""

    kind: Literal["volume_drop"]
    table: Literal["impressions", "engagements"]
    from_day: int = Field(0, ge=0)
    country: str | None = None
    share: float = Field(0.5, gt=0.0, le=1.0)


class DelayedArrival(Section):
    """A share of day ``day``'s events arrives ``delay_days`` late (written to the lake later)."""

    kind: Literal["delayed_arrival"]
    day: int = Field(ge=0)
    delay_days: int = Field(1, ge=1)
    share: float = Field(1.0, gt=0.0, le=1.0)


Fault = Annotated[MarketShift | CoverageDrop | LoggingChange | VolumeDrop | DelayedArrival, Field(discriminator="kind")]

DEFAULT_COUNTRIES = {"US": 0.35, "BR": 0.2, "IN": 0.15, "DE": 0.1, "JP": 0.1, "MX": 0.1}


class SimSettings(Section):
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
