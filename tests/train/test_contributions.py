"""Per-input contributions to the positive head: exact TreeSHAP for the GBDT, integrated gradients for the NN."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import BASELINE, ModelError, TrainingData, inputs
from homefeed.train.nn import IDS, NNRanker

FAST = {"n_estimators": 40, "learning_rate": 0.1, "early_stopping_rounds": 10}
SMALL_NN = {"hidden": (32, 16), "embedding_dim": 4, "id_buckets": 4096, "batch_size": 512, "max_epochs": 2}


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(p) - np.log1p(-p)


@pytest.fixture(scope="module")
def nn(random_world) -> NNRanker:
    return NNRanker(**SMALL_NN, seed=5).fit(random_world.data)


@pytest.fixture(scope="module")
def rows(random_world) -> pa.Table:
    return random_world.data.splits["test"].slice(0, 3_000)


def test_gbdt_contributions_sum_exactly_to_the_raw_margin(random_world, rows):
    model = GBDTRanker(**FAST).fit(random_world.data)
    contrib, names = model.contributions(rows)
    assert names == [*random_world.data.features, BASELINE]
    assert contrib.shape == (rows.num_rows, len(names))
    booster = model.boosters["engaged"]
    x = inputs(rows, model.features, model.position, "serving")
    margin = booster.predict(x, num_iteration=booster.best_iteration or None, raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1), margin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(contrib.sum(axis=1), _logit(model.predict(rows)["engaged"]), rtol=0, atol=1e-6)
    assert np.ptp(contrib[:, -1]) == 0  # the bias: one value for every row
    assert (np.abs(contrib[:, :-1]).max(axis=0) > 0).sum() >= 3  # more than one feature matters


def test_gbdt_contributions_follow_the_calibration_and_name_the_slot(random_world, rows):
    ranked = GBDTRanker(objective_kind="lambdarank", position="feature", **FAST).fit(random_world.data)
    assert ranked.calibration["engaged"]["slope"] != 1.0
    contrib, names = ranked.contributions(rows)
    assert names[-2:] == ["position", BASELINE]
    # Through the Platt calibration: a row sums to the log-odds of the probability predicted, not the raw score.
    np.testing.assert_allclose(contrib.sum(axis=1), _logit(ranked.predict(rows)["engaged"]), rtol=0, atol=1e-6)
    # The slot is held at the serving slot, so its (additive, constrained) term is the same for every row.
    assert np.ptp(contrib[:, -2]) < 1e-9


def test_nn_integrated_gradients_are_complete(nn, rows):
    model = nn
    before = model.predict(rows)["engaged"]
    contrib, names = model.contributions(rows)
    np.testing.assert_array_equal(model.predict(rows)["engaged"], before)  # attributing changes nothing
    assert names[: len(model.features)] == model.features
    assert names[-1] == BASELINE and set(IDS) <= set(names)
    assert np.ptp(contrib[:, -1]) == 0
    logit = _logit(before)
    gap = contrib.sum(axis=1) - logit
    moved = np.abs(logit - contrib[:, -1])  # how far each row is from the baseline's logit
    # Completeness: the attributions add up to logit(x) − logit(baseline), up to the midpoint rule's error.
    assert np.abs(gap).mean() < 0.02 * moved.mean(), (np.abs(gap).mean(), moved.mean())
    assert np.abs(gap).max() < 0.1 * moved.max()
    # More steps, a smaller error: the gap is integration error, not a missing term.
    coarse, _ = model.contributions(rows, steps=2)
    assert np.abs(coarse.sum(axis=1) - logit).mean() > np.abs(gap).mean()


def test_nn_attributions_are_zero_for_an_input_at_its_baseline_and_follow_a_planted_change(nn, rows):
    model = nn
    contrib, names = model.contributions(rows.slice(0, 200))
    j = int(np.argmax(np.abs(contrib[:, : len(model.features)]).mean(axis=0)))
    name = names[j]
    # Put that feature at its train mean (standardized 0, the baseline) in every row: its attribution vanishes.
    log = model.preprocessing["log"][j]
    mean = model.preprocessing["mean"][j]
    at_mean = np.expm1(mean) if log else mean
    column = pa.array(np.full(200, at_mean, np.float64)).cast(rows.schema.field(name).type)
    flat = rows.slice(0, 200).set_column(rows.schema.get_field_index(name), name, column)
    moved, _ = model.contributions(flat)
    assert np.abs(moved[:, j]).max() < 1e-3 * np.abs(contrib[:, j]).max() + 1e-6
    # And the change in the logit from moving it there is mostly the change in its own attribution.
    change = _logit(model.predict(flat)["engaged"]) - _logit(model.predict(rows.slice(0, 200))["engaged"])
    own = moved[:, j] - contrib[:, j]
    assert np.corrcoef(change, own)[0, 1] > 0.7


def test_contributions_of_an_unfitted_model_are_refused():
    with pytest.raises(ModelError, match="not"):
        GBDTRanker().contributions(pa.table({"x": [1.0]}))
    with pytest.raises(ModelError, match="not"):
        NNRanker().contributions(pa.table({"x": [1.0]}))


def test_nn_a_categorical_with_one_value_in_training_gets_no_attribution(random_world):
    """Logs of the home surface alone (as before an explore surface existed): ``surface`` has one value in training,
    so its embedding cannot separate anything, and integrated gradients give it nothing."""
    data = random_world.data
    home = {split: t.filter(pc.equal(t["surface"], "home")) for split, t in data.splits.items()}
    assert all(0 < t.num_rows < data.splits[split].num_rows for split, t in home.items())  # both surfaces logged
    model = NNRanker(**SMALL_NN, seed=5).fit(TrainingData(data.dataset_id, data.features, home, data.manifest))
    assert dict(model.preprocessing["vocabularies"])["surface"] == ["home"]
    rows = home["test"].slice(0, 3_000)
    contrib, names = model.contributions(rows)
    assert np.abs(contrib[:, names.index("surface")]).max() < 1e-6
    # ... while the categoricals with several values in training do get some
    assert np.abs(contrib[:, names.index("topic")]).max() > 1e-3


def test_nn_slot_tower_is_counted_exactly_and_the_row_still_adds_up(random_world, rows):
    model = NNRanker(**SMALL_NN, seed=5, position="feature").fit(random_world.data)
    contrib, names = model.contributions(rows)
    slot = names.index("position")
    assert slot == len(model.features)  # after the features, as in the GBDT
    bias = model.network.slot_bias.weight[1:, 0].detach().numpy().astype(np.float64)
    # Additive, so exact: the serving slot's bias against the mean slot's, the same for every row.
    np.testing.assert_allclose(contrib[:, slot], bias[0] - bias.mean(), rtol=0, atol=1e-6)
    logit = _logit(model.predict(rows)["engaged"])
    moved = np.abs(logit - contrib[:, -1])
    assert np.abs(contrib.sum(axis=1) - logit).mean() < 0.02 * moved.mean()
