"""The hidden truth of the simulated world: users, creators and items.

The world knows what the logs cannot: each user's real interests and activity,
each item's real quality, click-bait-ness and safety.  It hands out the
canonical tables (what a logging pipeline would record, with noisy content
features) and keeps the truth in NumPy arrays for the behaviour model and for
evaluation code that needs to know the right answer.
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


@dataclass
class World:
    """Users and creators are fixed at creation; items arrive day by day through :meth:`add_items`."""

    settings: SimSettings
    topics: list[str]
    countries: list[str]
    topic_popularity: np.ndarray
    # users
    interests: np.ndarray  # (users, topics) float32, rows sum to 1
    visit_logit: np.ndarray  # base daily visit logit (activity)
    depth_mean: np.ndarray  # mean rendered slots per session
    user_country: np.ndarray  # index into countries
    user_platform: np.ndarray
    signup_us: np.ndarray
    declared_topics: np.ndarray  # (users, 3) topic indices; the first n_declared of a row are declared
    n_declared: np.ndarray
    # creators
    creator_topic: np.ndarray
    creator_quality: np.ndarray
    creator_clickbait: np.ndarray
    creator_weight: np.ndarray
    # items, grown by add_items; ids are dense and in creation order
    item_creator: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    item_topic: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))
    item_quality: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    item_clickbait: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    item_unsafe: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))  # index into SAFETY
    item_created_us: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def n_users(self) -> int:
        return len(self.visit_logit)

    @property
    def n_items(self) -> int:
        return len(self.item_created_us)

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

        alpha = settings.interest_concentration * n_topics * popularity
        interests = rng.gamma(alpha, size=(n_users, n_topics)) + 1e-9
        interests = (interests / interests.sum(axis=1, keepdims=True)).astype(np.float32)

        activity = rng.beta(1.3, 2.2, size=n_users).clip(0.02, 0.97)
        visit_logit = np.log(activity / (1 - activity)).astype(np.float32)
        depth_mean = (settings.sessions.depth_mean * rng.lognormal(0.0, 0.35, n_users)).astype(np.float32)
        shares = np.array(list(settings.countries.values()), dtype=np.float64)
        user_country = rng.choice(len(countries), size=n_users, p=shares / shares.sum()).astype(np.int16)
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
        creator_weight = rng.lognormal(0.0, 1.0, n_creators)
        creator_weight /= creator_weight.sum()

        world = cls(
            settings=settings,
            topics=topics,
            countries=countries,
            topic_popularity=popularity,
            interests=interests,
            visit_logit=visit_logit,
            depth_mean=depth_mean,
            user_country=user_country,
            user_platform=user_platform,
            signup_us=signup_us,
            declared_topics=declared_topics,
            n_declared=n_declared.astype(np.int8),
            creator_topic=creator_topic,
            creator_quality=creator_quality,
            creator_clickbait=creator_clickbait,
            creator_weight=creator_weight,
        )
        for day in range(-settings.item_lifetime_days, 0):
            world.add_items(day)
        return world

    # ------------------------------------------------------------------ items
    def add_items(self, day: int) -> slice:
        """Publish day ``day``'s new items; returns the slice of their ids."""
        s = self.settings
        rng = np.random.default_rng([s.seed, 2, day + 10_000])
        n = s.items_per_day
        creator = rng.choice(len(self.creator_weight), size=n, p=self.creator_weight)
        topic = np.where(
            rng.random(n) < 0.8,
            self.creator_topic[creator],
            rng.choice(len(self.topics), size=n, p=self.topic_popularity),
        ).astype(np.int16)
        q = self.creator_quality[creator]
        quality = 1.0 / (1.0 + np.exp(-(np.log(q / (1 - q)) + rng.normal(0, 0.7, n))))
        clickbait = np.clip(self.creator_clickbait[creator] + rng.normal(0, 0.08, n), 0, 1)
        u = rng.random(n)
        unsafe = np.where(u < s.unsafe_share * 2 / 3, 1, np.where(u < s.unsafe_share, 2, 0)).astype(np.int8)
        created = day_start_us(s.start_date, day) + np.sort(rng.integers(0, DAY_US, n))

        first = self.n_items
        self.item_creator = np.concatenate([self.item_creator, creator.astype(np.int64)])
        self.item_topic = np.concatenate([self.item_topic, topic])
        self.item_quality = np.concatenate([self.item_quality, quality.astype(np.float32)])
        self.item_clickbait = np.concatenate([self.item_clickbait, clickbait.astype(np.float32)])
        self.item_unsafe = np.concatenate([self.item_unsafe, unsafe])
        self.item_created_us = np.concatenate([self.item_created_us, created.astype(np.int64)])
        return slice(first, self.n_items)

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
                pa.array(np.array(self.topics, dtype=object)[self.item_topic[ids]], pa.string()),
                pa.array(self.item_created_us[ids], pa.int64()).cast(ITEMS.field("created_at").type),
                _map_array(CONTENT_KEYS, content, pa.float64()),
                pa.array(np.array(SAFETY, dtype=object)[label], pa.string()),
            ],
            schema=ITEMS,
        )

    # ------------------------------------------------------------------ users
    def users_table(self, user_ids: np.ndarray) -> pa.Table:
        countries = np.array(self.countries, dtype=object)[self.user_country[user_ids]]
        languages = np.array([LANGUAGES.get(c, "en") for c in self.countries], dtype=object)
        platform = np.array(PLATFORMS, dtype=object)[self.user_platform[user_ids]][:, None]
        return pa.Table.from_arrays(
            [
                pa.array(user_ids.astype(np.int64)),
                pa.array(self.signup_us[user_ids], pa.int64()).cast(USERS.field("signup_at").type),
                pa.array(countries, pa.string()),
                pa.array(languages[self.user_country[user_ids]], pa.string()),
                self._declared_interests(user_ids),
                _map_array(("platform",), platform, pa.string()),
            ],
            schema=USERS,
        )

    def _declared_interests(self, user_ids: np.ndarray) -> pa.ListArray:
        counts = self.n_declared[user_ids].astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        keep = np.arange(3)[None, :] < counts[:, None]
        names = np.array(self.topics, dtype=object)[self.declared_topics[user_ids][keep]]
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(names, pa.string()))

    # ------------------------------------------------------------------ truth
    def affinity(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Log interest of each user in each item's topic, relative to a uniform user (0 = average)."""
        interest = self.interests[user_ids, self.item_topic[item_ids]]
        return np.log(len(self.topics) * interest + 0.05).astype(np.float32)
