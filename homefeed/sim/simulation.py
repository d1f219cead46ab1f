"""The closed loop: each day, users visit, policies rank their feeds, users scroll and react, logs are written.

A day is served in ``sessions.batches_per_day`` batches.  Before each, the policies learn of the items created
(and visible after ``delays.item_visible_minutes``) and the users signed up by then: nothing from later in the
day.  A share of visits first reaches the explore surface and then goes home with the time and patience left,
so the surfaces share attention, boredom and satisfaction.  The policies see only what a real system would:
the canonical tables, after logging faults, at the end of each day.  The simulation keeps the truth and writes,
beside the logs, the probabilities it used for every impression (:mod:`homefeed.sim.logs`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from homefeed.config import SimSettings
from homefeed.errors import HomefeedError
from homefeed.feed import Feedback, FeedPolicy, PolicyError, RequestBatch, SlateBatch, validate_slates
from homefeed.files import atomic_dir
from homefeed.sim.behaviour import MarketEffects
from homefeed.sim.creators import CreatorResponse
from homefeed.sim.faults import Faults
from homefeed.sim.logs import (
    TRUTH,
    TRUTH_DIR,
    Served,
    engagements_table,
    impressions_table,
    request_ids,
    write_partition,
)
from homefeed.sim.logs import truth_table as truth_rows
from homefeed.sim.session import ACTIONS, SLOT_SECONDS, Visits, Walk, seen_on_this_visit, walk
from homefeed.sim.state import ENGAGEMENT_WEIGHTS, UserState
from homefeed.sim.world import DAY_US, World, day_start_us, labels

SECOND_US = 1_000_000
LOG_TABLES = ("users", "items", "impressions", "engagements", TRUTH_DIR)


@dataclass
class DayOutcome:
    """What happened on one day, counted from the true events (before logging faults)."""

    day: int
    date: dt.date
    sessions: int = 0  # visits (active user-days); a visit may hold a request on each surface
    requests: int = 0
    impressions: int = 0
    explore_impressions: int = 0
    closeups: int = 0
    clicks: int = 0
    saves: int = 0
    hides: int = 0
    reports: int = 0
    fresh_impressions: int = 0  # item younger than a day
    unsafe_impressions: int = 0
    returned: int = 0  # of today's visitors, how many visit tomorrow (filled in tomorrow)
    time_spent: float = 0.0  # slots' worth of time, openings and clicks included
    new_visitors: int = 0  # visitors in their first churn.new_user_days days
    churned: int = 0  # visitors who left for good after today
    new_churned: int = 0
    creators_quit: int = 0
    items_posted: int = 0
    hidden_reshown: int = 0  # impressions of an item the user had hidden before
    hidden_reshown_saved: int = 0
    hidden_reshown_engaged: int = 0  # opened, clicked or saved
    #: The truth table's expectation of each action over what was served, and its Bernoulli variance.
    expected: dict[str, float] = field(default_factory=dict)
    variance: dict[str, float] = field(default_factory=dict)


COUNTS = tuple(f.name for f in fields(DayOutcome) if f.name not in ("day", "date", "expected", "variance"))


@dataclass
class Today:
    """Per visitor of the last simulated day (the world card reads these; no policy does)."""

    user_id: np.ndarray
    saves: np.ndarray
    impressions: np.ndarray
    value: np.ndarray
    new: np.ndarray


@dataclass
class SimulationResult:
    policy: str
    days: list[DayOutcome] = field(default_factory=list)
    out_dir: Path | None = None

    def total(self, key: str) -> float:
        return float(sum(getattr(d, key) for d in self.days))

    def summary(self) -> dict[str, float]:
        """Per-policy outcomes: rates per active user-day, session length, tomorrow's return rate, shares."""
        if not self.days:
            raise ValueError("no simulated days to summarize")
        total = {k: self.total(k) for k in COUNTS}
        user_days = max(total["sessions"], 1)
        followed = self.days[:-1]  # the last day's returns are not known yet
        return {
            "user_days": total["sessions"],
            "impressions_per_user_day": total["impressions"] / user_days,
            "closeups_per_user_day": total["closeups"] / user_days,
            "clicks_per_user_day": total["clicks"] / user_days,
            "saves_per_user_day": total["saves"] / user_days,
            "hides_per_user_day": total["hides"] / user_days,
            "time_per_user_day": total["time_spent"] / user_days,
            "return_rate": sum(d.returned for d in followed) / max(sum(d.sessions for d in followed), 1),
            "fresh_share": total["fresh_impressions"] / max(total["impressions"], 1),
            "unsafe_share": total["unsafe_impressions"] / max(total["impressions"], 1),
            "explore_share": total["explore_impressions"] / max(total["impressions"], 1),
            "churned": total["churned"],
        }

    def truth_check(self, action: str) -> tuple[float, float, float]:
        """(realised count, the truth table's expectation, its standard deviation) of ``action`` over the run."""
        realised = self.total(f"{action}s")
        expected = sum(d.expected.get(action, 0.0) for d in self.days)
        sd = float(np.sqrt(sum(d.variance.get(action, 0.0) for d in self.days)))
        return realised, expected, sd


