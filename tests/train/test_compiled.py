"""Compiled trees (lleaves) score exactly as LightGBM does, are cached by model text and CPU, and fall back cleanly."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from homefeed.train import compiled
from homefeed.train.gbdt import GBDTRanker
from homefeed.train.registry import model_class

#: A small forest: compiling time grows with the trees, and equality does not need many.
SMALL = {"n_estimators": 15, "learning_rate": 0.2, "early_stopping_rounds": 1000}


@pytest.fixture(scope="module")
def ranker(random_world) -> GBDTRanker:
    return GBDTRanker(**SMALL).fit(random_world.data)


def test_compiled_heads_give_lightgbm_scores_and_are_cached_by_model_text(ranker, random_world, tmp_path):
    rows = random_world.data.splits["test"].slice(0, 500)
    expected = ranker.predict(rows)
    ranker.save(tmp_path / "model")
    loaded = model_class("gbdt").load(tmp_path / "model")
    status = loaded.compile(tmp_path / "cache")
    assert status == dict.fromkeys(loaded.heads, "compiled")
    got = loaded.predict(rows)
    for head in loaded.heads:
        np.testing.assert_allclose(got[head], expected[head], rtol=1e-9, atol=1e-12)
    cached = sorted((tmp_path / "cache").iterdir())
    assert len(cached) == len(loaded.heads) and all(p.suffix == ".o" for p in cached)
    again = model_class("gbdt").load(tmp_path / "model")  # a second process: loads the object files, no compile
    assert again.compile(tmp_path / "cache") == status
    assert sorted((tmp_path / "cache").iterdir()) == cached
    for head in again.heads:
        np.testing.assert_allclose(again.predict(rows)[head], expected[head], rtol=1e-9, atol=1e-12)


def test_a_compiled_head_leaves_nothing_for_the_garbage_collector(ranker, random_world):
    """A request's matrix is freed when scored: lleaves' own predict left two reference cycles per call."""
    rows = random_world.data.splits["test"].slice(0, 300)
    assert ranker.compile() == dict.fromkeys(ranker.heads, "compiled")
    x = np.random.default_rng(0).normal(size=(300, len(ranker.features)))
    fast = ranker.compiled[ranker.heads[0]]
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            fast(x)
            ranker.predict(rows)
        assert gc.collect() == 0
    finally:
        gc.enable()
        ranker.compiled = {}


def test_without_lleaves_lightgbm_predicts_and_says_why(ranker, random_world, monkeypatch, tmp_path):
    monkeypatch.setattr(compiled, "_backend", lambda: "lleaves is not installed (lleaves); LightGBM predicts")
    ranker.save(tmp_path / "model")
    loaded = model_class("gbdt").load(tmp_path / "model")
    status = loaded.compile(tmp_path / "cache")
    assert all("not installed" in why for why in status.values()) and not loaded.compiled
    rows = random_world.data.splits["test"].slice(0, 50)
    np.testing.assert_array_equal(loaded.predict(rows)["engaged"], ranker.predict(rows)["engaged"])


def test_a_model_text_that_cannot_compile_is_a_reason_not_an_error(tmp_path):
    why = compiled.compile_forest("tree\nversion=v4\nnot a model\n", tmp_path)
    assert isinstance(why, str) and why.startswith("compiling failed")
    assert not list(tmp_path.glob("*.o"))


def test_categorical_splits_compile_to_the_same_scores_unseen_and_missing_values_included():
    """The GBDT hands declared categories to LightGBM as categorical features: their splits must compile exactly."""
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 40, 20_000).astype(float), rng.normal(size=20_000)])
    x[rng.random(20_000) < 0.05, 0] = np.nan
    y = ((x[:, 0] % 7 == 3) | (x[:, 1] > 1)).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_per_group": 10, "cat_smooth": 1}
    booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=[0]), 30)
    forest = compiled.compile_forest(booster.model_to_string(), None)
    assert callable(forest), forest
    test = np.column_stack([rng.integers(0, 60, 2_000).astype(float), rng.normal(size=2_000)])  # 40..59: unseen
    test[::17, 0] = np.nan
    np.testing.assert_allclose(forest(test), booster.predict(test, raw_score=True), rtol=1e-9, atol=1e-12)
