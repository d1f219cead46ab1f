"""The neural ranker on simulator logs: beats popularity, its negative head lowers top-slot hides, safe save/load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from homefeed.train.model import CHECKSUMS_FILE, ModelError, Objective
from homefeed.train.nn import LOG_THRESHOLD, PREPROCESSING_FILE, WEIGHTS_FILE, NNRanker

SMALL = {"hidden": (32, 16), "embedding_dim": 4, "id_buckets": 4096, "batch_size": 512, "max_epochs": 8, "patience": 2}
#: The popularity baseline ranks items by how often they were shown in the last 7 days.
POPULARITY = "item_impressions_7d"


@pytest.fixture(scope="module")
def trained(random_world) -> NNRanker:
    return NNRanker(**SMALL, seed=3).fit(random_world.data)


def ndcg_at_k(rows: pa.Table, score: np.ndarray, label: str = "engaged", k: int = 10) -> float:
    """Mean over requests with a positive of NDCG@k, ranking each request's rows by ``score`` (ties: logged order)."""
    request = rows["request_id"].to_numpy(zero_copy_only=False)
    rel = rows[label].to_numpy().astype(np.float64)
    order = np.lexsort((-score, request))  # by request, then by score descending
    request, rel = request[order], rel[order]
    starts = np.flatnonzero(np.r_[True, request[1:] != request[:-1]])
    rank = np.arange(len(request)) - np.repeat(starts, np.diff(np.r_[starts, len(request)]))
    discount = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    dcg = np.add.reduceat(rel * discount, starts)
    ideal = np.add.reduceat(rel[np.lexsort((-rel, request))] * discount, starts)  # the same requests, best order
    has = ideal > 0
    return float((dcg[has] / ideal[has]).mean())


def top_k_rate(rows: pa.Table, score: np.ndarray, label: str, k: int = 5) -> float:
    """The (weighted) rate of ``label`` among each request's top-k rows by ``score``, on the logged outcomes."""
    request = rows["request_id"].to_numpy(zero_copy_only=False)
    y = rows[label].to_numpy().astype(np.float64)
    w = rows["weight"].to_numpy()
    order = np.lexsort((-score, request))
    request = request[order]
    starts = np.flatnonzero(np.r_[True, request[1:] != request[:-1]])
    rank = np.arange(len(request)) - np.repeat(starts, np.diff(np.r_[starts, len(request)]))
    top = rank < k
    return float((y[order] * w[order])[top].sum() / w[order][top].sum())


def test_beats_the_popularity_baseline_on_auc_and_ndcg(trained, random_world) -> None:
    test = random_world.data.splits["test"]
    y, w = test["engaged"].to_numpy(), test["weight"].to_numpy()
    p = trained.predict(test)["engaged"]
    popularity = test[POPULARITY].to_numpy(zero_copy_only=False).astype(np.float64)
    popularity = np.nan_to_num(popularity)
    auc, auc_pop = roc_auc_score(y, p, sample_weight=w), roc_auc_score(y, popularity, sample_weight=w)
    ndcg, ndcg_pop = ndcg_at_k(test, p), ndcg_at_k(test, popularity)
    print(f"AUC nn {auc:.4f} vs popularity {auc_pop:.4f}; NDCG@10 nn {ndcg:.4f} vs popularity {ndcg_pop:.4f}")
    assert auc > auc_pop + 0.01
    assert ndcg > ndcg_pop
    assert trained.training["best_epoch"] >= 1 and trained.training["heads"]["engaged"]["validation_auc"] > 0.55


def test_negative_head_lowers_the_hide_rate_of_the_top_slots(trained, random_world) -> None:
    test = random_world.data.splits["test"]
    heads = trained.predict(test)
    positive_only = Objective(negative_weight=0.0).score(heads)
    # λ = 10: a hide costs ten engagements — hides are ~5x rarer than engagements and far worse for return visits
    multi = dataclasses.replace(trained.objective, negative_weight=10.0).score(heads)
    hides, hides_pos = top_k_rate(test, multi, "negative"), top_k_rate(test, positive_only, "negative")
    engaged, engaged_pos = top_k_rate(test, multi, "engaged"), top_k_rate(test, positive_only, "engaged")
    print(f"top-5 hide rate λ=10 {hides:.4f} vs λ=0 {hides_pos:.4f}; engaged {engaged:.4f} vs {engaged_pos:.4f}")
    # In this small world (3,000 users, 8 days) the cut measured 0.89, 0.78 and 0.91 of λ=0's rate on seeds 21-23
    # of the present simulator (0.85 was the bound on the one seed of the simulator before it): at least 5% is
    # what every seed shows, and the top-5 hide rate is a few hundred hides, so smaller cuts are noise.
    assert hides < 0.95 * hides_pos
    assert engaged > 0.9 * engaged_pos  # at a small cost in engagement


def test_save_load_gives_identical_predictions(trained, random_world, tmp_path: Path) -> None:
    rows = random_world.data.splits["test"].slice(0, 2_000)
    trained.save(tmp_path / "m")
    loaded = NNRanker.load(tmp_path / "m")
    assert loaded.params() == trained.params() and loaded.training == trained.training
    for head, p in trained.predict(rows).items():
        np.testing.assert_array_equal(loaded.predict(rows)[head], p)
    assert json.loads((tmp_path / "m" / CHECKSUMS_FILE).read_text())  # every file has its sha256


