"""Settings of the simulated world: its size, its users' behaviour, and the faults it can be told to inject.

Every effect size of the world is a setting here, with the default the world card is calibrated to
(``docs/world.md`` gives each one's published source).  Rates are never negative and shares never exceed 1:
a bad value is refused when the file is loaded, before anything is simulated.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from homefeed.config.base import Section

Share = Annotated[float, Field(ge=0.0, le=1.0)]
Rate = Annotated[float, Field(ge=0.0)]


class PositionBias(Section):
    """How a user looks at the slots they scroll past.

    ``position_based``: a reached slot is examined with probability ``curve`` if given, else
    ``(1 / position) ** eta``, whatever happened above it.  ``cascade`` (the dependent click model): slot 1 is
    examined; after an examined slot the next is examined with probability ``continue_prob``, or
    ``continue_after_open`` if the user opened the one before, and once attention lapses it does not come back.
    """

    model: Literal["position_based", "cascade"] = "position_based"
    eta: float = Field(0.7, ge=0.0, le=5.0)
    curve: list[Annotated[float, Field(gt=0.0, le=1.0)]] | None = None
    continue_prob: float = Field(0.93, gt=0.0, le=1.0)
    continue_after_open: float = Field(0.8, gt=0.0, le=1.0)

    def examination(self, positions: np.ndarray) -> np.ndarray:
        """The position-based examination probability of each slot (the cascade's is history-dependent)."""
        positions = np.asarray(positions)
        if self.curve:
            curve = np.asarray(self.curve, dtype=np.float64)
            return curve[np.minimum(positions, len(curve)) - 1]
        return np.power(positions.astype(np.float64), -self.eta)


class Behaviour(Section):
    """Weights of the engagement model (logit scale), and what a visit is worth to its user."""

    closeup_base: float = -0.6
    affinity: float = 1.0  # weight of log(topics * interest) on closeups and saves
    quality: float = 2.5
    clickbait_closeup: float = 1.5  # click-bait attracts attention ...
    click_base: float = 0.3
    clickbait_click: float = 2.5  # ... and clicks ...
    save_base: float = 0.0
    clickbait_save: float = -2.5  # ... but few saves
    hide_base: float = -4.8
    clickbait_hide: float = 2.0  # ... and more hides
    unsafe_hide: float = 2.5  # spam, and racy content where the market does not tolerate it
    report_given_hide: float = -2.0
    unsafe_report: float = 2.5
    freshness: float = 0.8  # boost for a brand-new item, decaying with age
    freshness_days: float = Field(2.0, gt=0.0)
    fatigue: float = Field(0.6, ge=0.0)  # logit penalty per earlier impression of the same item to the user
    saved_again: float = Field(2.0, ge=0.0)  # closeup and save logit penalty for an item the user already saved
    user_closeup_spread: float = Field(1.0, ge=0.0)  # std of a user's lasting closeup logit offset
    user_save_spread: float = Field(1.4, ge=0.0)  # std of a user's lasting save logit offset
    # What a visit is worth to its user: moves tomorrow's visit and the churn hazard.
    value_save: float = 1.0
    value_click: float = 0.25
    regret_clickbait_click: float = 0.9  # a click on click-bait disappoints
    cost_hide: float = Field(1.0, ge=0.0)
    cost_report: float = Field(2.0, ge=0.0)
    cost_unsafe_seen: float = Field(0.3, ge=0.0)
    value_scale: float = Field(2.0, gt=0.0)  # a visit's worth is tanh(value / value_scale)
    satisfaction_memory: float = Field(0.6, ge=0.0, lt=1.0)
    return_sensitivity: float = Field(0.4, ge=0.0)  # visit logit per unit of satisfaction


class Sessions(Section):
    """A visit: the list the policy ranks, and the time the user has for it."""

    activity_alpha: float = Field(0.5, gt=0.0)  # a user's daily visit probability ~ Beta(alpha, beta):
    activity_beta: float = Field(0.8, gt=0.0)  # lasting; U-shaped (both < 1) splits daily and occasional users
    slate_size: int = Field(60, ge=1, le=500)  # slots a policy ranks per request; the user reads a prefix
    batches_per_day: int = Field(2, ge=1, le=96)  # the day's requests are ranked in this many batches
    attention_mean: float = Field(80.0, gt=0.0)  # time a visit has, in slots scrolled (an open or click costs more)
    attention_user_spread: float = Field(0.6, ge=0.0)  # lognormal std of a user's lasting attention
    attention_visit_spread: float = Field(0.4, ge=0.0)  # ... and of one visit's around it
    time_closeup: float = Field(1.0, ge=0.0)  # extra time an opened item takes, in slots
    time_click: float = Field(2.0, ge=0.0)  # extra time a click-through takes
    weekly_seasonality: float = Field(0.25, ge=0.0, le=3.0)  # visit logit swing, weekend high
    surface: str = "home"


class Patience(Section):
    """How long a user keeps scrolling: a budget that unsatisfying slots spend and satisfying ones replenish."""

    mean: float = Field(25.0, gt=0.0)
    user_spread: float = Field(0.6, ge=0.0)  # lognormal std of a user's lasting patience
    visit_spread: float = Field(0.3, ge=0.0)
    new_user_factor: float = Field(0.6, gt=0.0, le=1.0)  # new users arrive with this share of the patience
    cost_slot: float = Field(1.0, gt=0.0)
    gain_closeup: float = Field(1.0, ge=0.0)
    gain_click: float = Field(0.5, ge=0.0)
    gain_save: float = Field(2.0, ge=0.0)
    cost_hide: float = Field(3.0, ge=0.0)
    cost_report: float = Field(5.0, ge=0.0)
    cost_unsafe_seen: float = Field(1.0, ge=0.0)


class Surfaces(Section):
    """A second surface (explore) that some visits reach before home, sharing the visit's time and patience."""

    explore: str = "explore"
    explore_share: Share = 0.15  # of visits
    explore_leave_below: float = Field(0.5, ge=0.0, lt=1.0)  # go home when patience falls below this share


class Interests(Section):
    """Tastes: a topic mix that evolves with what the user engages with, and a latent part no log reveals.

    The latent part: every item has one of ``latent_styles`` hidden styles (no content feature or log field
    reveals it) and every user a lasting taste for each, drawn N(0, 1) and weighted by ``latent_weight``.
    """

    concentration: float = Field(0.15, gt=0.0)  # Dirichlet alpha per topic; small = sparse interests
    drift: Share = 0.03  # daily pull of the topic mix toward the topics engaged with that day
    latent_styles: int = Field(16, ge=1, le=1024)
    latent_weight: float = Field(0.6, ge=0.0)  # logit weight of the user's taste for the item's style
    market_taste_spread: float = Field(0.6, ge=0.0)  # lognormal std of a market's tilt over topics


class Boredom(Section):
    """Variety has value: repeats of a topic or creator within a visit and over recent days lower engagement."""

    session_topic: float = Field(0.15, ge=0.0)  # logit per earlier slot of the same topic in the visit
    session_creator: float = Field(0.5, ge=0.0)  # logit per earlier slot of the same creator in the visit
    daily_topic: float = Field(2.5, ge=0.0)  # logit per unit of recent topic share (satiation)
    daily_creator: float = Field(0.3, ge=0.0)  # logit per impression of the creator among the user's recent ones
    recent_impressions: int = Field(16, ge=1, le=256)  # how many of the user's last impressions count as recent
    half_life_days: float = Field(5.0, gt=0.0)  # of topic satiation


class Churn(Section):
    """Users leave for good: a daily hazard that grows with unsatisfying visits and is high for new users."""

    base: Share = 0.002  # daily hazard of an established, satisfied user
    bad_visit: float = Field(0.4, ge=0.0)  # hazard logit per recent unsatisfying visit
    bad_memory: Share = 0.8  # daily decay of the count of unsatisfying visits
    new_user: float = Field(2.0, ge=0.0)  # hazard logit added in a user's first new_user_days
    new_user_days: int = Field(14, ge=0)


class Creators(Section):
    """Creators post more when their items are engaged with and stop when starved of exposure."""

    response: float = Field(0.5, ge=0.0)  # elasticity of a creator's posting rate to its engagement per item
    memory_days: float = Field(7.0, gt=0.0)  # half-life of the engagement and exposure a creator remembers
    starve_share: Share = 0.05  # quits below this share of the average exposure per item ...
    starve_min_items: float = Field(3.0, ge=0.0)  # ... once it has posted this many recent items


class Delays(Section):
    """Time: labels that land the next day, and items a policy learns of only after they exist."""

    next_day_save_share: Share = 0.1  # saves made the next day (within 24 h of the impression)
    item_visible_minutes: float = Field(60.0, ge=0.0)  # an item reaches the policy this long after creation


class Markets(Section):
    """Markets differ in what they like and in what offends them."""

    racy_spread: float = Field(1.0, ge=0.0)  # std of a market's racy tolerance (hide logit), drawn per seed
    racy_tolerance: dict[str, float] = Field(default_factory=dict)  # explicit per market, instead of drawn


class MarketShift(Section):
    """A market that behaves differently, from ``from_day`` on (day 0 = always).

    ``surface``, ``experiment`` and ``arm`` scope the closeup and hide shifts to the impressions they name.
    """

    kind: Literal["market_shift"]
    country: str
    from_day: int = Field(0, ge=0)
    closeup_shift: float = 0.0
    hide_shift: float = 0.0
    visit_shift: float = 0.0
    surface: str | None = None
    experiment: str | None = None
    arm: str | None = None

    @model_validator(mode="after")
    def _visits_come_before_surfaces(self) -> MarketShift:
        if self.visit_shift and (self.surface or self.experiment or self.arm):
            raise ValueError("visit_shift cannot be scoped to a surface or arm: a visit starts before either is chosen")
        return _check_scope(self)


class CoverageDrop(Section):
    """A column of a table goes null for a share of rows of one market (all if unset) from ``from_day``."""

    kind: Literal["coverage_drop"]
    table: Literal["users", "items", "impressions", "engagements"]
    column: str
    from_day: int = Field(0, ge=0)
    country: str | None = None
    share: float = Field(1.0, gt=0.0, le=1.0)
    surface: str | None = None
    experiment: str | None = None
    arm: str | None = None

    @model_validator(mode="after")
    def _scope(self) -> CoverageDrop:
        return _check_scope(self)


class LoggingChange(Section):
    """From ``from_day`` an action is logged under another name, or (``rename_to`` unset) not at all."""

    kind: Literal["logging_change"]
    action: Literal["closeup", "click", "save", "hide", "report"]
    from_day: int = Field(0, ge=0)
    rename_to: str | None = None
    surface: str | None = None
    experiment: str | None = None
    arm: str | None = None

    @model_validator(mode="after")
    def _scope(self) -> LoggingChange:
        return _check_scope(self)


class VolumeDrop(Section):
    """A share of a table's rows is lost in logging (for one market if set) from ``from_day``."""

    kind: Literal["volume_drop"]
    table: Literal["impressions", "engagements"]
    from_day: int = Field(0, ge=0)
    country: str | None = None
    share: float = Field(0.5, gt=0.0, le=1.0)
    surface: str | None = None
    experiment: str | None = None
    arm: str | None = None

    @model_validator(mode="after")
    def _scope(self) -> VolumeDrop:
        return _check_scope(self)


class DelayedArrival(Section):
    """A share of day ``day``'s events arrives ``delay_days`` late (written to the lake later)."""

    kind: Literal["delayed_arrival"]
    day: int = Field(ge=0)
    delay_days: int = Field(1, ge=1)
    share: float = Field(1.0, gt=0.0, le=1.0)
    surface: str | None = None
    experiment: str | None = None
    arm: str | None = None

    @model_validator(mode="after")
    def _scope(self) -> DelayedArrival:
        return _check_scope(self)


def _check_scope(fault: Section) -> Section:
    if getattr(fault, "arm", None) is not None and getattr(fault, "experiment", None) is None:
        raise ValueError("arm: name the experiment it belongs to (experiment = ...)")
    if getattr(fault, "table", None) in ("users", "items") and (fault.surface or fault.experiment):
        raise ValueError(f"surface/experiment: {fault.table} are not served on a surface or in an arm")
    return fault


Fault = Annotated[MarketShift | CoverageDrop | LoggingChange | VolumeDrop | DelayedArrival, Field(discriminator="kind")]

DEFAULT_COUNTRIES = {"US": 0.35, "BR": 0.2, "IN": 0.15, "DE": 0.1, "JP": 0.1, "MX": 0.1}

Band = tuple[float, float]


class Card(Section):
    """The world card: the stylized facts the default world must reproduce, and how they are measured."""

    seeds: int = Field(5, ge=1, le=50)
    users: int = Field(3_000, ge=200)  # the world is scaled to this many users (items and creators with it)
    days: int = Field(28, ge=14)
    oracle_candidates: int = Field(200, ge=10)
    #: Share of the variance of saves per user-day that CUPED with a 7-day pre-period removes (Deng et al., 2013).
    cuped_variance_reduction: Band = (0.30, 0.60)
    #: The oracle's active user-days over random's, as a relative gain, over ``days``.
    oracle_over_random_user_days: Band = (0.05, 0.20)
    #: ... and over the best non-ML baseline's.
    oracle_over_best_baseline_user_days: Band = (0.0, 0.10)
    #: The oracle's saves per user-day over random's, as a ratio ("multiples").
    oracle_over_random_saves: Band = (2.0, 100.0)

    @model_validator(mode="after")
    def _bands_can_hold(self) -> Card:
        limits = {
            "cuped_variance_reduction": (0.0, 1.0),
            "oracle_over_random_user_days": (-1.0, np.inf),
            "oracle_over_best_baseline_user_days": (-1.0, np.inf),
            "oracle_over_random_saves": (0.0, np.inf),
        }
        for name, (lowest, highest) in limits.items():
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"{name}: the band's low end {low} is above its high end {high}; no value can hold")
            if low < lowest or high > highest:
                raise ValueError(f"{name}: the band ({low}, {high}) reaches outside what the value can be")
        return self


