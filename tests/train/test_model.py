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
