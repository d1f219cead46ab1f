"""A visit, slot by slot: the user scrolls a ranked list until patience or time runs out.

The policy ranks a long list (the request's ``slate_size``); the user reads a prefix of it.  Each slot scrolled
past is an impression; it is examined (position-based: with the slot's probability; cascade: while attention
holds) and, if examined, meets the engagement funnel of :mod:`homefeed.sim.behaviour`.  Every slot spends
patience, openings, clicks and saves replenish it, hides and reports spend more; openings and clicks also take
time from the visit's attention.  The user leaves when patience falls to the surface's floor or time is up, so
session length is an outcome of the feed's quality, never a number the policy is told.

Why slot chunks rather than one pass: whether a slot is reached depends on everything above it, so the walk goes
down the lists a few slots at a time for every request still scrolling, vectorized across requests; a chunk
computes its slots together (probabilities, draws, running budgets) and keeps the prefix each user reached.
Each slot gets its own draws, so how the list is cut into chunks changes which draw a slot gets, never its law.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from homefeed.feed import SlateBatch
from homefeed.sim.behaviour import MarketEffects, funnel, realised_value
from homefeed.sim.world import World

#: Slots the walk's first chunk computes, then each later one.  A slot computed past where its user stopped is
#: wasted (sessions end after ~20 slots, spread wide), and a chunk's fixed cost is small beside its thousands of
#: requests, so chunks are short.
FIRST_CHUNK, CHUNK = 16, 8
#: Seconds between two slots' impressions.
SLOT_SECONDS = 1.5
ACTIONS = ("closeup", "click", "save", "hide", "report")


@dataclass
class Visits:
    """One sub-batch of requests (one surface) and the state of each visit, updated by :func:`walk`."""

    user_id: np.ndarray
    ts: np.ndarray
    patience: np.ndarray  # left
    attention: np.ndarray  # time left, in slots
    floor: np.ndarray  # the user leaves this surface when patience falls to this
    seen_topics: np.ndarray  # (n, k) topics of the visit's earlier slots on other surfaces, -1 padded
    seen_creators: np.ndarray  # (n, k) their creators, -1 padded
    value: np.ndarray  # what the visit has been worth so far

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass
class Walk:
    """The reached slots, request-major, and what happened at each; arrays of one entry per impression."""

    request: np.ndarray  # index into the sub-batch
    slate_row: np.ndarray  # index into the SlateBatch
    position: np.ndarray
    user_id: np.ndarray
    item_id: np.ndarray
    ts: np.ndarray
    examined: np.ndarray
    outcome: dict[str, np.ndarray]  # action -> bool
    p_examine: np.ndarray
    truth: dict[str, np.ndarray]  # action -> P(action | the slot was reached), as the world used it
    hidden_before: np.ndarray  # the user had hidden the item before
    reached: np.ndarray  # per request: slots reached
    memory_slot: np.ndarray | None = None  # where the world's memory keeps the (user, item) pair, -1 if new

    def __len__(self) -> int:
        return len(self.item_id)


def slate_matrix(slates: SlateBatch, n_requests: int) -> tuple[np.ndarray, np.ndarray]:
    """Each request's slate as a row of SlateBatch row indices (-1 past its end), and the slate lengths."""
    lengths = np.bincount(slates.request_index, minlength=n_requests)
    width = int(lengths.max(initial=0))
    rows = np.full((n_requests, max(width, 1)), -1, np.int64)
    rows[slates.request_index, slates.position - 1] = np.arange(len(slates))
    return rows, lengths


