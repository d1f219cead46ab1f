"""How simulated users react to what they are shown, one vectorized pass per batch.

An impression is examined with a probability set by its slot (position bias).
An examined item is opened (closeup) depending on the user's interest in its
topic, its quality, click-bait, freshness and how often the user has seen it
(fatigue); a closeup may lead to a click, a click to a save.  Click-bait wins
closeups and clicks but loses saves and earns hides.  Hides and reports follow
bad or unsafe items.  What a session was worth to the user (saves, minus
regretted clicks, hides, reports and unsafe content) moves the chance that the
user comes back tomorrow: the long-term metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from homefeed.config import Behaviour, MarketShift, SimSettings
from homefeed.sim.world import DAY_US, World


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Exposures:
    """How many times each user has been shown each item: sorted keys, binary-searched per batch.

    A dict would be a Python loop per impression; sorted int64 keys keep both
    the lookup and the merge of a day's exposures vectorized.
    """

    def __init__(self) -> None:
        self.keys = np.empty(0, np.int64)
        self.counts = np.empty(0, np.int32)

    @staticmethod
    def _key(user_id: np.ndarray, item_id: np.ndarray) -> np.ndarray:
        return (user_id.astype(np.int64) << 32) | item_id.astype(np.int64)

    def _find(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self.keys, key)
        if len(self.keys) == 0:
            return pos, np.zeros(len(key), dtype=bool)
        return pos, self.keys[np.minimum(pos, len(self.keys) - 1)] == key

    def lookup(self, user_id: np.ndarray, item_id: np.ndarray) -> np.ndarray:
        """Earlier exposures of each (user, item) pair."""
        pos, found = self._find(self._key(user_id, item_id))
        out = np.zeros(len(pos), dtype=np.int32)
        out[found] = self.counts[pos[found]]
        return out

    def add(self, user_id: np.ndarray, item_id: np.ndarray) -> None:
        key, n = np.unique(self._key(user_id, item_id), return_counts=True)
        pos, found = self._find(key)
        self.counts[pos[found]] += n[found].astype(np.int32)
        self.keys = np.insert(self.keys, pos[~found], key[~found])
        self.counts = np.insert(self.counts, pos[~found], n[~found].astype(np.int32))


@dataclass(frozen=True)
class MarketEffects:
    """Per-market logit shifts in force on one day, indexed like ``World.countries``."""

    closeup: np.ndarray
    hide: np.ndarray
    visit: np.ndarray

    @classmethod
    def on_day(cls, settings: SimSettings, countries: list[str], day: int) -> MarketEffects:
        closeup, hide, visit = (np.zeros(len(countries)) for _ in range(3))
        for fault in settings.faults:
            if isinstance(fault, MarketShift) and day >= fault.from_day:
                c = countries.index(fault.country)
                closeup[c] += fault.closeup_shift
                hide[c] += fault.hide_shift
                visit[c] += fault.visit_shift
        return cls(closeup, hide, visit)


@dataclass(frozen=True)
class Propensities:
    """Conditional probabilities of each step of the funnel, for a batch of impressions."""

    examine: np.ndarray
    closeup: np.ndarray  # given examined
    click: np.ndarray  # given closeup
    save: np.ndarray  # given click
    hide_clicked: np.ndarray  # given examined, clicked and not saved
    hide_other: np.ndarray  # given examined and not clicked
    report: np.ndarray  # given hide

    def marginals(self) -> dict[str, np.ndarray]:
        """Unconditional probability of each action: the ground truth evaluation code compares against."""
        opened = self.examine * self.closeup
        clicked = opened * self.click
        saved = clicked * self.save
        hidden = clicked * (1 - self.save) * self.hide_clicked + (self.examine - clicked) * self.hide_other
        return {"closeup": opened, "click": clicked, "save": saved, "hide": hidden, "report": hidden * self.report}


def propensities(
    world: World,
    user_id: np.ndarray,
    item_id: np.ndarray,
    position: np.ndarray,
    ts: np.ndarray,
    exposures: np.ndarray,
    market: MarketEffects,
) -> Propensities:
    b: Behaviour = world.settings.behaviour
    affinity = world.affinity(user_id, item_id)
    quality = world.item_quality[item_id] - 0.5
    clickbait = world.item_clickbait[item_id]
    unsafe = (world.item_unsafe[item_id] > 0).astype(np.float32)
    age_days = (ts - world.item_created_us[item_id]) / DAY_US
    fresh = np.exp(-np.maximum(age_days, 0.0) / b.freshness_days)
    country = world.user_country[user_id]
    fatigue = b.fatigue * exposures

    closeup = _sigmoid(
        b.closeup_base
        + b.affinity * affinity
        + b.quality * quality
        + b.clickbait_closeup * clickbait
        + b.freshness * fresh
        - fatigue
        + market.closeup[country]
    )
    click = _sigmoid(b.click_base + b.clickbait_click * clickbait + 0.5 * quality)
    save = _sigmoid(b.save_base + b.affinity * affinity + b.quality * quality + b.clickbait_save * clickbait)
    hide_logit = (
        b.hide_base
        - 0.5 * b.affinity * affinity
        - b.quality * quality
        + b.unsafe_hide * unsafe
        + 0.5 * fatigue
        + market.hide[country]
    )
    return Propensities(
        examine=world.settings.position_bias.examination(position),
        closeup=closeup,
        click=click,
        save=save,
        hide_clicked=_sigmoid(hide_logit + 2 * b.clickbait_hide * clickbait),
        hide_other=_sigmoid(hide_logit + b.clickbait_hide * clickbait),
        report=_sigmoid(b.report_given_hide + b.unsafe_report * unsafe),
    )


@dataclass(frozen=True)
class Reactions:
    """What each impression led to (booleans per impression) and the dwell of closeups and clicks."""

    examined: np.ndarray
    closeup: np.ndarray
    click: np.ndarray
    save: np.ndarray
    hide: np.ndarray
    report: np.ndarray
    closeup_dwell: np.ndarray
    click_dwell: np.ndarray


def react(world: World, p: Propensities, item_id: np.ndarray, rng: np.random.Generator) -> Reactions:
    n = len(item_id)
    u = rng.random((6, n), dtype=np.float32)
    examined = u[0] < p.examine
    closeup = examined & (u[1] < p.closeup)
    click = closeup & (u[2] < p.click)
    save = click & (u[3] < p.save)
    hide_p = np.where(click, p.hide_clicked, p.hide_other)
    hide = examined & ~save & (u[4] < hide_p)
    report = hide & (u[5] < p.report)
    quality = world.item_quality[item_id]
    clickbait = world.item_clickbait[item_id]
    noise = rng.standard_normal((2, n), dtype=np.float32)
    closeup_dwell = np.exp(1.8 + 0.8 * quality + 0.5 * noise[0])
    click_dwell = np.exp(3.0 + 1.5 * (quality - 0.5) - 2.0 * clickbait + 0.6 * noise[1])
    return Reactions(examined, closeup, click, save, hide, report, closeup_dwell, click_dwell)


def session_value(
    world: World, reactions: Reactions, item_id: np.ndarray, request_index: np.ndarray, n_requests: int
) -> np.ndarray:
    """What each session was worth to its user; drives tomorrow's visit."""
    b = world.settings.behaviour
    clickbait = world.item_clickbait[item_id]
    unsafe_seen = reactions.examined & (world.item_unsafe[item_id] > 0)
    value = (
        b.value_save * reactions.save
        + reactions.click * (b.value_click - b.regret_clickbait_click * clickbait)
        - b.cost_hide * reactions.hide
        - b.cost_report * reactions.report
        - b.cost_unsafe_seen * unsafe_seen
    )
    return np.bincount(request_index, weights=value, minlength=n_requests)
