"""Nothing hidden leaks: what a policy is handed carries no tastes, patience, latent styles or truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from homefeed.config import SimSettings
from homefeed.feed import Feedback, RequestBatch, SlateBatch
from homefeed.schema import TABLES
from homefeed.sim import RandomPolicy, Simulation

#: The only fields a policy-facing type may have: what a production request and its logs carry.
#: A production request's fields; ``context_features`` is what a client may send along (``context.features``).
REQUEST_FIELDS = {"request_id", "user_id", "ts", "slate_size", "country", "surface", "context_features"}
FEEDBACK_FIELDS = {"items", "users", "impressions", "engagements"}


class Spy(RandomPolicy):
    """A random policy that keeps everything it is handed."""

    def __init__(self):
        super().__init__(seed=1)
        self.requests: list[RequestBatch] = []
        self.feedback: list[Feedback] = []

    def observe(self, feedback: Feedback) -> None:
        super().observe(feedback)
        self.feedback.append(feedback)

    def rank(self, requests: RequestBatch) -> SlateBatch:
        self.requests.append(requests)
        return super().rank(requests)


def test_policies_see_requests_and_canonical_logs_only(tmp_path):
    sim = Simulation(SimSettings(users=1_500, items_per_day=250, creators=150, seed=4))
    spy = Spy()
    sim.run(spy, 3, tmp_path)
    # The types themselves: no field beyond a production request's and the logs'.
    assert {f.name for f in dataclasses.fields(RequestBatch)} == REQUEST_FIELDS
    assert {f.name for f in dataclasses.fields(Feedback)} == FEEDBACK_FIELDS
    # What was handed over: the same slate size for everyone (never the user's patience or time), and only
    # canonical tables with exactly their canonical columns (never the truth table's probabilities).
    sizes = np.concatenate([r.slate_size for r in spy.requests])
    assert np.all(sizes == sim.settings.sessions.slate_size)
    for requests in spy.requests:
        assert set(vars(requests)) == REQUEST_FIELDS
        assert requests.context_features is None  # the simulator's clients send none: nothing hidden rides along
    seen_tables = 0
    for feedback in spy.feedback:
        for name in FEEDBACK_FIELDS:
            table = getattr(feedback, name)
            if table is not None:
                assert table.schema.equals(TABLES[name]), name
                seen_tables += 1
    assert seen_tables > 10
    # No logged number is a copy of a hidden one: the interests, patience, styles or truth probabilities.
    truth = sim.truth_table()
    w = sim.world
    secrets = [w.interests.ravel(), w.patience, w.attention, w.style_taste.ravel(), w.save_offset, w.closeup_offset]
    secrets += [truth[c].to_numpy() for c in truth.column_names[5:]]
    hidden = np.concatenate(secrets).astype(np.float64)
    hidden = np.unique(hidden[hidden != 0])
    for feedback in spy.feedback:
        for name in ("impressions", "engagements"):
            table = getattr(feedback, name)
            if table is None:
                continue
            for column in table.columns:
                if pa.types.is_floating(column.type):
                    values = column.to_numpy(zero_copy_only=False)
                    values = values[~np.isnan(values) & (values != 0) & (values != 1)]
                    assert not np.isin(values, hidden).any(), column


def test_the_truth_table_is_written_beside_the_logs_never_in_them(tmp_path):
    sim = Simulation(SimSettings(users=600, items_per_day=120, creators=60, seed=5))
    sim.run(RandomPolicy(seed=1), 2, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engagements", "impressions", "items", "truth", "users"]
    truth = sim.truth_table()
    impressions = [p for p in (tmp_path / "impressions").rglob("*.parquet")]
    assert truth.num_rows == sum(pq.read_metadata(p).num_rows for p in impressions)
    for name, schema in TABLES.items():
        assert not {c for c in schema.names if c.startswith("p_")}, name  # no canonical table has a truth column
