"""The hidden truth of the simulated world: users, markets, creators and items.

The world knows what the logs cannot: each user's real interests (a topic mix that evolves, and a latent taste
no logged field reveals), activity, attention and patience, lasting engagement propensities; each market's
tastes and tolerance for racy content; each creator's quality and posting rate; each item's real quality,
click-bait-ness, safety and latent style.  It hands out the canonical tables (what a logging pipeline would
record, with noisy content features) and keeps the truth in NumPy arrays for the behaviour model.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from homefeed.config import SimSettings
from homefeed.schema import DAY_US, ITEMS, USERS

#: New users sign up over this many days from the start of the run.
SIGNUP_WINDOW_DAYS = 28

TOPIC_NAMES = (
    "home_decor", "recipes", "womens_fashion", "travel", "diy", "beauty", "art", "fitness",
    "gardening", "weddings", "photography", "quotes", "tattoos", "cars", "technology", "kids",
    "pets", "humor", "architecture", "crafts", "nails", "hair", "outdoors", "education",
)  # fmt: skip
LANGUAGES = {"US": "en", "GB": "en", "BR": "pt", "IN": "en", "DE": "de", "JP": "ja", "MX": "es", "FR": "fr"}
PLATFORMS = ("ios", "android", "web")
SAFETY = ("safe", "spam", "racy")
SPAM, RACY = 1, 2
CONTENT_KEYS = ("quality_score", "clickbait_score", "image_aesthetic", "text_length")


def day_start_us(start: dt.date, day: int) -> int:
    """Microseconds since the epoch at 00:00 UTC of simulation day ``day``."""
    epoch_day = (start - dt.date(1970, 1, 1)).days + day
    return epoch_day * DAY_US


def topic_names(n: int) -> list[str]:
    return [TOPIC_NAMES[t] if t < len(TOPIC_NAMES) else f"topic_{t:03d}" for t in range(n)]


def _map_array(keys: tuple[str, ...], values: np.ndarray, value_type: pa.DataType) -> pa.MapArray:
    """A map column with the same keys in every row, built without a Python loop over rows."""
    n_rows, n_keys = values.shape
    offsets = pa.array(np.arange(0, (n_rows + 1) * n_keys, n_keys, dtype=np.int32))
    key_array = pa.array(keys, pa.string()).take(pa.array(np.tile(np.arange(n_keys), n_rows)))
    value_array = pa.array(values.reshape(-1), value_type)
    return pa.MapArray.from_arrays(offsets, key_array, value_array)


def labels(names: list[str] | tuple[str, ...], codes: np.ndarray) -> pa.StringArray:
    """``names[codes]`` as a string column, taken in Arrow: no Python string per row."""
    return pa.array(names, pa.string()).take(pa.array(np.asarray(codes, np.int64)))


def _lognormal_around(rng: np.random.Generator, mean: float, sigma: float, n: int) -> np.ndarray:
    """Lognormal draws whose mean is ``mean``."""
    return (mean * rng.lognormal(-(sigma**2) / 2, sigma, n)).astype(np.float32)


@dataclass
class World:
    """Users, markets and creators are fixed at creation (their tastes then evolve); items arrive day by day."""

    settings: SimSettings
    topics: list[str]
    countries: list[str]
    topic_popularity: np.ndarray
    # markets
    market_tilt: np.ndarray  # (markets, topics) multiplicative tilt of a market's topic tastes
    racy_tolerance: np.ndarray  # (markets,) hide logit removed for racy items
    # users
    interests: np.ndarray  # (users, topics) float32, rows sum to 1; evolves with engagement
    style_taste: np.ndarray  # (users, styles) float32: the taste no logged signal reveals
    visit_logit: np.ndarray  # base daily visit logit (activity)
    attention: np.ndarray  # mean time per visit, in slots
    patience: np.ndarray  # mean patience per visit
    closeup_offset: np.ndarray  # lasting closeup logit offset
    save_offset: np.ndarray  # lasting save logit offset
    user_country: np.ndarray  # index into countries
    user_platform: np.ndarray
    signup_us: np.ndarray
    declared_topics: np.ndarray  # (users, 3) topic indices; the first n_declared of a row are declared
    n_declared: np.ndarray
    # creators
    creator_topic: np.ndarray
    creator_quality: np.ndarray
    creator_clickbait: np.ndarray
    creator_rate: np.ndarray  # expected items a day at the start
    creator_boost: np.ndarray  # multiplier of the rate, moved by engagement (see creators.py)
    creator_quit: np.ndarray  # bool: stopped posting for good
    # items, grown by add_items; ids are dense and in creation order
    item_creator: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    item_topic: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))
    item_quality: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    item_clickbait: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    item_unsafe: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))  # index into SAFETY
    item_created_us: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    item_style: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))  # hidden: no log reveals it
    #: Per item, the parts of the engagement model that depend on the item alone (see :meth:`item_terms`).
    item_terms: np.ndarray = field(default_factory=lambda: np.empty((0, 5), np.float32))

    @property
    def n_users(self) -> int:
        return len(self.visit_logit)

    @property
    def n_items(self) -> int:
        return len(self.item_created_us)

    @property
    def n_creators(self) -> int:
        return len(self.creator_topic)

    def signup_day(self) -> np.ndarray:
        start = day_start_us(self.settings.start_date, 0)
        return np.floor_divide(self.signup_us - start, DAY_US)

    @classmethod
    def generate(cls, settings: SimSettings) -> World:
        rng = np.random.default_rng([settings.seed, 1])
        n_topics, n_users, n_creators = settings.topics, settings.users, settings.creators
        topics = topic_names(n_topics)
        countries = list(settings.countries)
        popularity = 1.0 / np.arange(1, n_topics + 1) ** 0.8
        popularity = rng.permutation(popularity / popularity.sum())

        # Markets: a tilt over topics (what the market likes) and a tolerance for racy content.
        tilt = rng.lognormal(0.0, settings.interests.market_taste_spread, (len(countries), n_topics))
        drawn = rng.normal(0.0, settings.markets.racy_spread, len(countries))
        racy_tolerance = np.array(
            [settings.markets.racy_tolerance.get(c, drawn[i]) for i, c in enumerate(countries)], np.float32
        )
        shares = np.array(list(settings.countries.values()), dtype=np.float64)
        user_country = rng.choice(len(countries), size=n_users, p=shares / shares.sum()).astype(np.int16)

        prior = popularity[None, :] * tilt
        prior = settings.interests.concentration * n_topics * prior / prior.sum(axis=1, keepdims=True)
        interests = rng.gamma(prior[user_country]) + 1e-9
        interests = (interests / interests.sum(axis=1, keepdims=True)).astype(np.float32)
        style_taste = rng.standard_normal((n_users, settings.interests.latent_styles), dtype=np.float32)

        activity = rng.beta(settings.sessions.activity_alpha, settings.sessions.activity_beta, n_users).clip(0.02, 0.97)
        visit_logit = np.log(activity / (1 - activity)).astype(np.float32)
        s, b = settings.sessions, settings.behaviour
        attention = _lognormal_around(rng, s.attention_mean, s.attention_user_spread, n_users)
        patience = _lognormal_around(rng, settings.patience.mean, settings.patience.user_spread, n_users)
        closeup_offset = rng.normal(0.0, b.user_closeup_spread, n_users).astype(np.float32)
        save_offset = rng.normal(0.0, b.user_save_spread, n_users).astype(np.float32)
        user_platform = rng.choice(len(PLATFORMS), size=n_users, p=[0.45, 0.4, 0.15]).astype(np.int8)

        start = day_start_us(settings.start_date, 0)
        is_new = rng.random(n_users) < settings.new_user_share
        tenure_days = rng.uniform(1, 3 * 365, n_users)
        new_offset = rng.uniform(0, SIGNUP_WINDOW_DAYS, n_users)
        signup_us = np.where(is_new, start + new_offset * DAY_US, start - tenure_days * DAY_US).astype(np.int64)

        # Declared interests: the top topics, sometimes wrong, sometimes absent.
        top = np.argsort(-interests, axis=1)[:, :3]
        n_declared = rng.integers(0, 4, n_users)
        wrong = rng.random((n_users, 3)) < 0.2
        declared_topics = np.where(wrong, rng.integers(0, n_topics, (n_users, 3)), top).astype(np.int16)

        creator_topic = rng.choice(n_topics, size=n_creators, p=popularity).astype(np.int16)
        creator_quality = rng.beta(2.0, 2.0, n_creators).astype(np.float32)
        farm = rng.random(n_creators) < 0.12
        creator_clickbait = np.where(farm, rng.beta(5, 2, n_creators), rng.beta(1, 8, n_creators)).astype(np.float32)
        weight = rng.lognormal(0.0, 1.0, n_creators)

        world = cls(
            settings=settings,
            topics=topics,
            countries=countries,
            topic_popularity=popularity,
            market_tilt=tilt.astype(np.float32),
            racy_tolerance=racy_tolerance,
            interests=interests,
            style_taste=style_taste,
            visit_logit=visit_logit,
            attention=attention,
            patience=patience,
            closeup_offset=closeup_offset,
            save_offset=save_offset,
            user_country=user_country,
            user_platform=user_platform,
            signup_us=signup_us,
            declared_topics=declared_topics,
            n_declared=n_declared.astype(np.int8),
            creator_topic=creator_topic,
            creator_quality=creator_quality,
            creator_clickbait=creator_clickbait,
            creator_rate=settings.items_per_day * weight / weight.sum(),
            creator_boost=np.ones(n_creators),
            creator_quit=np.zeros(n_creators, bool),
        )
        for day in range(-settings.item_lifetime_days, 0):
            world.add_items(day)
        return world

    # ------------------------------------------------------------------ items
    def posting_rate(self) -> np.ndarray:
        """Expected items a day of each creator now."""
        return np.where(self.creator_quit, 0.0, self.creator_rate * self.creator_boost)

    def add_items(self, day: int) -> slice:
        """Publish day ``day``'s new items, as many as the creators now post; returns the slice of their ids."""
        s = self.settings
        rng = np.random.default_rng([s.seed, 2, day + 10_000])
        counts = rng.poisson(self.posting_rate())
        creator = rng.permutation(np.repeat(np.arange(self.n_creators), counts))
        n = len(creator)
        topic = np.where(
            rng.random(n) < 0.8,
            self.creator_topic[creator],
            rng.choice(len(self.topics), size=n, p=self.topic_popularity),
        ).astype(np.int16)
        q = self.creator_quality[creator]
        quality = 1.0 / (1.0 + np.exp(-(np.log(q / (1 - q)) + rng.normal(0, 0.7, n))))
        clickbait = np.clip(self.creator_clickbait[creator] + rng.normal(0, 0.08, n), 0, 1)
        u = rng.random(n)
        unsafe = np.where(u < s.unsafe_share * 2 / 3, SPAM, np.where(u < s.unsafe_share, RACY, 0)).astype(np.int8)
        created = day_start_us(s.start_date, day) + np.sort(rng.integers(0, DAY_US, n))
        style = rng.integers(0, self.style_taste.shape[1], n).astype(np.int16)

        first = self.n_items
        self.item_creator = np.concatenate([self.item_creator, creator.astype(np.int64)])
        self.item_topic = np.concatenate([self.item_topic, topic])
        self.item_quality = np.concatenate([self.item_quality, quality.astype(np.float32)])
        self.item_clickbait = np.concatenate([self.item_clickbait, clickbait.astype(np.float32)])
        self.item_unsafe = np.concatenate([self.item_unsafe, unsafe])
        self.item_created_us = np.concatenate([self.item_created_us, created.astype(np.int64)])
        self.item_style = np.concatenate([self.item_style, style])
        self.item_terms = np.concatenate([self.item_terms, self._terms(quality, clickbait)])
        return slice(first, self.n_items)

    def _terms(self, quality: np.ndarray, clickbait: np.ndarray) -> np.ndarray:
        """The item's own terms of the funnel, computed once when it is posted (the behaviour model's weights):
        closeup logit, save logit, hide logit (not clicked), the hide logit's extra after a click, P(click)."""
        b = self.settings.behaviour
        q = quality - 0.5
        click = 1.0 / (1.0 + np.exp(-(b.click_base + b.clickbait_click * clickbait + 0.5 * q)))
        return np.column_stack(
            [
                b.quality * q + b.clickbait_closeup * clickbait,
                b.quality * q + b.clickbait_save * clickbait,
                -b.quality * q + b.clickbait_hide * clickbait,
                b.clickbait_hide * clickbait,
                click,
            ]
        ).astype(np.float32)

    def items_table(self, ids: slice) -> pa.Table:
        """What the logging pipeline records about items: noisy content features, a classifier's safety label."""
        s = self.settings
        rng = np.random.default_rng([s.seed, 3, ids.start])
        n = ids.stop - ids.start
        quality, clickbait = self.item_quality[ids], self.item_clickbait[ids]
        noise = s.content_noise
        content = np.column_stack(
            [
                np.clip(quality + rng.normal(0, noise, n), 0, 1),
                np.clip(clickbait + rng.normal(0, noise, n), 0, 1),
                np.clip(0.5 * quality + 0.5 * rng.random(n) + rng.normal(0, noise, n), 0, 1),
                np.round(rng.lognormal(3.5, 0.8, n)),
            ]
        ).astype(np.float64)
        # The safety classifier catches most unsafe items and flags a few safe ones.
        truth = self.item_unsafe[ids]
        caught = rng.random(n) < 0.9
        false_flag = rng.random(n) < 0.003
        label = np.where(truth > 0, np.where(caught, truth, 0), np.where(false_flag, 1, 0))
        return pa.Table.from_arrays(
            [
                pa.array(np.arange(ids.start, ids.stop, dtype=np.int64)),
                pa.array(self.item_creator[ids]),
                labels(self.topics, self.item_topic[ids]),
                pa.array(self.item_created_us[ids], pa.int64()).cast(ITEMS.field("created_at").type),
                _map_array(CONTENT_KEYS, content, pa.float64()),
                labels(SAFETY, label),
            ],
            schema=ITEMS,
        )

    # ------------------------------------------------------------------ users
    def users_table(self, user_ids: np.ndarray) -> pa.Table:
        languages = [LANGUAGES.get(c, "en") for c in self.countries]
        platform = np.array(PLATFORMS, dtype=object)[self.user_platform[user_ids]][:, None]
        return pa.Table.from_arrays(
            [
                pa.array(user_ids.astype(np.int64)),
                pa.array(self.signup_us[user_ids], pa.int64()).cast(USERS.field("signup_at").type),
                labels(self.countries, self.user_country[user_ids]),
                labels(languages, self.user_country[user_ids]),
                self._declared_interests(user_ids),
                _map_array(("platform",), platform, pa.string()),
            ],
            schema=USERS,
        )

    def _declared_interests(self, user_ids: np.ndarray) -> pa.ListArray:
        counts = self.n_declared[user_ids].astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        keep = np.arange(3)[None, :] < counts[:, None]
        names = labels(self.topics, self.declared_topics[user_ids][keep])
        return pa.ListArray.from_arrays(pa.array(offsets), names)

    # ------------------------------------------------------------------ truth
    def affinity(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """How much each user likes each item: log interest in its topic (0 = a uniform user) plus the latent match."""
        topics, styles = self.interests.shape[1], self.style_taste.shape[1]
        interest = self.interests.reshape(-1)[user_ids * topics + self.item_topic[item_ids]]
        taste = self.style_taste.reshape(-1)[user_ids * styles + self.item_style[item_ids]]
        weight = np.float32(self.settings.interests.latent_weight)
        return np.log(np.float32(topics) * interest + np.float32(0.05)) + weight * taste

    def is_new(self, user_ids: np.ndarray, day: int) -> np.ndarray:
        """Users in their first ``churn.new_user_days`` days on ``day``."""
        tenure = day - self.signup_day()[user_ids]
        return tenure < self.settings.churn.new_user_days
