"""A request's context features: what the client sends with it (``context.features``), carried through the batch
to hydration, where declared context features and crosses read them (tests/features/test_declared_impression.py
checks the values equal the offline join's)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from homefeed.feed import SERVED_FEATURES_TYPE, RequestBatch
from homefeed.serve.api import FeedRequest, _context_features


def test_a_request_carries_its_context_features_as_the_impression_map():
    body = FeedRequest(user_id=7, context={"features": {"user-item_affinity_5": 0.25, "user-item_affinity_9": 0.0}})
    column = _context_features(body.context.features)
    assert column.type == SERVED_FEATURES_TYPE
    assert column.to_pylist() == [[("user-item_affinity_5", 0.25), ("user-item_affinity_9", 0.0)]]
    assert _context_features(FeedRequest(user_id=7).context.features) is None


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_context_feature_that_is_no_number_is_refused(value):
    with pytest.raises(ValidationError, match="finite"):
        FeedRequest(user_id=7, context={"features": {"a": value}})


def test_a_batch_keeps_each_request_s_context_features_when_taken_or_sliced():
    context = pa.array([[("a", 1.0)], None, [("a", 3.0), ("b", 4.0)]], SERVED_FEATURES_TYPE)
    batch = RequestBatch(
        pa.array(["r0", "r1", "r2"]),
        np.arange(3, dtype=np.int64),
        np.zeros(3, np.int64),
        np.full(3, 5, np.int32),
        pa.array(["JP"] * 3),
        "home",
        context,
    )
    assert batch.take(np.array([2, 0])).context_features.to_pylist() == [[("a", 3.0), ("b", 4.0)], [("a", 1.0)]]
    assert batch.slice(1, 3).context_features.to_pylist() == [None, [("a", 3.0), ("b", 4.0)]]
    plain = RequestBatch(batch.request_id, batch.user_id, batch.ts, batch.slate_size, batch.country)
    assert plain.take(np.array([1])).context_features is None