def walk(
    world: World,
    memory: object,  # homefeed.sim.state.UserState: items and creators it remembers, satiation
    visits: Visits,
    slates: SlateBatch,
    market: MarketEffects,
    shifts: tuple[np.ndarray, np.ndarray] | None,
    rng: np.random.Generator,
) -> Walk:
    """Let every user of ``visits`` scroll their slate; updates their patience, time and value in place."""
    s = world.settings
    n = len(visits)
    rows, lengths = slate_matrix(slates, n)
    width = rows.shape[1]
    cascade = s.position_bias.model == "cascade"
    pb, p = s.position_bias, s.patience
    slot_us = int(SLOT_SECONDS * 1e6)
    prev_examined = np.ones(n, bool)  # the cascade's state at the previous slot
    prev_opened = np.zeros(n, bool)
    parts: list[dict[str, np.ndarray]] = []
    reached = np.zeros(n, np.int64)
    # Topics and creators of the slots computed so far, for boredom within the visit ([:, :start] is filled).
    topic_hist = np.empty((n, width), world.item_topic.dtype)
    creator_hist = np.empty((n, width), np.int32)  # creator ids fit: half the bytes to compare
    carried = visits.seen_topics[:, 0] >= 0  # came from another surface this visit
    alive = np.flatnonzero(lengths > 0)
    start = 0
    while len(alive) and start < width:
        stop = min(start + (CHUNK if start else FIRST_CHUNK), width)
        w = stop - start
        r = alive
        m = len(r)
        cells = rows[r, start:stop]
        valid = cells >= 0  # False only past a slate's end, after every slot that counts
        item = slates.item_id[np.maximum(cells, 0)]
        topic, creator = world.item_topic[item], world.item_creator[item].astype(np.int32)
        topic_hist[r, start:stop], creator_hist[r, start:stop] = topic, creator
        position = np.arange(start + 1, stop + 1, dtype=np.int32)
        # Boredom within the visit: earlier slots of the same topic or creator, here and on other surfaces.
        same_topic = _repeats(topic_hist[r, :start], topic)
        same_creator = _repeats(creator_hist[r, :start], creator)
        c = np.flatnonzero(carried[r])
        if len(c):
            same_topic[c] += _repeats(visits.seen_topics[r[c]], topic[c], within=False)
            same_creator[c] += _repeats(visits.seen_creators[r[c]], creator[c], within=False)

        users = visits.user_id[r]
        ts = visits.ts[r, None] + (position.astype(np.int64) - 1) * slot_us
        imp = memory.impressions(world, users, item, ts, same_topic, same_creator)
        if shifts is not None:
            imp.closeup_shift = np.repeat(shifts[0][r], w)
            imp.hide_shift = np.repeat(shifts[1][r], w)
        given = funnel(world, imp, market)
        probs = given.given_examined()

        u = rng.random((6, m, w), dtype=np.float32)
        opened = u[0] < given.closeup.reshape(m, w)
        clicked = opened & (u[1] < given.click.reshape(m, w))
        saved = clicked & (u[2] < given.save.reshape(m, w))
        hide_p = np.where(clicked, given.hide_clicked.reshape(m, w), given.hide_other.reshape(m, w))
        hidden = ~saved & (u[3] < hide_p)
        reported = hidden & (u[4] < given.report.reshape(m, w))
        if cascade:
            cont = np.where(opened, pb.continue_after_open, pb.continue_prob)  # after each slot, if examined
            cont_in = np.column_stack(
                [np.where(prev_opened[r], pb.continue_after_open, pb.continue_prob), cont[:, :-1]]
            )
            if start == 0:
                cont_in[:, 0] = 1.0  # the first slot is always examined
            chain = np.logical_and.accumulate(u[5] < cont_in, axis=1) & prev_examined[r, None]
            examined_before = np.column_stack([prev_examined[r], chain[:, :-1]])
            p_examine = examined_before * cont_in
            examined = chain
        else:
            p_examine = pb.examination(position)  # per slot: the same for every request
            examined = u[5] < p_examine
        closeup, click, save = examined & opened, examined & clicked, examined & saved
        hide, report = examined & hidden, examined & reported
        unsafe_seen = examined & (world.item_unsafe[item] > 0)

        d_patience = (
            -p.cost_slot
            + p.gain_closeup * closeup
            + p.gain_click * click
            + p.gain_save * save
            - p.cost_hide * hide
            - p.cost_report * report
            - p.cost_unsafe_seen * unsafe_seen
        )
        d_time = -(1.0 + s.sessions.time_closeup * closeup + s.sessions.time_click * click)
        patience = visits.patience[r, None] + np.cumsum(d_patience, axis=1)
        attention = visits.attention[r, None] + np.cumsum(d_time, axis=1)
        leaves = (patience <= visits.floor[r, None]) | (attention <= 0) | ~valid
        left_before = np.column_stack([np.zeros(m, bool), np.logical_or.accumulate(leaves, axis=1)[:, :-1]])
        here = valid & ~left_before
        count = here.sum(1)
        last = np.maximum(count - 1, 0)
        took = count > 0
        visits.patience[r[took]] = patience[took, last[took]]
        visits.attention[r[took]] = attention[took, last[took]]
        reached[r] += count
        if cascade:
            prev_examined[r[took]] = examined[took, last[took]]
            prev_opened[r[took]] = opened[took, last[took]]

        value = realised_value(world, item, examined, click, save, hide, report)
        visits.value[r] += np.where(here, value, 0.0).sum(1)
        flat = here.reshape(-1)
        p_exam = np.broadcast_to(p_examine, (m, w)).reshape(-1)[flat].astype(np.float64)
        parts.append(
            {
                "request": np.repeat(r, w)[flat],
                "slate_row": cells.reshape(-1)[flat],
                "position": np.broadcast_to(position, (m, w)).reshape(-1)[flat],
                "user_id": imp.user_id[flat],
                "item_id": imp.item_id[flat],
                "ts": imp.ts[flat],
                "examined": examined.reshape(-1)[flat],
                **{a: o.reshape(-1)[flat] for a, o in zip(ACTIONS, (closeup, click, save, hide, report), strict=True)},
                "p_examine": p_exam,
                **{f"p_{a}": p_exam * probs[a][flat] for a in ACTIONS},
                "hidden_before": imp.hidden[flat],
                "memory_slot": imp.memory_slot[flat],
            }
        )
        alive = r[(count == w) & ~leaves[:, -1]]
        start = stop

    # Each reached slot's place in the request-major result is known: scatter the chunks there (no sort).
    merged = _empty()
    if parts:
        first = np.cumsum(reached) - reached
        merged = {k: np.empty(int(reached.sum()), v.dtype) for k, v in parts[0].items()}
        for part in parts:
            at = first[part["request"]] + part["position"] - 1
            for k, v in part.items():
                merged[k][at] = v
    return Walk(
        request=merged["request"],
        slate_row=merged["slate_row"],
        position=merged["position"],
        user_id=merged["user_id"],
        item_id=merged["item_id"],
        ts=merged["ts"],
        examined=merged["examined"],
        outcome={a: merged[a] for a in ACTIONS},
        p_examine=merged["p_examine"],
        truth={a: merged[f"p_{a}"] for a in ACTIONS},
        hidden_before=merged["hidden_before"],
        reached=reached,
        memory_slot=merged["memory_slot"],
    )


