"""The simulated world: users, creators, items and behaviour; runs any feed policy in a closed loop."""

from homefeed.feed import Experiment, Feedback, FeedPolicy, PolicyError, RequestBatch, SlateBatch
from homefeed.sim.baselines import (
    BASELINES,
    ChronologicalPolicy,
    ExploringPolicy,
    PopularPolicy,
    RandomPolicy,
    TopicCap,
    explore_policy,
    make_baseline,
)
from homefeed.sim.oracle import OraclePolicy
from homefeed.sim.simulation import DayOutcome, Simulation, SimulationResult
from homefeed.sim.world import World

__all__ = [
    "BASELINES",
    "ChronologicalPolicy",
    "DayOutcome",
    "Experiment",
    "ExploringPolicy",
    "FeedPolicy",
    "Feedback",
    "OraclePolicy",
    "PolicyError",
    "PopularPolicy",
    "RandomPolicy",
    "RequestBatch",
    "Simulation",
    "SimulationResult",
    "SlateBatch",
    "TopicCap",
    "World",
    "explore_policy",
    "make_baseline",
]
