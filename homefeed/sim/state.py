"""What changes in users as feeds are served: memory, satiation, tastes, satisfaction and churn.

* **Memory** of every (user, item) pair shown — how often, whether saved, whether hidden — so fatigue, the
  lower worth of a saved item and the permanence of a hide are facts of the world, not of a policy.
* **Satiation**: each topic's share of a user's recent impressions, decaying with ``boredom.half_life_days``
  (the linear satiation dynamics of Leqi et al., 2021), and the creators of the user's last
  ``boredom.recent_impressions`` impressions (a ring per user: cheaper than a table of every user-creator pair,
  and what "recently" means to a scrolling user).
* **Tastes drift** toward what the user engaged with; topics not fed fade (RecSim's interest evolution,
  Ie et al., 2019).  The latent part stays.
* **Satisfaction** (what recent visits were worth) moves the daily visit probability; unsatisfying visits add
  to a **churn** hazard that is high for new users; a churned user never comes back.
"""

from __future__ import annotations

import numpy as np

from homefeed.sim.behaviour import Impressions
from homefeed.sim.memory import PairTable, pair_key
from homefeed.sim.world import World

#: Flags kept with each (user, item) pair, above the exposure count in its value.
SAVED, HIDDEN = 1, 2
#: Weight of each action in the engagement that pulls a user's tastes (and rewards a creator).
ENGAGEMENT_WEIGHTS = {"closeup": 1.0, "click": 1.0, "save": 2.0}