@pytest.mark.parametrize("name", [WEIGHTS_FILE, PREPROCESSING_FILE, "model.json"])
@pytest.mark.parametrize("damage", ["tamper", "truncate"])
def test_tampered_or_truncated_files_are_refused(trained, tmp_path: Path, name: str, damage: str) -> None:
    trained.save(tmp_path / "m")
    path = tmp_path / "m" / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif name == "model.json":  # still valid JSON, a different training record
        meta = json.loads(data)
        meta["training"]["epochs"] = 99
        path.write_text(json.dumps(meta))
    else:
        path.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
    with pytest.raises(ModelError, match=f"{name}: checksum mismatch"):
        NNRanker.load(tmp_path / "m")


def test_deterministic_for_a_seed(random_world) -> None:
    small = {**SMALL, "max_epochs": 1}
    rows = random_world.data.splits["test"].slice(0, 5_000)
    a = NNRanker(**small, seed=5).fit(random_world.data).predict(rows)
    b = NNRanker(**small, seed=5).fit(random_world.data).predict(rows)
    for head in a:
        np.testing.assert_array_equal(a[head], b[head])


@pytest.fixture(scope="module")
def positional(random_world) -> NNRanker:
    return NNRanker(**SMALL, seed=3, position="feature").fit(random_world.data)


def test_position_as_a_feature_is_held_at_the_serving_slot(random_world, positional) -> None:
    rows = random_world.data.splits["test"].slice(0, 1_000)
    moved = rows.set_column(rows.column_names.index("position"), "position", pa.array(np.full(1_000, 40), pa.int32()))
    np.testing.assert_array_equal(positional.predict(rows)["engaged"], positional.predict(moved)["engaged"])
    # The slot is a shallow tower (a bias per slot added to the logit), not an input of the trunk.
    assert len(positional.preprocessing["mean"]) == len(random_world.data.features)


def test_the_position_tower_learns_the_examination_curve(random_world, positional) -> None:
    """On uniformly random feeds the slot is independent of the item, so the per-slot biases should recover how
    much less each slot is looked at: decreasing over the first ten slots, by about the simulator's true ratio."""
    bias = positional.network.slot_bias.weight[1:11, 0].detach().numpy()  # the engaged head, slots 1..10
    assert spearmanr(bias, np.arange(10))[0] < -0.9
    test = random_world.data.splits["test"]
    logged = test["request_id"], test["position"].to_numpy()
    at = {k: random_world.sim.ground_truth(*logged, at_position=k)["closeup"].mean() for k in (1, 10)}
    true_drop = np.log(at[1] / at[10])  # the log-odds drop from slot 1 to slot 10, for rare events
    learned = bias[0] - bias[9]
    print(f"slot 1 → 10: learned logit drop {learned:.2f}, simulator's {true_drop:.2f}")
    assert 0.5 * true_drop < learned < 1.3 * true_drop


def test_a_model_saved_before_the_position_tower_still_loads_and_scores(random_world, tmp_path, monkeypatch):
    """Before the tower, the slot was one more trunk input: such a model's preprocessing has no ``slots``."""
    fit_preprocessing = NNRanker._fit_preprocessing

    def as_before(self, rows):  # the old preprocessing: statistics of the slot column, as of any numeric input
        fit_preprocessing(self, rows)
        del self.preprocessing["slots"]
        slot = rows["position"].to_numpy().astype(np.float64)
        log = bool(slot.min() >= 0 and slot.max() > LOG_THRESHOLD)
        slot = np.log1p(slot) if log else slot
        for key, value in (("log", log), ("mean", slot.mean()), ("std", slot.std())):
            self.preprocessing[key].append(value if key == "log" else float(value))

    monkeypatch.setattr(NNRanker, "_fit_preprocessing", as_before)
    old = NNRanker(**{**SMALL, "max_epochs": 1}, position="feature").fit(random_world.data)
    monkeypatch.undo()
    old.save(tmp_path / "old")
    loaded = NNRanker.load(tmp_path / "old")
    assert loaded.network.slot_bias is None and len(loaded.preprocessing["mean"]) == len(loaded.features) + 1
    rows = random_world.data.splits["test"].slice(0, 500)
    np.testing.assert_array_equal(loaded.predict(rows)["engaged"], old.predict(rows)["engaged"])
    moved = rows.set_column(rows.column_names.index("position"), "position", pa.array(np.full(500, 40), pa.int32()))
    np.testing.assert_array_equal(loaded.predict(moved)["engaged"], loaded.predict(rows)["engaged"])
    contrib, names = loaded.contributions(rows)
    assert names.index("position") == len(loaded.features) and contrib.shape == (500, len(names))


def test_rows_without_a_model_column_are_refused(trained, random_world) -> None:
    rows = random_world.data.splits["test"].slice(0, 10)
    with pytest.raises(ModelError, match="item_id"):
        trained.predict(rows.drop_columns(["item_id"]))
    with pytest.raises(ModelError, match=trained.features[0]):
        trained.predict(rows.drop_columns([trained.features[0]]))


def test_ips_weights_train(random_world) -> None:
    model = NNRanker(**{**SMALL, "max_epochs": 1}, weights="ips").fit(random_world.data)
    p = model.predict(random_world.data.splits["test"].slice(0, 500))
    assert all(np.isfinite(v).all() and ((v > 0) & (v < 1)).all() for v in p.values())
    assert model.training["heads"]["engaged"]["validation_auc"] > 0.5
