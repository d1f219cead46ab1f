"""The world card: the stylized facts the default world must reproduce, measured over several seeds.

The simulated world is the product's "online": every A/B readout, off-policy check and long-term claim rests on
it.  So it is held to what real feeds show, and this card measures each fact the way an analyst would, on the
default world scaled to ``card.users`` users (items and creators scaled with them), for ``card.seeds`` seeds of
``card.days`` days under the same policies:

* random, popular and chronological (the non-ML baselines); the oracle (ranks by true value: the ceiling) and
  the oracle with ε-exploration; the taste oracle (true tastes, blind to boredom: the best a ranker trained on
  history can learn) with and without a topic cap.  The explore surface is served at random in every run.

A fact holds when every seed's value lies in its band.  ``docs/world.md`` explains each fact and its source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from homefeed.config import SimSettings
from homefeed.sim.baselines import (
    ChronologicalPolicy,
    ExploringPolicy,
    PopularPolicy,
    RandomPolicy,
    TopicCap,
    explore_policy,
)
from homefeed.sim.oracle import OraclePolicy
from homefeed.sim.simulation import DayOutcome, Simulation, SimulationResult

BASELINES = ("random", "popular", "chronological")
#: The topic cap in the card: at most this many items of one topic per slate.
CAP = 5
#: The exploring oracle's share of requests served at random.
EPSILON = 0.2
#: CUPED: the pre-period and the experiment period, each this many days, the last of the run.
CUPED_DAYS = 7
#: Days of posting the supply fact counts (a creator's memory half-life, ``creator_response.memory_days``).
SUPPLY_DAYS = 7
#: The truth check's band: Bonferroni over the card's seven policies at a family-wise 99.9%.  The card runs on fixed
#: seeds as a test, and at 95% a correct world failed one card in twenty (the default seeds drew z = 2.87 for the
#: taste-oracle, while 40 other seeds pooled gave -0.87 and ten times the users -0.22..0.37).  At this scale a bias
#: of 1% of saves gives z of about 4.6, and the 30-47% errors of recomputing truth after the fact give hundreds.
Z_TRUTH = 3.80


@dataclass(frozen=True)
class Fact:
    """One stylized fact: what it says, its band, and its value in each seed."""

    key: str
    statement: str
    band: tuple[float, float]
    values: tuple[float, ...]
    unit: str = ""  # "%" shows values as percentages
    #: One statistic over every seed's runs together (the truth checks: pooling gives the power), repeated once
    #: per seed so that "every seed's value is in the band" still reads right; the card says "pooled".
    pooled: bool = False

    @property
    def value(self) -> float:
        return float(np.mean(self.values))

    @property
    def holds(self) -> bool:
        low, high = self.band
        return all(low <= v <= high for v in self.values)

    def as_dict(self) -> dict:
        return {
            "key": self.key,
            "statement": self.statement,
            "band": [None if np.isinf(b) else b for b in self.band],  # null: unbounded
            "value": self.value,
            "values": list(self.values),
            "holds": self.holds,
            "pooled": self.pooled,
        }


@dataclass
class SeedRun:
    """What one seed's runs measured."""

    results: dict[str, SimulationResult] = field(default_factory=dict)
    entropy: dict[str, tuple[float, float]] = field(default_factory=dict)  # policy -> (start, end)
    cuped_reduction: float = float("nan")


def scaled(settings: SimSettings, users: int, seed: int) -> SimSettings:
    """The same world with ``users`` users: items a day and creators scale with the audience."""
    factor = users / settings.users
    return settings.model_copy(
        update={
            "users": users,
            "seed": seed,
            "items_per_day": max(1, round(settings.items_per_day * factor)),
            "creators": max(1, round(settings.creators * factor)),
        }
    )


def policies(sim: Simulation, seed: int) -> dict[str, Callable[[], object]]:
    candidates = sim.settings.card.oracle_candidates
    lifetime = sim.settings.item_lifetime_days
    return {
        "random": lambda: RandomPolicy(seed=seed, max_age_days=lifetime),
        "popular": lambda: PopularPolicy(max_age_days=lifetime),
        "chronological": lambda: ChronologicalPolicy(max_age_days=lifetime),
        "oracle": lambda: OraclePolicy(sim, candidates, seed, lifetime),
        "taste-oracle": lambda: OraclePolicy(sim, candidates, seed, lifetime, sees="tastes"),
        "taste-oracle+cap": lambda: TopicCap(OraclePolicy(sim, candidates, seed, lifetime, sees="tastes"), CAP),
        "oracle+explore": lambda: ExploringPolicy(
            OraclePolicy(sim, candidates, seed, lifetime), EPSILON, seed, lifetime
        ),
    }


POLICIES = ("random", "popular", "chronological", "oracle", "oracle+explore", "taste-oracle", "taste-oracle+cap")


