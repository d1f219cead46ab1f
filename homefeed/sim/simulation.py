"""The closed loop: each day, users visit, a policy ranks their feeds, users react, logs are written.

The policy sees only what a real system would: the canonical tables, after
logging faults.  The simulation keeps the truth and can say, for any slate,
how likely each action really was (:meth:`Simulation.ground_truth`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from homefeed.config import SimSettings
from homefeed.feed import Feedback, FeedPolicy, PolicyError, RequestBatch, SlateBatch, validate_slates
from homefeed.files import atomic_dir, atomic_write_parquet
from homefeed.schema import ENGAGEMENTS, IMPRESSIONS, TIMESTAMP
from homefeed.sim.behaviour import Exposures, MarketEffects, Reactions, propensities, react, session_value
from homefeed.sim.faults import Faults
from homefeed.sim.world import DAY_US, World, day_start_us

SECOND_US = 1_000_000
LOG_TABLES = ("users", "items", "impressions", "engagements")


@dataclass
class DayOutcome:
    """What happened on one day, counted from the true events (before logging faults)."""

    day: int
    date: dt.date
    sessions: int = 0
    impressions: int = 0
    closeups: int = 0
    clicks: int = 0
    saves: int = 0
    hides: int = 0
    reports: int = 0
    fresh_impressions: int = 0  # item younger than a day
    unsafe_impressions: int = 0
    returned: int = 0  # of today's visitors, how many visit tomorrow (filled in tomorrow)


@dataclass
class SimulationResult:
    policy: str
    days: list[DayOutcome] = field(default_factory=list)
    out_dir: Path | None = None

    def summary(self) -> dict[str, float]:
        """Per-policy outcomes: rates per active user-day, tomorrow's return rate, fresh share."""
        if not self.days:
            raise ValueError("no simulated days to summarize")
        total = {k: sum(getattr(d, k) for d in self.days) for k in asdict(self.days[0]) if k not in ("day", "date")}
        user_days = max(total["sessions"], 1)
        followed = self.days[:-1]  # the last day's returns are not known yet
        return {
            "user_days": total["sessions"],
            "impressions_per_user_day": total["impressions"] / user_days,
            "closeups_per_user_day": total["closeups"] / user_days,
            "clicks_per_user_day": total["clicks"] / user_days,
            "saves_per_user_day": total["saves"] / user_days,
            "hides_per_user_day": total["hides"] / user_days,
            "return_rate": sum(d.returned for d in followed) / max(sum(d.sessions for d in followed), 1),
            "fresh_share": total["fresh_impressions"] / max(total["impressions"], 1),
            "unsafe_share": total["unsafe_impressions"] / max(total["impressions"], 1),
        }


