"""Bad world settings are clear errors when the file loads, before anything is simulated."""

from __future__ import annotations

import pytest

from homefeed import config
from homefeed.config import ConfigError


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"churn": {"base": -0.01}}, "sim.churn.base: Input should be greater than or equal to 0"),
        ({"surfaces": {"explore_share": 1.5}}, "sim.surfaces.explore_share: Input should be less than or equal to 1"),
        ({"delays": {"next_day_save_share": 2}}, "sim.delays.next_day_save_share"),
        ({"patience": {"mean": 0}}, "sim.patience.mean: Input should be greater than 0"),
        ({"boredom": {"daily_topic": -1}}, "sim.boredom.daily_topic"),
        ({"creator_response": {"response": -0.5}}, "sim.creator_response.response"),
        ({"sessions": {"slate_size": 0}}, "sim.sessions.slate_size"),
        ({"card": {"cuped_variance_reduction": [0.6, 0.3]}}, "low end 0.6 is above its high end 0.3"),
        ({"card": {"cuped_variance_reduction": [0.3, 1.2]}}, "reaches outside what the value can be"),
        ({"card": {"oracle_over_random_saves": [-1, 3]}}, "reaches outside"),
        ({"markets": {"racy_tolerance": {"XX": 1.0}}}, "markets.racy_tolerance: ['XX'] are not markets"),
        ({"surfaces": {"explore": "home"}}, "surfaces.explore: must differ"),
        ({"position_bias": {"model": "click_chain"}}, "sim.position_bias.model"),
    ],
)
def test_bad_settings_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.parse({"sim": section}, source="homefeed.toml")
