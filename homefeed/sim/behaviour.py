"""How a simulated user reacts to one examined item: the engagement funnel, one vectorized pass per batch.

An examined item is opened (closeup) depending on how much the user likes it (topic interest and the latent
match), its quality, click-bait and freshness, the user's lasting propensity, and boredom: earlier slots of the
same topic or creator in this visit, the topic's share of the user's recent days (satiation), recent
impressions of the creator, and earlier impressions of the item itself (fatigue).  A closeup may lead to a
click, a click to a save.  Click-bait wins closeups and clicks but loses saves and earns hides; unsafe items
earn hides and reports (racy ones less where the market tolerates them).  The world remembers: an item the user
saved is worth less when shown again, and one the user hid is never engaged again, only hidden again or
reported.  Which slots are examined, and when the user stops scrolling, is :mod:`homefeed.sim.session`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from homefeed.config import MarketShift, SimSettings
from homefeed.sim.world import DAY_US, RACY, SPAM, World


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class MarketEffects:
    """Per-market logit shifts in force on one day, indexed like ``World.countries``.

    ``scoped`` holds the shifts that apply only to one surface or experiment arm:
    (market, surface, experiment, arm, closeup shift, hide shift).
    """

    closeup: np.ndarray
    hide: np.ndarray
    visit: np.ndarray
    scoped: tuple[tuple[int, str | None, str | None, str | None, float, float], ...] = ()

    @classmethod
    def on_day(cls, settings: SimSettings, countries: list[str], day: int) -> MarketEffects:
        closeup, hide, visit = (np.zeros(len(countries)) for _ in range(3))
        scoped = []
        for fault in settings.faults:
            if isinstance(fault, MarketShift) and day >= fault.from_day:
                c = countries.index(fault.country)
                if fault.surface or fault.experiment:
                    scoped.append(
                        (c, fault.surface, fault.experiment, fault.arm, fault.closeup_shift, fault.hide_shift)
                    )
                    continue
                closeup[c] += fault.closeup_shift
                hide[c] += fault.hide_shift
                visit[c] += fault.visit_shift
        return cls(closeup, hide, visit, tuple(scoped))


@dataclass
class Impressions:
    """Everything the world uses to decide the fate of a batch of impressions (one entry per impression).

    Built by :meth:`homefeed.sim.state.UserState.impressions`, which gathers each user's hidden rows once.
    """

    user_id: np.ndarray
    item_id: np.ndarray
    ts: np.ndarray
    affinity: np.ndarray  # how much the user likes the item (topic interest and latent taste)
    country: np.ndarray  # the user's market
    closeup_offset: np.ndarray  # the user's lasting propensities
    save_offset: np.ndarray
    same_topic: np.ndarray  # earlier slots of the item's topic in this visit
    same_creator: np.ndarray  # earlier slots of the item's creator in this visit
    exposures: np.ndarray  # earlier impressions of the item to the user
    saved: np.ndarray  # bool: the user saved the item before
    hidden: np.ndarray  # bool: the user hid or reported the item before
    satiation: np.ndarray  # recent share of the item's topic in the user's impressions
    creator_recent: np.ndarray  # impressions of the item's creator among the user's recent ones
    memory_slot: np.ndarray | None = None  # where memory keeps the (user, item) pair, -1 if never shown
    closeup_shift: np.ndarray | float = 0.0  # faults scoped to a surface or arm
    hide_shift: np.ndarray | float = 0.0


@dataclass(frozen=True)
class Funnel:
    """Conditional probabilities of each step, given the item was examined."""

    closeup: np.ndarray  # given examined
    click: np.ndarray  # given closeup
    save: np.ndarray  # given click
    hide_clicked: np.ndarray  # given clicked and not saved
    hide_other: np.ndarray  # given examined and not clicked
    report: np.ndarray  # given hide

    def given_examined(self) -> dict[str, np.ndarray]:
        """Probability of each action once the item is examined: what a ranker's position-free label means."""
        opened = self.closeup
        clicked = opened * self.click
        saved = clicked * self.save
        hidden = clicked * (1 - self.save) * self.hide_clicked + (1 - clicked) * self.hide_other
        return {"closeup": opened, "click": clicked, "save": saved, "hide": hidden, "report": hidden * self.report}


