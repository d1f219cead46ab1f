"""The ranking pipeline on a trained world: in the simulator's loop, its filters, and how it degrades."""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pytest

from homefeed.features.store import StoreError
from homefeed.schema import ENGAGEMENTS
from homefeed.serve.pipeline import FALLBACK
from homefeed.train.nn import NNRanker
from homefeed.train.registry import Registry
from tests.serve.conftest import SERVE_TS_US, active_users, make_pipeline, requests_for, settings_for

MINUTE = 60_000_000


def hides(users: np.ndarray, items: np.ndarray, ts_us: int) -> pa.Table:
    n = len(users)
    return pa.table(
        {
            "ts": pa.array(np.full(n, ts_us)).cast(ENGAGEMENTS.field("ts").type),
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(items, pa.int64()),
            "request_id": pa.array(["r"] * n),
            "action": pa.array(["hide"] * n),
            "dwell": pa.nulls(n, pa.float64()),
        },
        schema=ENGAGEMENTS,
    )


def test_the_simulator_runs_the_pipeline_in_its_closed_loop(served_world, tmp_path):
    settings = settings_for(served_world, tmp_path)
    pipeline = make_pipeline(settings)
    sim = copy.deepcopy(served_world.sim)  # continue the world the model was trained on, without changing it
    result = sim.run(pipeline, 1, tmp_path / "logs")
    summary = result.summary()
    assert summary["impressions_per_user_day"] > 5
    assert summary["saves_per_user_day"] > 0
    logged = pa.dataset.dataset(str(tmp_path / "logs" / "impressions"), format="parquet").to_table()
    assert set(logged["model_version"].to_pylist()) == {served_world.version}
    p = logged["propensity"].to_numpy()
    assert np.all((p > 0) & (p <= 1))


def test_unsafe_items_never_appear_and_explain_says_which_filter_removed_them(served_world, tmp_path):
    settings = settings_for(served_world, tmp_path)
    pipeline = make_pipeline(settings)
    served = pipeline.serve(requests_for(active_users(settings, 300)), explain=True)
    cat = pipeline.catalogue
    rows = cat.rows(served.slates.item_id)
    assert len(rows) > 1000 and np.all(rows >= 0)
    assert not cat.unsafe[rows].any()
    removed = {r.reason: len(r.item_id) for r in served.trace.removed}
    assert removed.get("unsafe", 0) > 0  # there were unsafe candidates, and the filter took them out
    unsafe_removed = next(r for r in served.trace.removed if r.reason == "unsafe")
    assert cat.unsafe[cat.rows(unsafe_removed.item_id)].all()


def test_hidden_items_never_return_to_that_user(served_world, tmp_path):
    settings = settings_for(served_world, tmp_path)
    settings = settings.model_copy(
        update={"serve": settings.serve.model_copy(update={"surfaces": _no_seen_filter(settings)})}
    )
    pipeline = make_pipeline(settings)
    users = active_users(settings, 100)
    first = pipeline.rank(requests_for(users))
    again = pipeline.rank(requests_for(users, SERVE_TS_US + MINUTE))
    key = lambda s: set(zip(users[s.request_index].tolist(), s.item_id.tolist(), strict=True))  # noqa: E731
    hidden = {(u, i) for (u, i) in key(first) if i % 3 == 0}
    assert hidden & key(again), "without the hides, the same items come back (no seen filter here)"
    u, i = np.array(sorted(hidden)).T
    pipeline.record_engagements(hides(u, i, SERVE_TS_US + MINUTE))
    for minutes in (2, 60 * 24, 60 * 24 * 6):
        later = pipeline.rank(requests_for(users, SERVE_TS_US + minutes * MINUTE))
        assert not hidden & key(later)


def _no_seen_filter(settings):
    return {
        name: surface.model_copy(update={"filters": [f for f in surface.filters if f != "seen"]})
        for name, surface in settings.serve.surfaces.items()
    }