class Simulation:
    """A world plus what evolves as feeds are served: memory, tastes, satisfaction, creators, the calendar.

    ``run`` may be called repeatedly; each call continues from the day the last one ended.  With
    ``keep_truth`` the truth table is also kept in memory (it is always written beside logs given ``out_dir``).
    """

    def __init__(self, settings: SimSettings, world: World | None = None, keep_truth: bool = False):
        self.settings = settings
        self.world = world if world is not None else World.generate(settings)
        self.faults = Faults(settings, self.world)
        self.state = UserState(self.world)
        self.creators = CreatorResponse(self.world)
        self.visited_yesterday = np.zeros(self.world.n_users, dtype=bool)
        self.day = 0
        self.today: Today | None = None
        self._signup_day = self.world.signup_day()
        self._keep_truth = keep_truth
        self._truth: list[pa.Table] = []
        self._truth_dirs: list[Path] = []
        # Late events, by arrival day: (table, event day, rows).  Not yet arrived = not in the logs.
        self._pending: dict[int, list[tuple[str, int, pa.Table]]] = {}
        self._last: DayOutcome | None = None
        # Items and users logged but not yet visible to the policies, in creation / sign-up order.
        self._unseen_items: list[pa.Table] = []
        self._unseen_users: list[pa.Table] = []

    # ------------------------------------------------------------------ truth
    def truth_table(self) -> pa.Table:
        """Every impression's truth so far: kept in memory, or read back from where the runs wrote it."""
        tables = list(self._truth)
        if not tables:
            for root in self._truth_dirs:
                files = sorted((root / TRUTH_DIR).glob("date=*/*.parquet"))
                tables += [pq.read_table(f, schema=TRUTH) for f in files]
        if not tables:
            raise HomefeedError("no truth was kept: run with out_dir, or create the Simulation with keep_truth=True")
        return pa.concat_tables(tables)

    def ground_truth(
        self,
        request_id: pa.Array | np.ndarray | list,
        position: np.ndarray,
        at_position: np.ndarray | int | None = None,
    ) -> dict[str, np.ndarray]:
        """The probabilities the world used for these logged impressions (by request and slot), as recorded.

        Keys: ``examine`` and each action, each the probability given the slot was reached.  ``at_position``
        asks what they would have been at another slot, the item's own appeal unchanged (the position-based
        examination model only: under the cascade, examination depends on what the user did above).
        """
        truth = self.truth_table()
        wanted = pa.table({"request_id": pa.array(request_id, pa.string()), "position": pa.array(position, pa.int32())})
        wanted = wanted.append_column("_row", pa.array(np.arange(len(wanted))))
        joined = wanted.join(truth, ["request_id", "position"], join_type="left outer").sort_by("_row")
        missing = joined["p_examine"].null_count
        if missing:
            raise HomefeedError(f"ground_truth: {missing} of {len(wanted)} impressions are not in the truth table")
        out = {"examine": joined["p_examine"].to_numpy()}
        out.update({a: joined[f"p_{a}"].to_numpy() for a in ACTIONS})
        if at_position is not None:
            if self.settings.position_bias.model != "position_based":
                raise HomefeedError("ground_truth(at_position=...) needs the position-based examination model")
            target = self.settings.position_bias.examination(np.broadcast_to(at_position, len(wanted)))
            ratio = target / out["examine"]
            out = {k: v * ratio for k, v in out.items()}
        return out

    def moved_out(self, old: Path, new: Path) -> None:
        """The logs of a run were moved (an atomic directory swap): read the truth from their new place."""
        self._truth_dirs = [new if d == old else d for d in self._truth_dirs]

    # ------------------------------------------------------------------ loop
    def run(
        self,
        policy: FeedPolicy,
        days: int,
        out_dir: str | Path | None = None,
        on_day: Callable[[DayOutcome], None] | None = None,
        surfaces: Mapping[str, FeedPolicy] | None = None,
    ) -> SimulationResult:
        """Serve ``days`` days of feeds; write the logs under ``out_dir`` if given.

        ``policy`` serves every surface not named in ``surfaces`` (e.g. ``{"explore": RandomPolicy()}``).
        """
        if days < 0:
            raise ValueError(f"days must be >= 0, got {days}")
        serving = {self.settings.sessions.surface: policy, self.settings.surfaces.explore: policy}
        for name, other in (surfaces or {}).items():
            if name not in serving:
                raise PolicyError(f"unknown surface {name!r}; the world has {sorted(serving)}")
            serving[name] = other
        for p in serving.values():
            if not isinstance(p, FeedPolicy):
                raise PolicyError(f"{p!r} is not a feed policy (needs name, observe and rank)")
        out = Path(out_dir) if out_dir is not None else None
        if out is not None and out not in self._truth_dirs:
            self._truth_dirs.append(out)
        result = SimulationResult(policy=policy.name, out_dir=out)
        for _ in range(days):
            outcome = self._step(serving, out)
            result.days.append(outcome)
            if on_day is not None:
                on_day(outcome)
        return result

    def _observe(self, serving: dict[str, FeedPolicy], feedback: Feedback) -> None:
        seen: set[int] = set()
        for policy in serving.values():
            if id(policy) not in seen:
                seen.add(id(policy))
                policy.observe(feedback)

    def _step(self, serving: dict[str, FeedPolicy], out: Path | None) -> DayOutcome:
        world, s, day = self.world, self.settings, self.day
        date = s.start_date + dt.timedelta(days=day)
        rng = np.random.default_rng([s.seed, 5, day])
        start = day_start_us(s.start_date, day)

        published = world.add_items(day)
        posted = np.bincount(world.item_creator[published], minlength=world.n_creators)
        self._unseen_items.append(world.items_table(slice(published.start if day else 0, published.stop)))
        signing_up = np.flatnonzero(self._signup_day == day) if day else np.flatnonzero(self._signup_day <= 0)
        signing_up = signing_up[np.argsort(world.signup_us[signing_up], kind="stable")]
        self._unseen_users.append(world.users_table(signing_up))

        market = MarketEffects.on_day(s, world.countries, day)
        visit = self._visits(rng, day, market)
        n_visits = len(visit["user_id"])
        value = np.zeros(n_visits)
        served: list[tuple[RequestBatch, SlateBatch, Walk]] = []
        revealed = {"items": [], "users": []}
        home, explore = s.sessions.surface, s.surfaces.explore
        bounds = start + (np.arange(s.sessions.batches_per_day + 1) * DAY_US) // s.sessions.batches_per_day
        lag = int(s.delays.item_visible_minutes * 60 * SECOND_US)
        for b in range(s.sessions.batches_per_day):
            items = self._reveal("items", "created_at", bounds[b] - lag, day)
            users = self._reveal("users", "signup_at", bounds[b + 1], day)
            revealed["items"].append(items)
            revealed["users"].append(users)
            self._observe(serving, Feedback(items=items, users=users))
            batch = np.flatnonzero((visit["ts"] >= bounds[b]) & (visit["ts"] < bounds[b + 1]))
            if not len(batch):
                continue
            n = len(batch)
            patience, attention = visit["patience"][batch].copy(), visit["attention"][batch].copy()
            ts = visit["ts"][batch].copy()
            seen = (np.full((n, 1), -1, np.int16), np.full((n, 1), -1, np.int32))
            goes = np.flatnonzero(visit["explore"][batch])
            if len(goes):
                floor = s.surfaces.explore_leave_below * patience[goes]
                first = (seen[0][goes], seen[1][goes])
                done, scrolled = self._serve(
                    serving[explore], explore, batch[goes], visit["user_id"][batch[goes]], ts[goes], patience[goes],
                    attention[goes], floor, first, value, market, rng, date, served,
                )  # fmt: skip
                patience[goes], attention[goes] = done.patience, done.attention
                ts[goes] += scrolled.reached * int(SLOT_SECONDS * SECOND_US) + 5 * SECOND_US
                topics, creators = seen_on_this_visit(scrolled, np.arange(len(goes)), world, len(goes))
                seen = (np.full((n, topics.shape[1]), -1, np.int16), np.full((n, topics.shape[1]), -1, np.int32))
                seen[0][goes], seen[1][goes] = topics, creators
            self._serve(
                serving[home], home, batch, visit["user_id"][batch], ts, patience, attention, np.zeros(n), seen,
                value, market, rng, date, served,
            )  # fmt: skip

        return self._end_of_day(serving, out, day, date, rng, visit, value, served, revealed, posted)

    def _reveal(self, kind: str, column: str, cutoff: int, day: int) -> pa.Table:
        """The logged rows of ``kind`` whose ``column`` is before ``cutoff``: what the policies may now know."""
        queue = self._unseen_items if kind == "items" else self._unseen_users
        pending = pa.concat_tables(queue) if len(queue) > 1 else queue[0]
        stamps = pending[column].cast(pa.int64()).to_numpy()
        n = int(np.searchsorted(stamps, cutoff, side="left"))
        queue[:] = [pending.slice(n)]
        return self.faults.apply(kind, pending.slice(0, n), day)

    def _visits(self, rng: np.random.Generator, day: int, market: MarketEffects) -> dict[str, np.ndarray]:
        """Who visits today, when, with how much time and patience, and whether they reach explore first."""
        world, s = self.world, self.settings
        date = s.start_date + dt.timedelta(days=day)
        start = day_start_us(s.start_date, day)
        season = s.sessions.weekly_seasonality * np.cos(2 * np.pi * (date.weekday() - 5.5) / 7)
        logit = (
            world.visit_logit
            + s.behaviour.return_sensitivity * self.state.satisfaction
            + season
            + market.visit[world.user_country]
        )
        n = world.n_users
        u = rng.random((4, n))
        z = rng.standard_normal((2, n))  # drawn for every user, so two policies' runs share each user's draws
        signing_up = self._signup_day == day
        visits = ((self._signup_day < day) & ~self.state.churned & (u[0] < 1.0 / (1.0 + np.exp(-logit)))) | signing_up
        user_id = np.flatnonzero(visits)
        # Most visits in the afternoon and evening; a new user's first visit follows sign-up.
        ts = start + (rng.beta(2.5, 1.6, n)[user_id] * (DAY_US - 1)).astype(np.int64)
        signup = world.signup_us[user_id]
        first = signing_up[user_id]
        ts[first] = signup[first] + ((start + DAY_US - 1 - signup[first]) * u[1][user_id][first]).astype(np.int64)
        order = np.argsort(ts, kind="stable")
        user_id, ts = user_id[order], ts[order]
        p, a = s.patience, s.sessions
        new = world.is_new(user_id, day)
        patience = world.patience[user_id] * np.exp(p.visit_spread * z[0][user_id] - p.visit_spread**2 / 2)
        patience = np.where(new, p.new_user_factor * patience, patience)
        attention = world.attention[user_id] * np.exp(
            a.attention_visit_spread * z[1][user_id] - a.attention_visit_spread**2 / 2
        )
        return {
            "user_id": user_id,
            "ts": ts,
            "patience": patience,
            "attention": attention,
            "explore": u[2][user_id] < s.surfaces.explore_share,
            "new": new,
        }

    def _serve(
        self, policy: FeedPolicy, surface: str, visit_index: np.ndarray, user_id: np.ndarray, ts: np.ndarray,
        patience: np.ndarray,
        attention: np.ndarray, floor: np.ndarray, seen: tuple[np.ndarray, np.ndarray], value: np.ndarray,
        market: MarketEffects, rng: np.random.Generator, date: dt.date,
        served: list[tuple[RequestBatch, SlateBatch, Walk]],
    ) -> tuple[Visits, Walk]:  # fmt: skip
        """One surface's requests of a batch: rank, check, let users scroll, remember, record."""
        world, s = self.world, self.settings
        suffix = "" if surface == s.sessions.surface else f".{surface}"
        requests = RequestBatch(
            request_id=request_ids(date, visit_index, suffix),
            user_id=user_id.astype(np.int64),
            ts=ts.astype(np.int64),
            slate_size=np.full(len(user_id), s.sessions.slate_size, np.int32),
            country=labels(world.countries, world.user_country[user_id]),
            surface=surface,
        )
        slates = policy.rank(requests)
        validate_slates(slates, requests, world.item_created_us)
        visits = Visits(user_id, requests.ts, patience, attention, floor, seen[0], seen[1], np.zeros(len(user_id)))
        shifts = self._scoped_shifts(market, requests, slates) if market.scoped else None
        done = walk(world, self.state, visits, slates, market, shifts, rng)
        self.state.remember(world, done.user_id, done.item_id, done.outcome, found=done.memory_slot)
        value[visit_index] += visits.value
        served.append((requests, slates, done))
        return visits, done

    def _scoped_shifts(
        self, market: MarketEffects, requests: RequestBatch, slates: SlateBatch
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per request, the closeup and hide shifts of market shifts scoped to its surface or arm."""
        n = len(requests)
        closeup, hide = np.zeros(n), np.zeros(n)
        first_row = np.searchsorted(slates.request_index, np.arange(n))
        has = first_row < len(slates)
        has[has] = slates.request_index[first_row[has]] == np.flatnonzero(has)
        first_row = np.where(has, first_row, -1)
        experiments = slates.experiment_column().take(pa.array(np.maximum(first_row, 0)))
        country = self.world.user_country[requests.user_id]
        for c, surface, experiment, arm, closeup_shift, hide_shift in market.scoped:
            mask = (country == c) & (first_row >= 0)
            if surface is not None:
                mask &= requests.surface == surface
            if experiment is not None:
                got = pc.map_lookup(experiments, pa.scalar(experiment), "first")
                hit = pc.is_valid(got) if arm is None else pc.fill_null(pc.equal(got, arm), False)
                mask &= hit.to_numpy(zero_copy_only=False)
            closeup[mask] += closeup_shift
            hide[mask] += hide_shift
        return closeup, hide

    def _end_of_day(
        self, serving: dict[str, FeedPolicy], out: Path | None, day: int, date: dt.date, rng: np.random.Generator,
        visit: dict[str, np.ndarray], value: np.ndarray, served: list[tuple[RequestBatch, SlateBatch, Walk]],
        revealed: dict[str, list[pa.Table]], posted: np.ndarray,
    ) -> DayOutcome:  # fmt: skip
        world, s = self.world, self.settings
        visitors = visit["user_id"]
        u = rng.random(len(visitors))
        leaving = self.state.end_of_day(world, day, visitors, value, u)
        walks = [w for _, _, w in served]
        item_id = np.concatenate([w.item_id for w in walks]) if walks else np.empty(0, np.int64)
        engagement = sum(
            wt * np.concatenate([w.outcome[a] for w in walks]) for a, wt in ENGAGEMENT_WEIGHTS.items()
        ) if walks else np.empty(0)  # fmt: skip
        quits = self.creators.end_of_day(world, posted, item_id, engagement)
        expiry = day_start_us(s.start_date, day - s.item_lifetime_days)
        self.state.first_live_item = int(np.searchsorted(world.item_created_us, expiry))

        visited = np.zeros(world.n_users, dtype=bool)
        visited[visitors] = True
        if self._last is not None:
            self._last.returned = int(np.count_nonzero(visited & self.visited_yesterday))
        self.visited_yesterday = visited
        new_leaving = np.isin(leaving, visitors[visit["new"]])
        outcome = self._count(day, date, served, visitors, visit["new"], len(leaving), int(new_leaving.sum()))
        outcome.creators_quit, outcome.items_posted = quits, int(posted.sum())
        self._last = outcome
        self._record_today(visitors, visit["new"], value, served)

        self._log(serving, out, day, date, rng, served, revealed)
        self.day += 1
        return outcome

    def _count(
        self, day: int, date: dt.date, served: list, visitors: np.ndarray, new: np.ndarray, churned: int,
        new_churned: int,
    ) -> DayOutcome:  # fmt: skip
        world, s = self.world, self.settings
        outcome = DayOutcome(day=day, date=date, sessions=len(visitors), new_visitors=int(new.sum()))
        outcome.churned, outcome.new_churned = churned, new_churned
        for requests, _, w in served:
            outcome.requests += len(requests)
            outcome.impressions += len(w)
            if requests.surface == s.surfaces.explore:
                outcome.explore_impressions += len(w)
            for a in ACTIONS:
                setattr(outcome, f"{a}s", getattr(outcome, f"{a}s") + int(w.outcome[a].sum()))
                p = w.truth[a]
                outcome.expected[a] = outcome.expected.get(a, 0.0) + float(p.sum())
                outcome.variance[a] = outcome.variance.get(a, 0.0) + float((p * (1 - p)).sum())
            outcome.fresh_impressions += int(np.count_nonzero(w.ts - world.item_created_us[w.item_id] < DAY_US))
            outcome.unsafe_impressions += int(np.count_nonzero(world.item_unsafe[w.item_id] > 0))
            outcome.time_spent += float(
                len(w) + s.sessions.time_closeup * w.outcome["closeup"].sum() + s.sessions.time_click
                * w.outcome["click"].sum()
            )  # fmt: skip
            hidden = w.hidden_before
            outcome.hidden_reshown += int(hidden.sum())
            outcome.hidden_reshown_saved += int((hidden & w.outcome["save"]).sum())
            outcome.hidden_reshown_engaged += int((hidden & (w.outcome["closeup"] | w.outcome["click"])).sum())
        return outcome

    def _record_today(self, visitors: np.ndarray, new: np.ndarray, value: np.ndarray, served: list) -> None:
        index = np.full(self.world.n_users, -1, np.int64)
        index[visitors] = np.arange(len(visitors))
        saves = np.zeros(len(visitors), np.int64)
        impressions = np.zeros(len(visitors), np.int64)
        for _, _, w in served:
            rows = index[w.user_id]
            saves += np.bincount(rows, weights=w.outcome["save"], minlength=len(visitors)).astype(np.int64)
            impressions += np.bincount(rows, minlength=len(visitors))
        self.today = Today(visitors, saves, impressions, value, new)

    def _log(
        self, serving: dict[str, FeedPolicy], out: Path | None, day: int, date: dt.date, rng: np.random.Generator,
        served: list, revealed: dict[str, list[pa.Table]],
    ) -> None:  # fmt: skip
        """Write the day's logs (after faults and delays) and the truth; hand the logs to the policies."""
        s = self.settings
        end = day_start_us(s.start_date, day) + DAY_US
        today = Served.combine(served)
        imp = impressions_table(today) if served else _empty("impressions")
        eng, rows, later = engagements_table(self.world, today, rng, end) if served else (_empty("engagements"), [], [])
        truth_today = truth_rows(today) if served else TRUTH.empty_table()
        scope = imp.select(["surface", "experiments"]).take(pa.array(rows, pa.int64()))
        on_time, next_day = pa.array(~np.asarray(later, bool)), pa.array(np.asarray(later, bool))
        logged = {
            "impressions": self.faults.apply_scoped("impressions", imp, day),
            "engagements": self.faults.apply_scoped("engagements", eng.filter(on_time), day, scope.filter(on_time)),
        }
        if np.any(later):
            late = self.faults.apply("engagements", eng.filter(next_day), day + 1, scope.filter(next_day))
            self._pending.setdefault(day + 1, []).append(("engagements", day + 1, late))
        arrived: dict[str, list[pa.Table]] = {"impressions": [], "engagements": []}
        files: dict[tuple[str, int], list[pa.Table]] = {}  # (table, event day) -> the parts arriving today
        for name, (table, table_scope) in logged.items():
            for arrival, part in self.faults.delayed(name, table, day, table_scope):
                if arrival == day:
                    files.setdefault((name, day), []).append(part)
                else:
                    self._pending.setdefault(arrival, []).append((name, day, part))
        for name, event_day, part in self._pending.pop(day, []):
            files.setdefault((name, event_day), []).append(part)
        for (name, event_day), parts in sorted(files.items()):
            arrived[name] += parts
            if out is not None:  # one file per event day and arrival day: late parts join today's
                part = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
                write_partition(out, name, s.start_date + dt.timedelta(days=event_day), date, part)
        if self._keep_truth:
            self._truth.append(truth_today)
        if out is not None:
            write_partition(out, TRUTH_DIR, date, date, truth_today)
            write_partition(out, "items", date, date, pa.concat_tables(revealed["items"]))
            write_partition(out, "users", date, date, pa.concat_tables(revealed["users"]))
        self._observe(
            serving,
            Feedback(
                impressions=pa.concat_tables(arrived["impressions"]),
                engagements=pa.concat_tables(arrived["engagements"]),
            ),
        )


def _empty(name: str) -> pa.Table:
    from homefeed.schema import TABLES

    return TABLES[name].empty_table()


#: A policy, or what makes one from the simulation it will run in (the oracle reads that simulation's state).
PolicyOrMaker = FeedPolicy | Callable[["Simulation"], FeedPolicy]


def compare_policies(
    settings: SimSettings,
    policies: list[PolicyOrMaker],
    days: int,
    out_dirs: dict[str, Path] | None = None,
    on_day: Callable[[str, DayOutcome], None] | None = None,
    explore: Callable[[], FeedPolicy] | None = None,
) -> list[SimulationResult]:
    """Run each policy on its own fresh copy of the same world: a like-for-like comparison.

    ``explore`` makes the policy that serves the explore surface in every run (default: each policy serves
    both surfaces).  Each policy's logs replace its directory in ``out_dirs`` only once its run has finished.
    """
    results = []
    for item in policies:
        sim = Simulation(settings)
        policy = item if isinstance(item, FeedPolicy) else item(sim)

        def report(outcome: DayOutcome, name: str = policy.name) -> None:
            if on_day is not None:
                on_day(name, outcome)

        surfaces = {settings.surfaces.explore: explore()} if explore is not None else None
        target = (out_dirs or {}).get(policy.name)
        if target is None:
            results.append(sim.run(policy, days, None, on_day=report, surfaces=surfaces))
            continue
        with atomic_dir(target, allowed=set(LOG_TABLES)) as tmp:
            result = sim.run(policy, days, tmp, on_day=report, surfaces=surfaces)
        result.out_dir = Path(target)
        sim.moved_out(tmp, Path(target))
        results.append(result)
    return results
