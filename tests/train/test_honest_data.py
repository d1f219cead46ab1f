"""Training data from logs that lack things, on the bundled Open Bandit sample (ZOZOTOWN, random/men).

OBD has no sign-up times, no topics and no negative events.  A tenure is not invented (it once came out
negative), a feature with no value for any row stops the build naming it (it was one warning among many), and a
head whose label never occurs is refused, or dropped when asked, with the model card saying why.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from homefeed.cli import main
from homefeed.config import EtlSettings, FeatureSettings, Paths, Settings
from homefeed.data.etl import snapshot_lake
from homefeed.train import DatasetError, DatasetSpec, DatasetStore, build_dataset
from homefeed.train.gbdt import GBDTRanker
from homefeed.train.model import ModelError, Objective, TrainingData
from homefeed.train.nn import NNRanker
from tests.conftest import OBD_FIRST, OBD_LAST, ingest_obd_week
from tests.test_cli import assert_one_line_error

FIRST, LAST = OBD_FIRST, OBD_LAST
ETL = EtlSettings(windows=[1, 7])
#: Features OBD's logs can give: the item's and the user's activity, the request's hour.
USABLE = ["item_impressions_7d", "item_click_rate_7d", "user_impressions_7d", "user_click_7d", "context_hour_of_day"]
TOML = f"""
[paths]
root = "{{root}}"
[etl]
windows = [1, 7]
[features]
set = "usable"
[features.sets]
usable = {USABLE!r}
"""


def settings_for(root: Path, **features: object) -> Settings:
    sets = {"usable": USABLE}
    return Settings(paths=Paths(root=root), etl=ETL, features=FeatureSettings(sets=sets, **features))


def spec(settings: Settings, feature_set: str, **overrides: object) -> DatasetSpec:
    data = {"start": FIRST + dt.timedelta(days=1), "end": LAST, "feature_set": feature_set, **overrides}
    return DatasetSpec(**{**settings.dataset.model_dump(), **data})


@pytest.fixture(scope="module")
def obd(tmp_path_factory) -> Path:
    """random/men ingested and its week of ETL snapshots computed."""
    root = tmp_path_factory.mktemp("obd")
    ingest_obd_week(settings_for(root))
    return root


@pytest.fixture(scope="module")
def usable(obd) -> str:
    settings = settings_for(obd)
    return build_dataset(spec(settings, "usable"), settings).id


def test_a_source_without_sign_up_times_gets_no_tenure_not_a_negative_one(obd):
    profile = snapshot_lake(settings_for(obd).resolved_paths.etl).read("user_profile")
    assert profile.num_rows > 0
    assert profile["tenure_days"].null_count == profile.num_rows  # not a number made up from the first row


def test_features_with_no_value_for_any_row_stop_the_build_by_name(obd):
    settings = settings_for(obd)
    with pytest.raises(DatasetError) as caught:
        build_dataset(spec(settings, "default"), settings)
    message = str(caught.value)
    assert "user_tenure_days (user_profile.tenure_days is null in every snapshot row read" in message
    assert "users.signup_at" in message
    # OBD's items have no topic, so there is no user x topic pair at all: each of those features is named.
    assert "user_topic_affinity (the user_topic snapshots read hold no row at all)" in message
    assert "user_topic_saves_decayed" in message and "[features.sets]" in message
    assert "item_impressions_7d" not in message  # what the logs do give is not named
    assert DatasetStore(settings.resolved_paths.datasets).ids() == []  # nothing written


def test_a_source_joined_to_no_row_stops_the_build_by_name(obd):
    """Snapshots exist, but none is known in time for any impression (a lag longer than the range)."""
    settings = settings_for(obd, lag_minutes=60 * 24 * 30)
    with pytest.raises(DatasetError, match=r"item_impressions_7d \(no row of any split has a fresh item_stats"):
        build_dataset(spec(settings, "usable"), settings)
    assert DatasetStore(settings.resolved_paths.datasets).ids() == []


def test_a_head_whose_label_never_occurs_is_refused_by_name(obd, usable):
    data = TrainingData.load(DatasetStore(settings_for(obd).resolved_paths.datasets), usable)
    # the build said so first
    assert any("label 'negative' never occurs in the dataset" in w for w in data.manifest["warnings"])
    assert not any("'engaged' never occurs" in w for w in data.manifest["warnings"])
    assert pc.sum(data.splits["train"]["negative"]).as_py() == 0 and pc.sum(data.splits["train"]["engaged"]).as_py()
    for model in (GBDTRanker(n_estimators=5), NNRanker(max_epochs=1)):
        with pytest.raises(ModelError, match=r"label 'negative' never occurs in the train split .* --drop-empty-heads"):
            model.fit(data)
    # The positive head is never dropped: there would be nothing to rank by.
    blind = GBDTRanker(objective=Objective(positive="negative", negative="engaged"), drop_empty_heads=True)
    with pytest.raises(ModelError, match=r"label 'negative' never occurs .* nothing to rank by"):
        blind.fit(data)


@pytest.mark.parametrize("kind", [GBDTRanker, NNRanker])
def test_a_dropped_head_leaves_the_score_to_the_positive_head_and_says_why(obd, usable, kind, tmp_path):
    data = TrainingData.load(DatasetStore(settings_for(obd).resolved_paths.datasets), usable)
    params = {"n_estimators": 20} if kind is GBDTRanker else {"max_epochs": 2, "hidden": (8,)}
    model = kind(objective=Objective(negative_weight=3.0), drop_empty_heads=True, **params).fit(data)
    assert model.heads == ("engaged",)
    assert set(model.training["heads"]) == {"engaged"}
    assert "never occurs" in model.training["dropped_heads"]["negative"]
    assert "λ = 3 is ignored" in model.training["dropped_heads"]["negative"]
    rows = data.splits["test"]
    p = model.predict(rows)
    assert set(p) == {"engaged"}
    np.testing.assert_array_equal(model.score(rows), p["engaged"])
    model.save(tmp_path / "m")
    again = kind.load(tmp_path / "m")
    assert again.heads == ("engaged",)
    np.testing.assert_allclose(again.score(rows), model.score(rows), rtol=1e-6)


def test_train_command_refuses_then_drops_and_the_card_says_why(obd, usable, tmp_path, capsys):
    project = tmp_path / "homefeed.toml"
    project.write_text(TOML.format(root=obd), encoding="utf-8")
    argv = ["train", "--model", "gbdt", "--dataset", usable, "-p", "n_estimators=10", "-c", str(project)]
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, "label 'negative' never occurs", "--drop-empty-heads")
    assert main([*argv, "--drop-empty-heads", "--negative-weight", "2"]) == 0
    card = re.sub(r"[\s│]", "", capsys.readouterr().out)  # the card's table wraps long cells
    assert "engagedalone;negativedropped:label'negative'neveroccursinthetrainsplit" in card
    assert "λ=2isignored" in card
