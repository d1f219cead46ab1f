"""Creators respond to the feed: engagement makes them post more, starvation makes them stop.

A creator remembers (with a half-life of ``creator_response.memory_days``) the items it posted, the impressions
they got and the engagement they earned.  Its posting rate is its starting rate times its engagement per item
relative to the platform's, to the power ``response``, shrunk toward the average while it has posted little,
and normalized so the creators still posting post as much in total as they did at the start: engagement moves
supply between creators, and only creators who quit take supply away.
A creator whose items get less than ``starve_share`` of the average exposure per item, once it has posted
``starve_min_items`` recent items, quits for good.  So a policy that concentrates exposure on a few items costs
fresh supply over weeks: the ecosystem effect real feeds report (creators leave when their posts go unseen).
"""

from __future__ import annotations

import numpy as np

from homefeed.sim.world import World

#: Items' worth of the platform average a creator's own rate is shrunk toward.
PRIOR_ITEMS = 5.0


class CreatorResponse:
    def __init__(self, world: World):
        n = world.n_creators
        self.posted = np.zeros(n)
        self.exposure = np.zeros(n)
        self.engagement = np.zeros(n)

    def end_of_day(self, world: World, posted: np.ndarray, item_id: np.ndarray, engagement: np.ndarray) -> int:
        """Fold in a day (items posted per creator; each impression's item and engagement weight); returns quits."""
        s = world.settings.creator_response
        keep = 0.5 ** (1.0 / s.memory_days)
        creator = world.item_creator[item_id]
        n = world.n_creators
        self.posted = keep * self.posted + posted
        self.exposure = keep * self.exposure + np.bincount(creator, minlength=n)
        self.engagement = keep * self.engagement + np.bincount(creator, weights=engagement, minlength=n)
        total_posted = self.posted.sum()
        if total_posted <= 0 or self.exposure.sum() <= 0:
            return 0
        mean_engagement = self.engagement.sum() / total_posted
        mean_exposure = self.exposure.sum() / total_posted
        if mean_engagement > 0:
            per_item = (self.engagement + PRIOR_ITEMS * mean_engagement) / (self.posted + PRIOR_ITEMS)
            boost = np.clip((per_item / mean_engagement) ** s.response, 0.1, 10.0)
            # Relative: engagement moves posting between creators; only quitting changes the total.
            active = ~world.creator_quit
            base = world.creator_rate[active]
            world.creator_boost = boost * base.sum() / max(float((base * boost[active]).sum()), 1e-12)
        starved = (self.posted >= s.starve_min_items) & (self.exposure < s.starve_share * mean_exposure * self.posted)
        quits = starved & ~world.creator_quit
        world.creator_quit |= starved
        return int(quits.sum())