def run_seed(settings: SimSettings, seed: int, days: int, on_day: Callable[[str, DayOutcome], None] | None) -> SeedRun:
    out = SeedRun()
    for name in POLICIES:
        sim = Simulation(settings.model_copy(update={"seed": seed}))
        tracker = _Tracker(sim, days)
        start = sim.state.entropy(sim.world).copy()

        def record(outcome: DayOutcome, tracker: _Tracker = tracker, name: str = name) -> None:
            tracker.record(outcome)
            if on_day is not None:
                on_day(name, outcome)

        explore = {sim.settings.surfaces.explore: explore_policy(seed, sim.settings.item_lifetime_days)}
        out.results[name] = sim.run(policies(sim, seed)[name](), days, on_day=record, surfaces=explore)
        end = sim.state.entropy(sim.world)
        out.entropy[name] = (float(start[tracker.visited].mean()), float(end[tracker.visited].mean()))
        if name == "random":
            out.cuped_reduction = cuped_reduction(tracker.saves, tracker.active, CUPED_DAYS, sim.world.signup_day())
    return out


class _Tracker:
    """Per user and day: visited, saves; read from the simulation after each day (as an analyst reads logs)."""

    def __init__(self, sim: Simulation, days: int):
        self.sim = sim
        self.visited = np.zeros(sim.world.n_users, bool)
        self.saves = np.zeros((days, sim.world.n_users))
        self.active = np.zeros((days, sim.world.n_users), bool)

    def record(self, outcome: DayOutcome) -> None:
        today = self.sim.today
        self.visited[today.user_id] = True
        self.saves[outcome.day, today.user_id] = today.saves
        self.active[outcome.day, today.user_id] = True


def cuped_reduction(saves: np.ndarray, active: np.ndarray, days: int, signed_up: np.ndarray) -> float:
    """Share of the variance of saves per user-day that CUPED removes, with the same metric before as covariate.

    ``saves`` and ``active`` are (day, user).  The metric is each user's saves per day over the last ``days``
    days, for the users who visited then (an A/B test's units); the covariate is the same over the ``days``
    before.  Users who had not signed up by then have no pre-period and get the covariate's mean, as CUPED
    does for units without pre-period data (Deng et al., 2013).
    """
    total = len(saves)
    post = slice(total - days, total)
    pre = slice(total - 2 * days, total - days)
    users = active[post].any(0)
    y = saves[post].sum(0)[users] / days
    x = saves[pre].sum(0)[users] / days
    had_pre = signed_up[users] <= total - 2 * days
    x = np.where(had_pre, x, x[had_pre].mean())
    theta = np.cov(x, y)[0, 1] / np.var(x, ddof=1)
    return float(1.0 - np.var(y - theta * x, ddof=1) / np.var(y, ddof=1))


