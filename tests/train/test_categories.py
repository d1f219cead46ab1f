"""Category features (string columns) in both rankers: LightGBM codes them through a vocabulary and splits on them
as categories, the NN hashes them into embeddings; unseen values share a bucket; a saved model scores the same.

The rows are synthetic: a category ``context_shelf`` with one planted value ("sale") clicked six times as often as
the rest, beside a numeric column of noise, so the only signal is the category's.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from homefeed.features.vectors import Hydrated
from homefeed.train.categories import SHARED, Vocabulary, categorical_columns
from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import ModelError, TrainingData
from homefeed.train.nn import NNRanker
from homefeed.train.registry import Registry

SHELVES = ["home", "sale", "new", "brand", "outlet", "kids"]
FAST = {"n_estimators": 60, "learning_rate": 0.1, "early_stopping_rounds": 20, "min_child_samples": 20}
SMALL_NN = {"hidden": (16,), "embedding_dim": 4, "id_buckets": 512, "category_buckets": 64, "batch_size": 256}
SMALL_NN |= {"learning_rate": 1e-2, "max_epochs": 8, "patience": 2}


def rows(n: int, seed: int, rare: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    shelf = rng.choice(SHELVES, n)
    shelf[:rare] = "pop-up"  # a value seen fewer times than the vocabulary keeps
    missing = rng.random(n) < 0.05
    p = np.where(shelf == "sale", 0.3, 0.05)
    return pa.table(
        {
            "request_id": pa.array([f"r{seed}-{i // 10}" for i in range(n)]),
            "user_id": pa.array(rng.integers(0, 500, n), pa.int64()),
            "item_id": pa.array(rng.integers(0, 200, n), pa.int64()),
            "country": pa.array(["JP"] * n),
            "topic": pa.array(["t"] * n),
            "surface": pa.array(["home"] * n),
            "position": pa.array(np.tile(np.arange(1, 11, dtype=np.int32), n // 10 + 1)[:n]),
            "context_noise": pa.array(rng.normal(size=n).astype(np.float32)),
            "context_shelf": pa.array(shelf, pa.string(), mask=missing),
            "engaged": pa.array((rng.random(n) < p).astype(np.int8)),
            "negative": pa.array((rng.random(n) < 0.02).astype(np.int8)),
        }
    )


@pytest.fixture(scope="module")
def data() -> TrainingData:
    splits = {"train": rows(8_000, 1, rare=3), "validation": rows(3_000, 2), "test": rows(4_000, 3)}
    return TrainingData("synthetic", ["context_noise", "context_shelf"], splits)


@pytest.fixture(scope="module")
def gbdt(data) -> GBDTRanker:
    return GBDTRanker(**FAST, min_category_count=5).fit(data)


def auc(model, test: pa.Table) -> float:
    return roc_auc_score(test["engaged"].to_numpy(), model.predict(test)["engaged"])


def test_the_vocabulary_codes_frequent_values_and_shares_a_bucket_for_the_rest():
    table = pa.table({"c": pa.array(["a", "b", "a", None, "c", "a", "b"]), "x": pa.array(np.zeros(7))})
    assert categorical_columns(table, ["x", "c"]) == ["c"]
    vocabulary = Vocabulary.fit(table, ["c"], min_count=2)
    assert vocabulary.values == {"c": ("a", "b")}  # by frequency; "c" seen once, null never a value
    codes = vocabulary.encode("c", pa.array(["b", "a", "c", "never seen", None]))
    np.testing.assert_array_equal(codes, [2, 1, SHARED, SHARED, SHARED])
    assert Vocabulary.from_json(vocabulary.to_json()) == vocabulary


def test_lightgbm_splits_on_the_column_as_a_category(gbdt):
    assert gbdt.categories.values["context_shelf"][:1] != ()
    assert "pop-up" not in gbdt.categories.values["context_shelf"]  # 3 rows < min_category_count
    model = gbdt.boosters["engaged"].dump_model()
    infos = model["feature_infos"]
    assert infos["context_shelf"]["values"] and not infos["context_noise"]["values"]  # categories, not a range

    def decisions(node: dict) -> list[tuple[int, str]]:
        if "split_feature" not in node:
            return []
        here = [(node["split_feature"], node["decision_type"])]
        return here + decisions(node["left_child"]) + decisions(node["right_child"])

    splits = [d for tree in model["tree_info"] for d in decisions(tree["tree_structure"])]
    shelf = model["feature_names"].index("context_shelf")
    assert (shelf, "==") in splits and all(kind == "==" for f, kind in splits if f == shelf)


def test_a_planted_category_is_learned(data, gbdt):
    without = TrainingData(
        data.dataset_id, ["context_noise"], {s: t.drop_columns(["context_shelf"]) for s, t in data.splits.items()}
    )
    plain = GBDTRanker(**FAST).fit(without)
    test = data.splits["test"]
    assert auc(gbdt, test) > 0.65 and auc(gbdt, test) > auc(plain, test) + 0.1
    p = gbdt.predict(test)["engaged"]
    sale = test["context_shelf"].to_numpy(zero_copy_only=False) == "sale"
    assert p[sale].mean() > 2 * p[~sale].mean()


def test_an_unseen_or_rare_value_shares_the_bucket_of_a_missing_one(data, gbdt):
    test = data.splits["test"].slice(0, 4)
    noise = test["context_noise"]
    shelves = {v: pa.array([v] * 4, pa.string()) for v in ("never seen", "pop-up")}
    shelves["null"] = pa.nulls(4, pa.string())
    scores = {
        k: gbdt.predict(test.set_column(test.schema.get_field_index("context_shelf"), "context_shelf", v))["engaged"]
        for k, v in shelves.items()
    }
    np.testing.assert_array_equal(scores["never seen"], scores["null"])
    np.testing.assert_array_equal(scores["pop-up"], scores["null"])
    assert noise.equals(test["context_noise"])


def test_a_model_trained_on_numbers_refuses_a_column_of_strings(data):
    numbers = data.splits["train"].set_column(
        data.splits["train"].schema.get_field_index("context_shelf"), "context_shelf", pa.array(np.zeros(8_000))
    )
    splits = {**data.splits, "train": numbers, "validation": numbers}
    model = GBDTRanker(**FAST).fit(TrainingData("numbers", ["context_noise", "context_shelf"], splits))
    with pytest.raises(ModelError, match="'context_shelf' holds categories"):
        model.predict(data.splits["test"])


def test_the_vocabulary_is_saved_with_the_model_and_scores_the_same(data, gbdt, tmp_path):
    registry = Registry(tmp_path / "registry.sqlite", tmp_path / "models")
    version = registry.register(gbdt, data)
    loaded = registry.load(version.version)
    assert loaded.categories == gbdt.categories and loaded.min_category_count == 5
    test = data.splits["test"]
    for head, p in gbdt.predict(test).items():
        np.testing.assert_array_equal(loaded.predict(test)[head], p)


def test_the_nn_hashes_a_category_into_embeddings_and_scores_unseen_values(data, tmp_path):
    model = NNRanker(**SMALL_NN, seed=3).fit(data)
    assert model.preprocessing["hashed"] == ["context_shelf"]
    test = data.splits["test"]
    assert auc(model, test) > 0.6
    unseen = test.set_column(
        test.schema.get_field_index("context_shelf"), "context_shelf", pa.array(["never seen"] * test.num_rows)
    )
    assert np.isfinite(model.predict(unseen)["engaged"]).all()
    contributions, names = model.contributions(test.slice(0, 5))
    assert "context_shelf" in names and contributions.shape == (5, len(names))
    model.save(tmp_path / "nn")
    loaded = NNRanker.load(tmp_path / "nn")
    np.testing.assert_array_equal(loaded.predict(test)["engaged"], model.predict(test)["engaged"])


def test_serving_rows_score_as_the_table_does_in_both_rankers(data):
    """The service hands a ranker its numbers as one matrix and categories as strings (`Hydrated`); the GBDT reads
    the matrix directly, the NN the table: either way the probabilities are `predict`'s at the serving slot."""
    test = data.splits["test"].slice(0, 300)
    columns = ["context_noise", "context_shelf"]
    matrix = np.column_stack([test["context_noise"].to_numpy(), np.full(test.num_rows, np.nan)]).astype(np.float32)
    impression = {c: test[c].combine_chunks() for c in ("user_id", "item_id", "country", "topic", "surface")}
    served = Hydrated(columns, matrix, {"context_shelf": test["context_shelf"].combine_chunks()}, lambda: impression)
    gbdt = GBDTRanker(**FAST, position="feature", min_category_count=5).fit(data)
    for model in (gbdt, NNRanker(**SMALL_NN, seed=3).fit(data)):
        expected = model.predict(test)
        got = model.predict_hydrated(served)
        for head in model.heads:
            np.testing.assert_allclose(got[head], expected[head], rtol=1e-6)
    with pytest.raises(ModelError, match="other columns"):
        gbdt.predict_hydrated(Hydrated(columns[::-1], matrix, served.categories))
