"""What the service agrees to serve: registered rankers whose features the project still computes the same way."""

from __future__ import annotations

import pytest

from homefeed.config import Settings
from homefeed.features.definitions import feature_set
from homefeed.serve.model import serving_model
from homefeed.train.model import ModelError


def test_only_a_registered_ranker_is_served_never_a_policy_reading_the_truth(served_world):
    class Oracle:  # what a policy that reads the simulator's hidden truth looks like to the service
        name = "oracle"
        features = ("a_feature",)

        def predict(self, rows):
            return {}

    with pytest.raises(ModelError, match="only a trained ranker from the registry can be served"):
        serving_model(Oracle(), "oracle", None, served_world.settings)


def test_a_model_trained_on_other_feature_definitions_is_refused(served_world):
    settings = served_world.settings
    fs = feature_set("default", settings.etl, settings.features)
    served = serving_model(served_world.model, "v", fs.version, settings)
    assert served.features.columns == served_world.model.features
    data = settings.model_dump()
    data["features"]["ttl_hours"] = 12  # the values would now expire earlier than in training
    changed = Settings(**data)
    with pytest.raises(ModelError, match=r"trained on feature set default@.*feed it features it never learned from"):
        serving_model(served_world.model, "v", fs.version, changed)