def facts(runs: list[SeedRun], settings: SimSettings) -> list[Fact]:
    """The card's facts from each seed's runs."""
    c = settings.card

    def per_seed(fn: Callable[[SeedRun], float]) -> tuple[float, ...]:
        return tuple(float(fn(run)) for run in runs)

    def summary(run: SeedRun, name: str, key: str) -> float:
        return run.results[name].summary()[key]

    def best_baseline_user_days(run: SeedRun) -> float:
        return max(summary(run, n, "user_days") for n in BASELINES)

    def expected_saves(run: SeedRun, name: str, days: slice) -> float:
        """True expected saves per user-day (the truth table's sum): free of the draws' noise."""
        chosen = run.results[name].days[days]
        return sum(d.expected["save"] for d in chosen) / max(sum(d.sessions for d in chosen), 1)

    out = [
        Fact(
            "oracle_over_random_user_days",
            f"over {settings.card.days} days the oracle's active user-days exceed random's by a few to twenty percent",
            c.oracle_over_random_user_days,
            per_seed(lambda r: summary(r, "oracle", "user_days") / summary(r, "random", "user_days") - 1),
            "%",
        ),
        Fact(
            "oracle_over_best_baseline_user_days",
            "... and the best non-ML baseline's by at most ten percent",
            c.oracle_over_best_baseline_user_days,
            per_seed(lambda r: summary(r, "oracle", "user_days") / best_baseline_user_days(r) - 1),
            "%",
        ),
        Fact(
            "oracle_over_random_saves",
            "while the oracle's saves per user-day are multiples of random's",
            c.oracle_over_random_saves,
            per_seed(lambda r: summary(r, "oracle", "saves_per_user_day") / summary(r, "random", "saves_per_user_day")),
        ),
        Fact(
            "cuped_variance_reduction",
            "CUPED with a 7-day pre-period removes 30-60% of the variance of saves per user-day (random policy)",
            c.cuped_variance_reduction,
            per_seed(lambda r: r.cuped_reduction),
            "%",
        ),
        Fact(
            "topic_cap_loses_day_one",
            f"a topic cap ({CAP} per topic) costs a boredom-blind ranker (the taste oracle) true saves per user-day "
            "on day 1 ...",
            (0.0, 1.0),
            per_seed(
                lambda r: (
                    expected_saves(r, "taste-oracle+cap", slice(0, 1)) / expected_saves(r, "taste-oracle", slice(0, 1))
                )
            ),
        ),
        Fact(
            "topic_cap_wins_the_month",
            "... and wins them over the whole run",
            (1.0, np.inf),
            per_seed(
                lambda r: (
                    expected_saves(r, "taste-oracle+cap", slice(None)) / expected_saves(r, "taste-oracle", slice(None))
                )
            ),
        ),
        Fact(
            "exploitation_narrows_tastes",
            "pure exploitation narrows tastes: interest entropy (nats) falls under the oracle ...",
            (-np.inf, 0.0),
            per_seed(lambda r: r.entropy["oracle"][1] - r.entropy["oracle"][0]),
        ),
        Fact(
            "exploration_narrows_less",
            f"... and falls less with {EPSILON:.0%} exploration (difference of the two falls, nats)",
            (0.0, np.inf),
            per_seed(
                lambda r: (
                    (r.entropy["oracle+explore"][1] - r.entropy["oracle+explore"][0])
                    - (r.entropy["oracle"][1] - r.entropy["oracle"][0])
                )
            ),
        ),
        Fact(
            "worse_policy_shorter_sessions",
            "a worse policy gives shorter visits: random's impressions per visit over the oracle's",
            (0.0, 1.0),
            per_seed(
                lambda r: (
                    summary(r, "random", "impressions_per_user_day") / summary(r, "oracle", "impressions_per_user_day")
                )
            ),
        ),
        Fact(
            "new_users_churn_more",
            "new users churn more: daily churn of new visitors over established ones",
            (1.5, np.inf),
            per_seed(lambda r: _churn_ratio(r.results["random"])),
        ),
        Fact(
            "hidden_never_saved",
            "a hidden item shown again is never saved (saves of re-shown hidden items, all policies)",
            (0.0, 0.0),
            per_seed(lambda r: sum(res.total("hidden_reshown_saved") for res in r.results.values())),
        ),
        Fact(
            "starved_creators_quit",
            "concentrated exposure costs supply: popular's items posted in the last week over random's",
            (0.0, 1.0),
            per_seed(lambda r: _posted(r.results["popular"]) / _posted(r.results["random"])),
        ),
    ]
    for name in POLICIES:
        out.append(
            Fact(
                f"truth_matches_saves_{name}",
                f"{name}: realised saves lie within the truth table's interval (z; family-wise 99.9% over policies)",
                (-Z_TRUTH, Z_TRUTH),
                (_truth_z([r.results[name] for r in runs]),) * len(runs),
                pooled=True,
            )
        )
    return out


def _posted(result: SimulationResult) -> int:
    """Items posted over the run's last SUPPLY_DAYS days: one day's count is Poisson noise (at the test's 1,500
    users, popular's over random's ranged 0.82 to 1.01 over 40 runs, the week's 0.85 to 0.99)."""
    return sum(d.items_posted for d in result.days[-SUPPLY_DAYS:])


def _churn_ratio(result: SimulationResult) -> float:
    new = result.total("new_churned") / max(result.total("new_visitors"), 1)
    established = (result.total("churned") - result.total("new_churned")) / max(
        result.total("sessions") - result.total("new_visitors"), 1
    )
    return new / established if established > 0 else np.inf


def _truth_z(results: list[SimulationResult]) -> float:
    """(realised − expected) / sd of saves over every seed's run of one policy."""
    checks = [r.truth_check("save") for r in results]
    realised, expected = sum(c[0] for c in checks), sum(c[1] for c in checks)
    sd = float(np.sqrt(sum(c[2] ** 2 for c in checks)))
    return (realised - expected) / sd if sd > 0 else 0.0


def world_card(
    settings: SimSettings,
    seeds: int | None = None,
    users: int | None = None,
    days: int | None = None,
    on_day: Callable[[int, str, DayOutcome], None] | None = None,
) -> list[Fact]:
    """Measure every fact of the card on ``settings``' world scaled to ``users`` users, over ``seeds`` seeds."""
    c = settings.card
    seeds, users, days = seeds or c.seeds, users or c.users, days or c.days
    if days < 2 * CUPED_DAYS:
        raise ValueError(f"the card needs at least {2 * CUPED_DAYS} days (CUPED's pre-period and period)")
    world = scaled(settings, users, settings.seed)
    runs = []
    for i in range(seeds):
        seed = settings.seed + i

        def report(name: str, outcome: DayOutcome, seed: int = seed) -> None:
            if on_day is not None:
                on_day(seed, name, outcome)

        runs.append(run_seed(world, seed, days, report))
    return facts(runs, settings.model_copy(update={"card": c.model_copy(update={"days": days})}))
