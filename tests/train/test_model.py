import numpy as np
import pyarrow as pa
import pytest

from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import ModelError, Objective, Ranker
from homefeed.train.nn import NNRanker


@pytest.mark.parametrize("kind", [GBDTRanker, NNRanker])
def test_params_record_every_constructor_parameter_and_rebuild_the_model(kind: type[Ranker]):
    model = kind(objective=Objective(negative_weight=3.0), position="feature", seed=7)
    params = model.params()
    assert set(params) == {"kind", *kind.param_names()}
    assert {"objective", "position", "weights", "seed", "learning_rate", "threads"} <= set(params)
    assert params["objective"]["negative_weight"] == 3.0 and params["seed"] == 7
    rebuilt = kind.from_params(params)
    assert rebuilt.params() == params and rebuilt.objective == model.objective


def test_a_new_constructor_parameter_is_recorded_without_listing_it_again():
    class Deeper(GBDTRanker):
        def __init__(self, max_depth: int = -1, **base):
            super().__init__(**base)
            self.max_depth = max_depth

    params = Deeper(max_depth=4, num_leaves=7).params()
    assert params["max_depth"] == 4 and params["num_leaves"] == 7
    with pytest.raises(ModelError, match="parameters of a 'gbdt' model, not 'nn'"):
        NNRanker.from_params(GBDTRanker().params())


# --- predict at the serving slot or at the logged one ---------------------------------------------------------------

# The NN's slot tower starts at 0 and Adam moves it about one learning rate per step: at the default 1e-3, two
# epochs (~240 steps) cannot learn a curve whose slot 1 is 4x the average rate over 60 slots.
FAST = {
    GBDTRanker: {"n_estimators": 40, "learning_rate": 0.1},
    NNRanker: {"hidden": (16,), "max_epochs": 2, "learning_rate": 1e-2},
}


@pytest.fixture(scope="module", params=[GBDTRanker, NNRanker], ids=["gbdt", "nn"])
def by_slot(request, random_world):
    kind = request.param
    data = random_world.data
    feature = kind(**FAST[kind], position="feature", seed=1).fit(data)
    ignore = kind(**FAST[kind], position="ignore", seed=1).fit(data)
    return feature, ignore, data.splits["test"]


def test_predict_holds_the_serving_slot_or_takes_the_logged_one(by_slot):
    model, _, test = by_slot
    position, y = test["position"].to_numpy(), test["engaged"].to_numpy()
    serving, logged = model.predict(test)["engaged"], model.predict(test, slot="logged")["engaged"]
    np.testing.assert_array_equal(model.predict(test, slot="serving")["engaged"], serving)  # the default
    top = position == 1
    np.testing.assert_allclose(logged[top], serving[top], rtol=1e-6)  # at slot 1 the two are one
    assert (logged[~top] < serving[~top]).mean() > 0.99  # lower down the feed, fewer engagements
    # at the logged slot the mean probability is near the observed rate (these small fits are not quite calibrated);
    # at slot 1 it is the top slot's rate, far above it
    assert serving.mean() > 1.5 * y.mean()
    assert abs(logged.mean() - y.mean()) < abs(serving.mean() - y.mean()) / 3


def test_a_model_that_ignores_the_slot_gives_the_same_at_either_and_needs_no_position(by_slot):
    _, model, test = by_slot
    logged = model.predict(test, slot="logged")
    for head, p in model.predict(test, slot="serving").items():
        np.testing.assert_array_equal(p, logged[head])
    without = test.drop_columns(["position"])
    np.testing.assert_array_equal(model.predict(without, slot="logged")["engaged"], logged["engaged"])


def test_the_logged_slot_needs_a_logged_position_and_a_slot_is_named_exactly(by_slot):
    model, _, test = by_slot
    with pytest.raises(ModelError, match="rows lack the 'position' column"):
        model.predict(test.drop_columns(["position"]), slot="logged")
    model.predict(test.drop_columns(["position"]))  # serving needs none
    nulls = test.slice(0, 10).set_column(
        test.schema.get_field_index("position"), "position", pa.array([None] * 10, pa.int32())
    )
    with pytest.raises(ModelError, match="10 of 10 rows have no logged position"):
        model.predict(nulls, slot="logged")
    with pytest.raises(ModelError, match="slot must be one of 'serving', 'logged', not 'top'"):
        model.predict(test, slot="top")


def test_the_training_record_says_what_its_validation_metrics_measure(by_slot):
    model, _, _ = by_slot
    assert "at the logged slot" in model.training["validation_metrics"]
    assert set(model.training["heads"]["engaged"]) >= {"validation_auc", "validation_logloss"}
