"""The simulated world: users, creators, items and behaviour; runs any feed policy in a closed loop."""

from homefeed.feed import Feedback, FeedPolicy, PolicyError, RequestBatch, SlateBatch
from homefeed.sim.baselines import BASELINES, ChronologicalPolicy, PopularPolicy, RandomPolicy, make_baseline
from homefeed.sim.simulation import DayOutcome, Simulation, SimulationResult
from homefeed.sim.world import World

__all__ = [
    "BASELINES",
    "ChronologicalPolicy",
    "DayOutcome",
    "FeedPolicy",
    "Feedback",
    "PolicyError",
    "PopularPolicy",
    "RandomPolicy",
    "RequestBatch",
    "Simulation",
    "SimulationResult",
    "SlateBatch",
    "World",
    "make_baseline",
]