class SimSettings(Section):
    seed: int = Field(7, ge=0)
    users: int = Field(20_000, ge=1)
    creators: int = Field(2_000, ge=1)
    topics: int = Field(24, ge=2, le=256)
    items_per_day: int = Field(3_000, ge=1)  # at the start; creators then post more or less
    item_lifetime_days: int = Field(30, ge=1)
    start_date: dt.date = dt.date(2026, 3, 2)
    new_user_share: Share = 0.15  # users who sign up during the run
    unsafe_share: Share = 0.03
    content_noise: float = Field(0.15, ge=0.0)  # std of content features around the hidden truth
    countries: dict[str, Annotated[float, Field(gt=0.0)]] = Field(default_factory=lambda: dict(DEFAULT_COUNTRIES))
    position_bias: PositionBias = PositionBias()
    sessions: Sessions = Sessions()
    patience: Patience = Patience()
    surfaces: Surfaces = Surfaces()
    interests: Interests = Interests()
    boredom: Boredom = Boredom()
    churn: Churn = Churn()
    creator_response: Creators = Creators()
    delays: Delays = Delays()
    markets: Markets = Markets()
    behaviour: Behaviour = Behaviour()
    card: Card = Card()
    faults: list[Fault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_are_known(self) -> SimSettings:
        for i, fault in enumerate(self.faults):
            country = getattr(fault, "country", None)
            if country is not None and country not in self.countries:
                raise ValueError(f"faults[{i}].country: {country!r} is not one of the markets {sorted(self.countries)}")
            surface = getattr(fault, "surface", None)
            if surface is not None and surface not in (self.sessions.surface, self.surfaces.explore):
                raise ValueError(
                    f"faults[{i}].surface: {surface!r} is not a surface; "
                    f"choose {self.sessions.surface!r} or {self.surfaces.explore!r}"
                )
        unknown = sorted(set(self.markets.racy_tolerance) - set(self.countries))
        if unknown:
            raise ValueError(f"markets.racy_tolerance: {unknown} are not markets {sorted(self.countries)}")
        if self.surfaces.explore == self.sessions.surface:
            raise ValueError(f"surfaces.explore: must differ from sessions.surface ({self.sessions.surface!r})")
        return self