def test_items_shown_are_not_shown_again_within_the_seen_window(served_world, tmp_path):
    settings = settings_for(served_world, tmp_path)
    pipeline = make_pipeline(settings)
    users = active_users(settings, 100)
    first = pipeline.rank(requests_for(users))
    impressions = pa.table(
        {
            "user_id": pa.array(users[first.request_index]),
            "item_id": pa.array(first.item_id),
            "ts": pa.array(np.full(len(first), SERVE_TS_US)).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    from homefeed.feed import Feedback

    pipeline.observe(Feedback(impressions=impressions))
    shown = set(zip(users[first.request_index].tolist(), first.item_id.tolist(), strict=True))
    again = pipeline.rank(requests_for(users, SERVE_TS_US + MINUTE))
    assert not shown & set(zip(users[again.request_index].tolist(), again.item_id.tolist(), strict=True))
    hours = settings.serve.surfaces["home"].seen_hours
    much_later = pipeline.rank(requests_for(users, SERVE_TS_US + int((hours + 1) * 60) * MINUTE))
    assert shown & set(zip(users[much_later.request_index].tolist(), much_later.item_id.tolist(), strict=True))


class BrokenStore:
    """Every call fails, as a store that cannot be reached does."""

    location = "redis://nowhere"

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise StoreError("cannot reach Redis at redis://nowhere: Connection refused")

        return fail


def test_an_unreachable_store_degrades_to_the_popularity_fallback_and_recovers(served_world, tmp_path):
    settings = settings_for(served_world, tmp_path, store_retry_seconds=0.0)
    pipeline = make_pipeline(settings)
    users = active_users(settings, 20)
    healthy = pipeline.serve(requests_for(users))
    assert healthy.trace.fallback is None and not healthy.trace.degraded
    store = pipeline.features.guard.store
    pipeline.features.guard.store = BrokenStore()
    down = pipeline.serve(requests_for(users))
    assert down.trace.fallback == FALLBACK
    assert any(d.startswith("user: ") and "Connection refused" in d for d in down.trace.degraded)
    assert down.slates.model_version == f"fallback-{FALLBACK}"
    assert len(down.slates) == len(users) * 20
    assert not pipeline.catalogue.unsafe[pipeline.catalogue.rows(down.slates.item_id)].any()
    pipeline.features.guard.store = store
    back = pipeline.serve(requests_for(users))
    assert back.trace.fallback is None and back.slates.model_version == served_world.version


def test_stages_fail_open_or_closed_as_declared(served_world, tmp_path, monkeypatch):
    settings = settings_for(served_world, tmp_path)
    pipeline = make_pipeline(settings)
    users = active_users(settings, 10)
    # a source that breaks fails open: the others still fill the slates
    monkeypatch.setattr("homefeed.serve.sources.fresh", lambda *a, **k: 1 / 0)
    served = pipeline.serve(requests_for(users))
    assert len(served.slates) == 200
    assert any(d.startswith("source:fresh: internal error: ZeroDivisionError") for d in served.trace.degraded)
    # the policy fails closed: no slate rather than one without caps
    monkeypatch.setattr("homefeed.serve.pipeline.arrange", lambda *a, **k: 1 / 0)
    served = pipeline.serve(requests_for(users))
    assert len(served.slates) == 0 and served.trace.closed == "policy"


def test_a_switched_off_surface_and_an_over_budget_stage_are_flagged(served_world, tmp_path):
    settings = settings_for(served_world, tmp_path)
    surfaces = dict(settings.serve.surfaces)
    surfaces["home"] = surfaces["home"].model_copy(update={"enabled": False})
    surfaces["explore"] = surfaces["explore"].model_copy(update={"budgets_ms": {"score": 1e-6}})
    settings = settings.model_copy(update={"serve": settings.serve.model_copy(update={"surfaces": surfaces})})
    pipeline = make_pipeline(settings)
    pipeline.budgets = True
    users = active_users(settings, 5)
    off = pipeline.serve(requests_for(users))
    assert len(off.slates) == 0 and off.trace.closed == "enabled"
    slow = pipeline.serve(requests_for(users, surface="explore"))
    assert slow.trace.fallback == FALLBACK and len(slow.slates) > 0
    assert any(d.startswith("score: over its budget") for d in slow.trace.degraded)


def test_an_unknown_surface_is_a_clear_error(served_world, tmp_path):
    pipeline = make_pipeline(settings_for(served_world, tmp_path))
    with pytest.raises(Exception, match="unknown surface 'nope'; expected one of home, explore"):
        pipeline.serve(requests_for(np.array([1]), surface="nope"))


def test_a_large_batch_is_ranked_in_pieces_as_one(served_world, tmp_path, monkeypatch):
    settings = settings_for(served_world, tmp_path, served_features_sample=0.5)
    users = active_users(settings, 60)
    whole = make_pipeline(settings, seed=3).rank(requests_for(users))
    monkeypatch.setattr("homefeed.serve.pipeline.BATCH", 25)
    pieces = make_pipeline(settings, seed=3).rank(requests_for(users))
    np.testing.assert_array_equal(whole.request_index, pieces.request_index)
    np.testing.assert_array_equal(whole.position, pieces.position)
    assert pieces.model_version == served_world.version
    assert pieces.served_features_column().null_count < len(pieces)
    assert np.bincount(pieces.request_index, minlength=len(users)).min() > 0


def test_an_nn_in_production_is_served_by_its_own_scores_not_the_fallback(served_world, tmp_path):
    """The NN embeds the impression's ids and categories besides its features: serving hands them over, so an NN
    under the alias ranks (its served probabilities are its `predict` on the hydrated rows) instead of falling back."""
    settings = settings_for(served_world, tmp_path, private=True)
    nn = NNRanker(hidden=(16,), embedding_dim=4, id_buckets=512, max_epochs=1, batch_size=1024, seed=2)
    nn.fit(served_world.data)
    registry = Registry.of(settings)
    version = registry.register(nn, served_world.data).version
    registry.alias("production", version, "tests: an NN serves")
    pipeline = make_pipeline(settings, cached=("item", "creator", "user", "user_topic", "user_creator"))
    served = pipeline.serve(requests_for(active_users(settings, 3)))
    assert served.trace.fallback is None and not served.trace.degraded, served.trace.degraded
    assert served.slates.model_version == version and len(served.slates) == 60
    assert set(served.heads) == set(nn.heads) and np.isfinite(served.score).all()
