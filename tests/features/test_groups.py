"""Feature groups: an entity's features and flag, or a glob over names; what cannot be dropped is a clear error."""

from __future__ import annotations

import pytest

from homefeed.config import EtlSettings
from homefeed.features.definitions import ENTITIES, FeatureError, drop_groups, entity_of, feature_set, group_columns

COLUMNS = feature_set("default", EtlSettings(windows=[1, 7, 28])).columns


def test_an_entity_names_its_features_and_its_missing_flag_and_nothing_of_a_longer_entity():
    user = group_columns("user", COLUMNS)
    assert "user_missing" in user and "user_tenure_days" in user and "user_click_28d" in user
    assert not any(c.startswith(("user_topic_", "user_creator_")) for c in user)
    topic = group_columns("user_topic", COLUMNS)
    assert set(topic) == {c for c in COLUMNS if c.startswith("user_topic_")}
    assert "user_topic_missing" in topic and "user_topic_affinity" in topic
    assert group_columns("context", COLUMNS) == ["context_item_age_hours", "context_hour_of_day", "context_day_of_week"]
    # every column belongs to exactly one entity: the entity groups partition the inputs
    groups = [group_columns(e, COLUMNS) for e in ENTITIES if e != "user_item"]  # no user_item feature by default
    assert sorted(c for g in groups for c in g) == sorted(COLUMNS)
    assert entity_of("user_creator_affinity") == "user_creator" and entity_of("position") is None


def test_a_glob_names_the_matching_columns_in_their_order():
    assert group_columns("*_28d", COLUMNS) == [c for c in COLUMNS if c.endswith("_28d")]
    assert group_columns("item_*_rate_*", COLUMNS)[:2] == ["item_closeup_rate_1d", "item_closeup_rate_7d"]
    assert group_columns("user_tenure_days", COLUMNS) == ["user_tenure_days"]  # no wildcard: one feature


def test_several_groups_are_dropped_together():
    kept, dropped = drop_groups(["context", "*_28d", "context_hour_of_day"], COLUMNS)
    assert set(dropped) == set(group_columns("context", COLUMNS)) | set(group_columns("*_28d", COLUMNS))
    assert kept == [c for c in COLUMNS if c not in dropped] and kept


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["items"], ["'items'", "matches none", "item (", "user_topic (", "glob"]),
        (["*_90d"], ["glob '*_90d'", "matches none", "context (3)"]),
        ([e for e in ENTITIES if e != "user_item"], ["leaves the model no input columns", "'item'", "user_creator ("]),
        (["*"], ["'*'", "leaves the model no input columns"]),
        ([], ["at least one feature group"]),
    ],
)
def test_a_group_that_matches_nothing_or_everything_is_an_error_listing_the_groups(groups, expected):
    with pytest.raises(FeatureError) as exc:
        drop_groups(groups, COLUMNS)
    for text in expected:
        assert text in str(exc.value), (text, str(exc.value))