class Simulation:
    """A world plus the state that evolves as feeds are served: exposures, satisfaction, the calendar.

    ``run`` may be called repeatedly; each call continues from the day the last one ended.
    """

    def __init__(self, settings: SimSettings, world: World | None = None):
        self.settings = settings
        self.world = world if world is not None else World.generate(settings)
        self.faults = Faults(settings, self.world)
        self.exposures = Exposures()
        self.satisfaction = np.zeros(self.world.n_users, dtype=np.float32)
        self.visited_yesterday = np.zeros(self.world.n_users, dtype=bool)
        self.day = 0
        # Late events, by arrival day: (table, event day, rows).  Not yet arrived = not in the logs.
        self._pending: dict[int, list[tuple[str, int, pa.Table]]] = {}
        self._last: DayOutcome | None = None

    # ------------------------------------------------------------------ truth
    def ground_truth(
        self,
        user_id: np.ndarray,
        item_id: np.ndarray,
        position: np.ndarray,
        ts: np.ndarray,
        include_fatigue: bool = True,
    ) -> dict[str, np.ndarray]:
        """True probability of each action for these impressions, were they served now."""
        exposures = self.exposures.lookup(user_id, item_id) if include_fatigue else np.zeros(len(item_id), np.int32)
        market = MarketEffects.on_day(self.settings, self.world.countries, self.day)
        return propensities(self.world, user_id, item_id, position, ts, exposures, market).marginals()

    # ------------------------------------------------------------------ loop
    def run(
        self,
        policy: FeedPolicy,
        days: int,
        out_dir: str | Path | None = None,
        on_day: Callable[[DayOutcome], None] | None = None,
    ) -> SimulationResult:
        """Serve ``days`` days of feeds from ``policy``; write the logs under ``out_dir`` if given."""
        if days < 0:
            raise ValueError(f"days must be >= 0, got {days}")
        if not isinstance(policy, FeedPolicy):
            raise PolicyError(f"{policy!r} is not a feed policy (needs name, observe and rank)")
        out = Path(out_dir) if out_dir is not None else None
        result = SimulationResult(policy=policy.name, out_dir=out)
        for _ in range(days):
            outcome = self._step(policy, out)
            result.days.append(outcome)
            if on_day is not None:
                on_day(outcome)
        return result

    def _step(self, policy: FeedPolicy, out: Path | None) -> DayOutcome:
        world, s, day = self.world, self.settings, self.day
        date = s.start_date + dt.timedelta(days=day)
        rng = np.random.default_rng([s.seed, 5, day])

        published = world.add_items(day)
        new_items = world.items_table(slice(published.start if day else 0, published.stop))  # day 0: with backlog
        signup_day = world.signup_day()
        new_user_ids = np.flatnonzero(signup_day == day) if day else np.flatnonzero(signup_day <= 0)
        new_users = world.users_table(new_user_ids)
        logged_items = self.faults.apply("items", new_items, day)
        logged_users = self.faults.apply("users", new_users, day)
        policy.observe(Feedback(items=logged_items, users=logged_users))

        market = MarketEffects.on_day(s, world.countries, day)
        requests = self._requests(rng, day, date, signup_day, market)
        slates = policy.rank(requests)
        validate_slates(slates, requests, world.item_created_us)

        ri = slates.request_index
        user_id = requests.user_id[ri]
        ts = requests.ts[ri] + (slates.position.astype(np.int64) - 1) * (3 * SECOND_US // 2)
        exposures = self.exposures.lookup(user_id, slates.item_id)
        probs = propensities(world, user_id, slates.item_id, slates.position, ts, exposures, market)
        reactions = react(world, probs, slates.item_id, rng)

        self.exposures.add(user_id, slates.item_id)
        value = session_value(world, reactions, slates.item_id, ri, len(requests))
        memory = s.behaviour.satisfaction_memory
        self.satisfaction *= 0.97
        self.satisfaction[requests.user_id] = memory * self.satisfaction[requests.user_id] + (1 - memory) * value

        visited = np.zeros(world.n_users, dtype=bool)
        visited[requests.user_id] = True
        if self._last is not None:
            self._last.returned = int(np.count_nonzero(visited & self.visited_yesterday))
        self.visited_yesterday = visited

        outcome = DayOutcome(
            day=day,
            date=date,
            sessions=len(requests),
            impressions=len(slates),
            closeups=int(reactions.closeup.sum()),
            clicks=int(reactions.click.sum()),
            saves=int(reactions.save.sum()),
            hides=int(reactions.hide.sum()),
            reports=int(reactions.report.sum()),
            fresh_impressions=int(np.count_nonzero(ts - world.item_created_us[slates.item_id] < DAY_US)),
            unsafe_impressions=int(np.count_nonzero(world.item_unsafe[slates.item_id] > 0)),
        )
        self._last = outcome

        impressions = self._impressions(requests, slates, ts)
        engagements = self._engagements(requests, slates, ts, reactions, rng)
        logged = {
            "impressions": self.faults.apply("impressions", impressions, day),
            "engagements": self.faults.apply("engagements", engagements, day),
        }
        arrived: dict[str, list[pa.Table]] = {"impressions": [], "engagements": []}
        for name, table in logged.items():
            for arrival, part in self.faults.delayed(name, table, day):
                if arrival == day:
                    arrived[name].append(part)
                    if out is not None:
                        _write_partition(out, name, date, date, part)
                else:
                    self._pending.setdefault(arrival, []).append((name, day, part))
        for name, event_day, part in self._pending.pop(day, []):
            arrived[name].append(part)
            if out is not None:
                _write_partition(out, name, s.start_date + dt.timedelta(days=event_day), date, part)
        if out is not None:
            _write_partition(out, "items", date, date, logged_items)
            _write_partition(out, "users", date, date, logged_users)
        policy.observe(
            Feedback(
                impressions=pa.concat_tables(arrived["impressions"]),
                engagements=pa.concat_tables(arrived["engagements"]),
            )
        )
        self.day += 1
        return outcome

    def _requests(
        self, rng: np.random.Generator, day: int, date: dt.date, signup_day: np.ndarray, market: MarketEffects
    ) -> RequestBatch:
        """Who visits today, when, and how far they scroll."""
        world, s = self.world, self.settings
        start = day_start_us(s.start_date, day)
        weekday = date.weekday()
        season = s.sessions.weekly_seasonality * np.cos(2 * np.pi * (weekday - 5.5) / 7)
        logit = (
            world.visit_logit
            + s.behaviour.return_sensitivity * np.tanh(self.satisfaction)
            + season
            + market.visit[world.user_country]
        )
        u = rng.random((3, world.n_users))
        signing_up = signup_day == day
        visits = ((signup_day < day) & (u[0] < 1.0 / (1.0 + np.exp(-logit)))) | signing_up
        user_id = np.flatnonzero(visits)
        # Most visits in the afternoon and evening; a new user's first visit follows sign-up.
        ts = start + (rng.beta(2.5, 1.6, len(user_id)) * (DAY_US - 1)).astype(np.int64)
        signup = world.signup_us[user_id]
        first = signing_up[user_id]
        ts[first] = signup[first] + ((start + DAY_US - 1 - signup[first]) * u[1][user_id][first]).astype(np.int64)
        order = np.argsort(ts, kind="stable")
        user_id, ts = user_id[order], ts[order]
        depth = 1 + rng.poisson(np.maximum(world.depth_mean[user_id] - 1, 0.1))
        depth = np.minimum(depth, s.sessions.depth_max).astype(np.int32)
        numbers = pa.array(np.arange(len(user_id), dtype=np.int64)).cast(pa.string())
        request_id = pc.binary_join_element_wise(f"{date:%Y%m%d}-", numbers, "")
        country = pa.array(np.array(world.countries, dtype=object)[world.user_country[user_id]], pa.string())
        return RequestBatch(request_id, user_id.astype(np.int64), ts, depth, country, s.sessions.surface)

    def _impressions(self, requests: RequestBatch, slates: SlateBatch, ts: np.ndarray) -> pa.Table:
        ri = pa.array(slates.request_index)
        n = len(slates)
        score = pa.nulls(n, pa.float64()) if slates.score is None else pa.array(slates.score, pa.float64())
        return pa.Table.from_arrays(
            [
                requests.request_id.take(ri),
                pa.array(ts).cast(TIMESTAMP),
                pa.array(requests.user_id[slates.request_index]),
                pa.array(slates.item_id, pa.int64()),
                pa.repeat(pa.scalar(requests.surface, pa.string()), n),
                pa.array(slates.position, pa.int32()),
                requests.country.take(ri),
                slates.model_versions(),
                slates.experiment_column(),
                score,
                pa.array(slates.propensity, pa.float64()),
                slates.served_features_column(),
            ],
            schema=IMPRESSIONS,
        )

    def _engagements(
        self, requests: RequestBatch, slates: SlateBatch, ts: np.ndarray, r: Reactions, rng: np.random.Generator
    ) -> pa.Table:
        """One row per action, timed after its impression in funnel order."""
        n = len(slates)
        delay = (rng.uniform(1, 6, (3, n)) * SECOND_US).astype(np.int64)
        closeup_ts = ts + delay[0]
        click_ts = closeup_ts + (r.closeup_dwell * SECOND_US).astype(np.int64)
        save_ts = click_ts + (r.click_dwell * SECOND_US).astype(np.int64)
        hide_ts = np.where(r.click, save_ts, closeup_ts) + delay[1]
        report_ts = hide_ts + delay[2]
        parts = [
            ("closeup", r.closeup, closeup_ts, r.closeup_dwell),
            ("click", r.click, click_ts, r.click_dwell),
            ("save", r.save, save_ts, None),
            ("hide", r.hide, hide_ts, None),
            ("report", r.report, report_ts, None),
        ]
        rows = np.concatenate([np.flatnonzero(mask) for _, mask, _, _ in parts])
        action_code = np.concatenate([np.full(int(mask.sum()), i, np.int8) for i, (_, mask, _, _) in enumerate(parts)])
        event_ts = np.concatenate([t[mask] for _, mask, t, _ in parts])
        dwell = np.concatenate(
            [d[mask] if d is not None else np.full(int(mask.sum()), np.nan) for _, mask, _, d in parts]
        )
        order = np.lexsort((action_code, event_ts))
        rows, action_code, event_ts, dwell = rows[order], action_code[order], event_ts[order], dwell[order]
        names = np.array([name for name, *_ in parts], dtype=object)
        return pa.Table.from_arrays(
            [
                pa.array(event_ts).cast(TIMESTAMP),
                pa.array(requests.user_id[slates.request_index[rows]]),
                pa.array(slates.item_id[rows], pa.int64()),
                requests.request_id.take(pa.array(slates.request_index[rows])),
                pa.array(names[action_code], pa.string()),
                pa.array(np.round(dwell, 3), pa.float64(), mask=np.isnan(dwell)),
            ],
            schema=ENGAGEMENTS,
        )


def _write_partition(out: Path, table: str, date: dt.date, written: dt.date, part: pa.Table) -> None:
    """``out/<table>/date=<day>/part-<arrival day>.parquet``, written atomically.

    ``date`` is the simulated day the events belong to (an engagement just after
    midnight stays with its session's day); the file name says when it arrived.
    Nothing is written for no rows: an absent file is how a missing day looks in real logs.
    """
    if part.num_rows:
        atomic_write_parquet(out / table / f"date={date:%Y-%m-%d}" / f"part-{written:%Y%m%d}.parquet", part)


def compare_policies(
    settings: SimSettings,
    policies: list[FeedPolicy],
    days: int,
    out_dirs: dict[str, Path] | None = None,
    on_day: Callable[[str, DayOutcome], None] | None = None,
) -> list[SimulationResult]:
    """Run each policy on its own fresh copy of the same world: a like-for-like comparison.

    Each policy's logs replace its directory in ``out_dirs`` only once its run has finished.
    """
    results = []
    for policy in policies:

        def report(outcome: DayOutcome, name: str = policy.name) -> None:
            if on_day is not None:
                on_day(name, outcome)

        target = (out_dirs or {}).get(policy.name)
        if target is None:
            results.append(Simulation(settings).run(policy, days, None, on_day=report))
            continue
        with atomic_dir(target, allowed=set(LOG_TABLES)) as tmp:
            result = Simulation(settings).run(policy, days, tmp, on_day=report)
        result.out_dir = Path(target)
        results.append(result)
    return results