def funnel(world: World, imp: Impressions, market: MarketEffects) -> Funnel:
    s = world.settings
    b, bored = s.behaviour, s.boredom
    item = imp.item_id
    terms = np.take(world.item_terms, item, axis=0)  # the item's own parts (take: 5x faster than [item] here)
    affinity = b.affinity * imp.affinity
    country = imp.country
    offense, report = _safety_tables(world)
    # One flat index into the (item kind, market) tables serves both.
    kind = world.item_unsafe[item].astype(np.intp) * offense.shape[1] + country
    age_days = ((imp.ts - world.item_created_us[item]) / DAY_US).astype(np.float32)
    fresh = np.exp(-np.maximum(age_days, np.float32(0)) / np.float32(b.freshness_days))
    boredom = (
        np.float32(bored.session_topic) * imp.same_topic
        + np.float32(bored.session_creator) * imp.same_creator
        + np.float32(bored.daily_topic) * imp.satiation
        + np.float32(bored.daily_creator) * imp.creator_recent
        + np.float32(b.fatigue) * imp.exposures
    )
    saved_before = np.float32(b.saved_again) * imp.saved
    closeup_logit = (
        np.float32(b.closeup_base) + imp.closeup_offset + affinity + terms[:, 0]
        + np.float32(b.freshness) * fresh - boredom - saved_before
    )  # fmt: skip
    hide_logit = np.float32(b.hide_base) - 0.5 * affinity + terms[:, 2] + offense.reshape(-1)[kind] + 0.5 * boredom
    if market.closeup.any() or market.hide.any():
        closeup_logit = closeup_logit + market.closeup[country]
        hide_logit = hide_logit + market.hide[country]
    if not np.isscalar(imp.closeup_shift) or imp.closeup_shift or imp.hide_shift:
        closeup_logit = closeup_logit + imp.closeup_shift
        hide_logit = hide_logit + imp.hide_shift
    save = _sigmoid(np.float32(b.save_base) + imp.save_offset + affinity + terms[:, 1] - 0.5 * boredom - saved_before)
    # A hidden item shown again is never engaged: it is hidden again (or reported).
    hidden = imp.hidden
    return Funnel(
        closeup=np.where(hidden, np.float32(0), _sigmoid(closeup_logit)),
        click=terms[:, 4],
        save=save,
        hide_clicked=_sigmoid(hide_logit + terms[:, 3]),
        hide_other=np.where(hidden, np.float32(1), _sigmoid(hide_logit)),
        report=report.reshape(-1)[kind],
    )


def _safety_tables(world: World) -> tuple[np.ndarray, np.ndarray]:
    """By (item kind, market): the hide logit an unsafe item adds, and P(report | hide).

    Spam offends everywhere; racy content offends less where the market tolerates it (``racy_tolerance``).
    """
    b = world.settings.behaviour
    tolerance = world.racy_tolerance.astype(np.float64)
    offensive = np.zeros((3, len(tolerance)))
    offensive[SPAM] = 1.0
    offensive[RACY] = np.clip(1.0 - tolerance / b.unsafe_hide, 0.0, 2.0) if b.unsafe_hide else 1.0
    report = 1.0 / (1.0 + np.exp(-(b.report_given_hide + b.unsafe_report * (offensive > 0))))
    return (b.unsafe_hide * offensive).astype(np.float32), report.astype(np.float32)


def expected_value(world: World, imp: Impressions, given: dict[str, np.ndarray]) -> np.ndarray:
    """What an examined impression is worth to its user, in expectation: the currency of satisfaction."""
    b = world.settings.behaviour
    clickbait = world.item_clickbait[imp.item_id]
    unsafe = world.item_unsafe[imp.item_id] > 0
    return (
        b.value_save * given["save"]
        + given["click"] * (b.value_click - b.regret_clickbait_click * clickbait)
        - b.cost_hide * given["hide"]
        - b.cost_report * given["report"]
        - b.cost_unsafe_seen * unsafe
    )


def realised_value(
    world: World, item_id: np.ndarray, examined: np.ndarray, click: np.ndarray, save: np.ndarray,
    hide: np.ndarray, report: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """What each impression was worth to its user, as it happened."""
    b = world.settings.behaviour
    clickbait = world.item_clickbait[item_id]
    unsafe_seen = examined & (world.item_unsafe[item_id] > 0)
    return (
        b.value_save * save
        + click * (b.value_click - b.regret_clickbait_click * clickbait)
        - b.cost_hide * hide
        - b.cost_report * report
        - b.cost_unsafe_seen * unsafe_seen
    )