def _repeats(history: np.ndarray, current: np.ndarray, within: bool = True) -> np.ndarray:
    """Per cell of ``current`` (rows of slots), how many of its row's ``history`` entries equal it, plus (with
    ``within``) how many earlier cells of its row do.  One 2-D comparison per column: the (rows, w, history)
    broadcast it replaces cost several times more."""
    out = np.zeros(current.shape, np.int16)
    for c in range(history.shape[1]):
        out += history[:, c : c + 1] == current
    if within:
        for c in range(current.shape[1] - 1):
            out[:, c + 1 :] += current[:, c : c + 1] == current[:, c + 1 :]
    return out


def _empty() -> dict[str, np.ndarray]:
    ints = ("request", "slate_row", "user_id", "item_id", "ts", "memory_slot")
    bools = ("examined", "hidden_before", *ACTIONS)
    out = {k: np.empty(0, np.int64) for k in ints}
    out["position"] = np.empty(0, np.int32)
    out.update({k: np.empty(0, bool) for k in bools})
    out.update({k: np.empty(0, np.float64) for k in ("p_examine", *(f"p_{a}" for a in ACTIONS))})
    return out


def seen_on_this_visit(walk: Walk, rows: np.ndarray, world: World, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Topics and creators of the slots each request reached, as -1 padded rows: carried to the next surface."""
    width = int(walk.reached.max(initial=0))
    topics = np.full((n, max(width, 1)), -1, np.int16)
    creators = np.full((n, max(width, 1)), -1, np.int32)
    if len(walk):
        topics[rows[walk.request], walk.position - 1] = world.item_topic[walk.item_id]
        creators[rows[walk.request], walk.position - 1] = world.item_creator[walk.item_id]
    return topics, creators
