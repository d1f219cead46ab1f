"""The LightGBM ranker on simulated logs, where the truth behind every label is known.

Popularity baseline: rank by ``item_impressions_7d`` (how often the item was shown in the last 7 days, what a
"popular" feed sorts by).  Metrics on the held-out test split: scikit-learn's ``roc_auc_score`` and NDCG@10 per
request with the logged ``engaged`` label as the gain (requests with no engagement are left out).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import roc_auc_score

from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import ModelError, Objective, TrainingData

FAST = {"n_estimators": 80, "learning_rate": 0.1, "early_stopping_rounds": 15}


def _ranks(request: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered by request then score (best first), and each row's 0-based rank in its request."""
    order = np.lexsort((-score, request))
    grouped = request[order]
    starts = np.r_[0, np.flatnonzero(grouped[1:] != grouped[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(grouped)])
    return order, np.arange(len(grouped)) - np.repeat(starts, sizes)


def ndcg_at(request: np.ndarray, score: np.ndarray, gain: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over the requests with any gain."""
    order, rank = _ranks(request, score)
    discount = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    starts = np.flatnonzero(rank == 0)
    dcg = np.add.reduceat(gain[order] * discount, starts)
    ideal_order, _ = _ranks(request, gain.astype(np.float64))
    idcg = np.add.reduceat(gain[ideal_order] * discount, starts)
    return float(np.mean(dcg[idcg > 0] / idcg[idcg > 0]))


def top_rate(request: np.ndarray, score: np.ndarray, outcome: np.ndarray, k: int) -> float:
    """The share of the top-``k`` rows of each request (by score) with this logged outcome."""
    order, rank = _ranks(request, score)
    return float(outcome[order][rank < k].mean())


def requests(rows: pa.Table) -> np.ndarray:
    return np.unique(rows["request_id"].to_numpy(zero_copy_only=False), return_inverse=True)[1]


@pytest.fixture(scope="module")
def binary(random_world) -> GBDTRanker:
    return GBDTRanker(**FAST).fit(random_world.data)


def test_beats_the_popularity_baseline_on_auc_and_ndcg(random_world, binary):
    test = random_world.data.splits["test"]
    engaged, request = test["engaged"].to_numpy(), requests(test)
    popularity = np.nan_to_num(test["item_impressions_7d"].to_numpy(zero_copy_only=False), nan=0.0)
    lambdarank = GBDTRanker(objective_kind="lambdarank", **FAST).fit(random_world.data)
    baseline_auc, baseline_ndcg = roc_auc_score(engaged, popularity), ndcg_at(request, popularity, engaged)
    for model in (binary, lambdarank):
        p = model.predict(test)
        assert set(p) == {"engaged", "negative"}
        assert all(((v >= 0) & (v <= 1)).all() for v in p.values())  # lambdarank's raw scores, calibrated
        auc, ndcg = roc_auc_score(engaged, p["engaged"]), ndcg_at(request, p["engaged"], engaged)
        print(f"{model.objective_kind}: AUC {auc:.4f} vs {baseline_auc:.4f}, NDCG@10 {ndcg:.4f} vs {baseline_ndcg:.4f}")
        assert auc > baseline_auc + 0.1
        assert ndcg > baseline_ndcg + 0.05
        heads = model.training["heads"]
        assert heads["engaged"]["objective"] == model.objective_kind and heads["negative"]["objective"] == "binary"
        assert heads["engaged"]["best_iteration"] >= 1 and heads["engaged"]["validation_auc"] > 0.6
        assert model.training["rows"]["train"] == random_world.data.splits["train"].num_rows


def test_negative_head_lowers_the_hide_rate_of_the_top_slots(random_world, binary):
    """Random logging: within a request the slot is independent of the score, so top-k by score is a fair draw."""
    test = random_world.data.splits["test"]
    request, negative, engaged = requests(test), test["negative"].to_numpy(), test["engaged"].to_numpy()
    p = binary.predict(test)
    positive_only = Objective(negative_weight=0.0).score(p)
    multi = Objective(negative_weight=3.0).score(p)
    for k in (5, 10):  # top-1 and top-3 hold too few hides (20-30 in the test split) to tell apart
        before, after = top_rate(request, positive_only, negative, k), top_rate(request, multi, negative, k)
        print(f"top-{k} hide rate {before:.4f} -> {after:.4f} (all rows {negative.mean():.4f})")
        assert after < before
    # The simulator's true hide probability of each impression (at its logged slot) has no sampling noise: it
    # tells the top-1 and top-3 apart too.
    truth = random_world.sim.ground_truth(test["request_id"], test["position"].to_numpy())
    for k in (1, 3, 5, 10):
        before, after = top_rate(request, positive_only, truth["hide"], k), top_rate(request, multi, truth["hide"], k)
        print(f"top-{k} true hide probability {before:.5f} -> {after:.5f}")
        assert after < before
    # ... at a small cost in engagement at most
    assert top_rate(request, multi, engaged, 5) > 0.9 * top_rate(request, positive_only, engaged, 5)


def test_position_as_a_feature_moves_the_item_ranking_toward_the_truth(explored_world):
    """Truth: each test impression's true p(closeup) at slot 1 (the first step of every engagement; the slot's
    examination factor is the same for every item, so any one slot gives the position-free order), averaged per
    item over the impressions it had, as the world recorded it.  The models' mean ``engaged`` probability per item over
    the same impressions is compared with it by rank correlation.

    The logs are the popularity ranker's with a fifth of requests served at random: the ranker puts its items at
    the top, and the random fifth shows them (and every other item) at every slot, so slot and item can be told
    apart.  On the ranker's logs alone every test item sits at one slot all day (one list for everyone) and nothing
    separates the two: there both models rank the items alike (Spearman 0.43 and 0.44 in this world)."""
    test = explored_world.data.splits["test"]
    item = test["item_id"].to_numpy()
    truth = explored_world.sim.ground_truth(test["request_id"], test["position"].to_numpy(), at_position=1)
    _, inverse, counts = np.unique(item, return_inverse=True, return_counts=True)
    true_item = np.bincount(inverse, truth["closeup"]) / counts
    found = {}
    for name, options in {"ignore": {"position": "ignore"}, "feature": {"position": "feature"}}.items():
        model = GBDTRanker(**options, **FAST).fit(explored_world.data)
        item_scores = np.bincount(inverse, model.predict(test)["engaged"]) / counts
        found[name] = (spearmanr(item_scores, true_item)[0], kendalltau(item_scores, true_item)[0])
        print(f"{name}: {len(counts)} items, Spearman {found[name][0]:.4f}, Kendall {found[name][1]:.4f}")
    assert found["feature"][0] > found["ignore"][0] + 0.02 and found["feature"][1] > found["ignore"][1] + 0.02


def test_ips_weights_change_nothing_when_every_logged_propensity_is_1(ranked_world):
    """The popular policy is deterministic (every logged propensity is 1): IPS has nothing to correct."""
    test = ranked_world.data.splits["test"]
    assert (test["propensity"].to_numpy() == 1.0).all()
    few = {"n_estimators": 20, "learning_rate": 0.1}
    ips = GBDTRanker(weights="ips", **few).fit(ranked_world.data).predict(test)["engaged"]
    np.testing.assert_allclose(ips, GBDTRanker(**few).fit(ranked_world.data).predict(test)["engaged"])


def test_save_load_round_trip_and_refuses_tampered_or_truncated_files(random_world, binary, tmp_path):
    test = random_world.data.splits["test"]
    binary.save(tmp_path / "m")
    loaded = GBDTRanker.load(tmp_path / "m")
    assert loaded.params() == binary.params() and loaded.training == binary.training
    for head, values in binary.predict(test).items():
        np.testing.assert_array_equal(loaded.predict(test)[head], values)
    assert (tmp_path / "m" / "engaged.txt").read_text().startswith("tree")  # LightGBM's text format

    for name, damage in {
        "engaged.txt": lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:],  # one byte changed
        "negative.txt": lambda b: b[: len(b) // 2],  # truncated
        "calibration.json": lambda b: b + b" ",  # one byte appended
    }.items():
        copy = tmp_path / f"damaged-{name}"
        binary.save(copy)
        (copy / name).write_bytes(damage((copy / name).read_bytes()))
        with pytest.raises(ModelError, match=name):
            GBDTRanker.load(copy)
    binary.save(copy := tmp_path / "edited")
    (copy / "model.json").write_text((copy / "model.json").read_text().replace('"seed"', '"seed" '))
    with pytest.raises(ModelError, match=r"model\.json: checksum mismatch"):
        GBDTRanker.load(copy)
    (copy / "checksums.json").unlink()
    with pytest.raises(ModelError, match="no checksums"):
        GBDTRanker.load(copy)


def test_lambdarank_round_trip_and_deterministic_for_a_seed(random_world, tmp_path):
    data = random_world.data
    small = TrainingData(data.dataset_id, data.features, {s: t.slice(0, 8_000) for s, t in data.splits.items()})
    options = {"objective_kind": "lambdarank", "n_estimators": 10, "seed": 7}
    first, second = GBDTRanker(**options).fit(small), GBDTRanker(**options).fit(small)
    test = small.splits["test"]
    for head in ("engaged", "negative"):
        np.testing.assert_array_equal(first.predict(test)[head], second.predict(test)[head])
    first.save(tmp_path / "r")
    loaded = GBDTRanker.load(tmp_path / "r")
    assert loaded.calibration == first.calibration and "engaged" in loaded.calibration
    np.testing.assert_array_equal(loaded.score(test), first.score(test))


def test_refuses_bad_arguments_and_unfitted_use(random_world, tmp_path):
    with pytest.raises(ModelError, match="objective_kind"):
        GBDTRanker(objective_kind="regression")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="not fitted"):
        GBDTRanker().predict(random_world.data.splits["test"])
    data = random_world.data
    with pytest.raises(ModelError, match="no validation rows"):
        GBDTRanker().fit(
            TrainingData(
                data.dataset_id, data.features, {**data.splits, "validation": data.splits["validation"].slice(0, 0)}
            )
        )


def test_ips_weights_learn_what_the_exploring_policy_logged_at_random(explored_world):
    """Popular with a fifth of requests served at random logs exact propensities from 1/N to 1.  Weighting each
    row by 1/propensity (clipped at 20) makes the random fifth count sixteen times a popular row: the model learns
    that population, so its probabilities at the logged slot average the rate observed on the randomly served test
    rows, where the dataset-weighted model's (learned mostly from the popular ranker's rows, whose items every user
    sees again and again) fall short; on the popular ranker's rows it is the other way round.

    It does not rank that traffic better in this world: AUC 0.696 against 0.714 (0.689 against 0.709 in expectation
    over the simulator's own probabilities), the popular rows weighted down carrying more than the random fifth
    alone; in the earlier world without repeat fatigue it did (0.705 against 0.682).

    What the present simulator shows, measured on seeds 21-23 (3,000 users) and 21, 23 (9,000): the dataset-weighted
    model under-predicts the random traffic every time (-0.004 to -0.016) and the IPS model predicts it higher every
    time (-0.012 to +0.011), closer on four of five runs but not always by half (it was, on the simulator before);
    on the popular rows the dataset-weighted model is the better calibrated every time, by at least half on four of
    five (this fixture included). So the test asserts the direction on the random traffic and the factor on the
    popular rows."""
    test = explored_world.data.splits["test"]
    explored = pc.less(test["propensity"], 0.5).to_numpy(zero_copy_only=False)
    assert 0.1 < explored.mean() < 0.3
    y = test["engaged"].to_numpy()
    miss = {}
    for weights in ("dataset", "ips"):
        model = GBDTRanker(position="feature", weights=weights, **FAST).fit(explored_world.data)
        p = model.predict(test, slot="logged")["engaged"]
        miss[weights] = {
            part: p[rows].mean() - y[rows].mean() for part, rows in (("random", explored), ("popular", ~explored))
        }
        print(f"{weights}: mean probability minus the observed rate, {miss[weights]}")
    assert miss["dataset"]["random"] < 0 < miss["ips"]["random"] - miss["dataset"]["random"]
    assert abs(miss["dataset"]["popular"]) < abs(miss["ips"]["popular"]) / 2
