"""The pair memory behaves like a dict of (user, item) -> value, whatever the order of inserts and growth."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from homefeed.sim.memory import PairTable, pair_key


@given(
    batches=st.lists(st.lists(st.integers(0, 3_000), min_size=1, max_size=400), min_size=1, max_size=12),
    distinct=st.booleans(),
)
def test_pair_table_counts_like_a_dict(batches, distinct):
    table, reference = PairTable(capacity=16), {}
    for batch in batches:
        keys = np.array(sorted(set(batch)) if distinct else batch, np.int64)
        slots = table.slots(keys, distinct=distinct)
        np.add.at(table.values, slots, 1)
        for k in keys.tolist():
            reference[k] = reference.get(k, 0) + 1
    probe = np.arange(3_100)
    found = table.find(probe)
    got = {int(k): int(table.values[s]) for k, s in zip(probe, found, strict=True) if s >= 0}
    assert got == reference and len(table) == len(reference)
    assert 2 * len(table) <= table.capacity  # never more than half full: probes stay short


def test_keep_forgets_only_what_it_is_told_to():
    table = PairTable(capacity=16)
    users, items = np.repeat(np.arange(50), 20), np.tile(np.arange(20), 50)
    slots = table.slots(pair_key(users, items), distinct=True)
    table.values[slots] = items + 100
    table.keep((table.keys & 0xFFFFFFFF) >= 10)  # forget items 0..9
    found = table.find(pair_key(users, items))
    assert np.all((found >= 0) == (items >= 10))
    np.testing.assert_array_equal(table.values[found[items >= 10]], items[items >= 10] + 100)