class UserState:
    def __init__(self, world: World):
        n, topics = world.n_users, len(world.topics)
        self.satiation = np.zeros((n, topics), np.float32)
        self.satisfaction = np.zeros(n, np.float32)
        self.bad_visits = np.zeros(n, np.float32)
        self.churned = np.zeros(n, bool)
        # Sized for a few weeks of a typical user's impressions, so the table rarely grows.
        self.items = PairTable(capacity=max(1 << 16, 16 * n))
        ring = world.settings.boredom.recent_impressions
        self.recent_creators = np.full((n, ring), -1, np.int32)
        self._ring_at = np.zeros(n, np.int64)
        #: Items below this id can no longer be served (older than the catalogue's lifetime): forgotten first.
        self.first_live_item = 0
        # The day's accumulators, folded in by end_of_day.
        self._seen: list[tuple[np.ndarray, np.ndarray]] = []  # (user, topic) of each impression
        self._engaged: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (user, topic, weight)

    # ------------------------------------------------------------------ serve time
    def impressions(
        self, world: World, users: np.ndarray, items: np.ndarray, ts: np.ndarray,
        same_topic: np.ndarray | float = 0.0, same_creator: np.ndarray | float = 0.0,
    ) -> Impressions:  # fmt: skip
        """The world's knowledge at serve time of each ``items[r, j]`` shown to ``users[r]``, flattened row-major.

        Each user's hidden rows (tastes, satiation, recent creators) are gathered once and shared by all the
        items in its row: the slots of a slate, or the candidates an oracle scores.
        """
        n, w = items.shape
        user = np.repeat(users, w)
        item = items.reshape(-1)
        if len(self.items):
            slot = self.items.find(pair_key(user, item))
            value = np.where(slot >= 0, self.items.values[slot], 0)
        else:  # nothing shown yet
            slot = np.full(len(item), -1, np.int64)
            value = np.zeros(len(item), np.int64)
        flags = value >> 32
        topic = world.item_topic[item]
        ring = self.recent_creators[users]
        recent = np.zeros(items.shape, np.int16)
        if ring.max(initial=-1) >= 0:
            # One 2-D comparison per ring entry: far cheaper than one (n, w, ring) broadcast.
            creator = world.item_creator[items].astype(np.int32)
            for k in range(ring.shape[1]):
                recent += ring[:, k : k + 1] == creator
        topics, styles = self.satiation.shape[1], world.style_taste.shape[1]
        row = np.repeat(np.arange(n) * topics, w)  # each user's rows are gathered once, then indexed per item
        cell = row + topic
        interest = world.interests[users].reshape(-1)[cell]
        taste = world.style_taste[users].reshape(-1)[np.repeat(np.arange(n) * styles, w) + world.item_style[item]]
        weight = np.float32(world.settings.interests.latent_weight)
        affinity = np.log(np.float32(topics) * interest + np.float32(0.05)) + weight * taste
        shape = items.shape
        return Impressions(
            user_id=user,
            item_id=item,
            ts=np.broadcast_to(ts, shape).reshape(-1),
            affinity=affinity,
            country=np.repeat(world.user_country[users], w),
            closeup_offset=np.repeat(world.closeup_offset[users], w),
            save_offset=np.repeat(world.save_offset[users], w),
            same_topic=np.broadcast_to(same_topic, shape).reshape(-1),
            same_creator=np.broadcast_to(same_creator, shape).reshape(-1),
            exposures=(value & 0xFFFFFFFF).astype(np.float32),
            saved=(flags & SAVED) > 0,
            hidden=(flags & HIDDEN) > 0,
            satiation=self.satiation[users].reshape(-1)[cell],
            creator_recent=recent.reshape(-1),
            memory_slot=slot,
        )

    def remember(
        self, world: World, user: np.ndarray, item: np.ndarray, outcome: dict[str, np.ndarray],
        found: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """Fold one surface's impressions into memory at once (a user sees an item at most once per slate).

        ``found``: each pair's slot as :meth:`impressions` found it (-1 if new), if the table has not changed
        since; saves looking every pair up again.
        """
        if 2 * (len(self.items) + len(user)) > self.items.capacity:  # about to grow: first forget expired items
            expired = ((self.items.keys & np.int64(0xFFFFFFFF)) < self.first_live_item) & (self.items.keys >= 0)
            if np.count_nonzero(expired) > len(self.items) // 4:
                self.items.keep(~expired)
                found = None  # every slot moved
        slot = self.items.slots(pair_key(user, item), distinct=True, found=found)
        flags = np.where(outcome["save"], SAVED, 0) | np.where(outcome["hide"] | outcome["report"], HIDDEN, 0)
        values = self.items.values
        values[slot] = (values[slot] + 1) | (flags.astype(np.int64) << 32)
        self._push_creators(user, world.item_creator[item])
        topic = world.item_topic[item]
        self._seen.append((user, topic))
        weight = sum(w * outcome[a] for a, w in ENGAGEMENT_WEIGHTS.items())
        engaged = weight > 0
        self._engaged.append((user[engaged], topic[engaged], weight[engaged]))

    def _push_creators(self, user: np.ndarray, creator: np.ndarray) -> None:
        """Append each impression's creator to its user's ring (impressions of a user are contiguous, in order)."""
        if not len(user):
            return
        ring = self.recent_creators.shape[1]
        start = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
        count = np.diff(np.r_[start, len(user)])
        first = np.repeat(start, count)
        k = np.arange(len(user)) - first  # the impression's rank within its user's run
        last = np.repeat(count, count)
        keep = k >= last - ring  # only the last ``ring`` of a long run survive; writing only those avoids clashes
        u = user[keep]
        self.recent_creators[u, (self._ring_at[u] + k[keep]) % ring] = creator[keep]
        runs = user[start]
        self._ring_at[runs] = (self._ring_at[runs] + count) % ring

    # ------------------------------------------------------------------ end of day
    def end_of_day(self, world: World, day: int, visitors: np.ndarray, value: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Satiation, tastes, satisfaction and churn after a day; ``u`` are uniforms per visitor. Returns churners."""
        s = world.settings
        topics = len(world.topics)
        index = np.full(world.n_users, -1, np.int64)
        index[visitors] = np.arange(len(visitors))
        seen = self._rows(self._seen, index, len(visitors), topics)
        engaged = self._rows(self._engaged, index, len(visitors), topics)
        self._seen, self._engaged = [], []

        keep = np.float32(0.5 ** (1.0 / s.boredom.half_life_days))
        self.satiation *= keep
        shown = seen.sum(1, keepdims=True)
        has = shown[:, 0] > 0
        self.satiation[visitors[has]] += (1 - keep) * seen[has] / shown[has]

        drift = s.interests.drift
        total = engaged.sum(1, keepdims=True)
        fed = total[:, 0] > 0
        if drift > 0 and fed.any():
            users = visitors[fed]
            mix = (1 - drift) * world.interests[users] + drift * engaged[fed] / total[fed]
            world.interests[users] = mix.astype(np.float32)

        b, c = s.behaviour, s.churn
        worth = np.tanh(value / b.value_scale).astype(np.float32)
        before = self.satisfaction[visitors]
        self.satisfaction *= np.float32(0.97)  # unvisited days slowly forget
        m = np.float32(b.satisfaction_memory)
        self.satisfaction[visitors] = m * before + (1 - m) * worth
        self.bad_visits *= np.float32(c.bad_memory)
        self.bad_visits[visitors] += value <= 0
        base = np.log(c.base / (1 - c.base)) if 0 < c.base < 1 else (-np.inf if c.base == 0 else np.inf)
        logit = base + c.bad_visit * self.bad_visits[visitors] + c.new_user * world.is_new(visitors, day)
        leaving = visitors[u < 1.0 / (1.0 + np.exp(-logit))]
        self.churned[leaving] = True
        return leaving

    @staticmethod
    def _rows(parts: list, index: np.ndarray, n: int, topics: int) -> np.ndarray:
        """Per visitor, the summed weight per topic of ``parts`` ((user, topic[, weight]) arrays)."""
        if not parts:
            return np.zeros((n, topics))
        user = np.concatenate([p[0] for p in parts])
        topic = np.concatenate([p[1] for p in parts]).astype(np.int64)
        weight = np.concatenate([p[2] for p in parts]) if len(parts[0]) == 3 else None
        flat = index[user] * topics + topic
        return np.bincount(flat, weights=weight, minlength=n * topics).reshape(n, topics)

    def entropy(self, world: World, users: np.ndarray | None = None) -> np.ndarray:
        """Shannon entropy (nats) of each user's topic mix: falls as tastes narrow."""
        p = world.interests if users is None else world.interests[users]
        return -(p * np.log(np.maximum(p, 1e-12))).sum(1)
