import datetime as dt

import pyarrow as pa
import pytest

from homefeed.schema import (
    ACTIONS,
    ENGAGEMENTS,
    IMPRESSIONS,
    ITEMS,
    LABELS,
    NEGATIVE_ACTIONS,
    TABLES,
    USERS,
    Label,
    SchemaError,
    check_values,
    conform,
)

T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


def _rows(schema, n, **columns):
    """A canonical table of ``n`` rows: the given columns, nulls in the optional ones."""
    arrays = [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def users(**overrides):
    cols = {"user_id": [1, 2], "signup_at": [T0, T0], "country": ["US", "BR"], "language": ["en", None]}
    return _rows(USERS, 2, **(cols | overrides))


def items(**overrides):
    cols = {
        "item_id": [10, 11, 12],
        "creator_id": [1, 1, 2],
        "topic": ["cats", "cars", None],
        "created_at": [T0, T0, T0],
        "safety_label": ["safe", "spam", "racy"],
    }
    return _rows(ITEMS, 3, **(cols | overrides))


def impressions(**overrides):
    cols = {
        "request_id": ["r1", "r1", "r2"],
        "ts": [T0, T0, T0],
        "user_id": [1, 1, 2],
        "item_id": [10, 11, 10],
        "surface": ["home"] * 3,
        "position": [1, 2, 1],
        "country": ["US", "US", None],
        "model_version": ["baseline-random"] * 3,
        "propensity": [0.5, 1.0, None],
    }
    return _rows(IMPRESSIONS, 3, **(cols | overrides))


def engagements(**overrides):
    cols = {
        "ts": [T0] * 5,
        "user_id": [1] * 5,
        "item_id": [10] * 5,
        "request_id": ["r1"] * 5,
        "action": list(ACTIONS),
        "dwell": [3.5, 0.0, None, None, None],
    }
    return _rows(ENGAGEMENTS, 5, **(cols | overrides))


def replace(table, name, array):
    return table.set_column(table.schema.get_field_index(name), name, array)


BUILDERS = {"users": users, "items": items, "impressions": impressions, "engagements": engagements}


# --- conform ---------------------------------------------------------------------------------------------------------


def test_conform_accepts_reordered_columns_and_castable_types():
    canonical = impressions()
    loose = replace(canonical, "position", pa.array([1, 2, 1], pa.int64()))  # a CSV reader gives int64
    loose = replace(loose, "user_id", pa.array([1, 1, 2], pa.int32()))
    loose = loose.select(list(reversed(loose.column_names)))
    assert loose.schema.field("position").type == pa.int64()

    out = conform("impressions", loose)

    assert out.schema.equals(IMPRESSIONS)
    assert out.schema.metadata == IMPRESSIONS.metadata  # the table name and schema version travel with the data
    assert out.column_names == IMPRESSIONS.names
    assert out.equals(canonical)


def test_conform_keeps_nulls_in_optional_columns():
    out = conform("users", users())
    assert out["language"].to_pylist() == ["en", None]
    assert out["attributes"].null_count == 2


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_conform_returns_canonical_tables_unchanged(name):
    table = BUILDERS[name]()
    assert conform(name, table).equals(table)


def test_conform_names_a_missing_column():
    table = impressions().drop_columns(["propensity"])
    with pytest.raises(SchemaError, match=r"impressions: missing column\(s\) propensity"):
        conform("impressions", table)


def test_conform_names_an_extra_column():
    table = engagements().append_column("device", pa.array(["ios"] * 5))
    with pytest.raises(SchemaError, match=r"engagements: unexpected column\(s\) device"):
        conform("engagements", table)


def test_conform_names_a_required_column_with_nulls():
    table = replace(items(), "creator_id", pa.array([1, None, 2], pa.int64()))
    with pytest.raises(SchemaError, match=r"items\.creator_id: 1 null value\(s\) in a required column"):
        conform("items", table)


def test_conform_names_a_required_column_given_as_all_nulls():
    table = replace(impressions(), "model_version", pa.nulls(3))  # an empty CSV column reads as type null
    with pytest.raises(SchemaError, match=r"impressions\.model_version: 3 null value"):
        conform("impressions", table)


@pytest.mark.parametrize(
    ("column", "array"),
    [
        ("position", pa.array(["first", "second", "third"])),  # unparseable strings
        ("position", pa.array([1, 2, 2**40], pa.int64())),  # does not fit int32
        ("position", pa.array([1.0, 2.5, 1.0])),  # would truncate
        ("ts", pa.array([True, False, True])),  # no cast exists
    ],
)
def test_conform_names_a_column_of_an_uncastable_type(column, array):
    table = replace(impressions(), column, array)
    with pytest.raises(SchemaError, match=rf"impressions\.{column}: expected .*, got {array.type}"):
        conform("impressions", table)


def test_conform_names_a_map_column_given_for_a_list_column():
    interests = pa.array([[("a", "b")], None], pa.map_(pa.string(), pa.string()))
    table = replace(users(), "declared_interests", interests)
    with pytest.raises(SchemaError, match=r"users\.declared_interests"):
        conform("users", table)


def test_conform_rejects_an_unknown_table_naming_it():
    with pytest.raises(SchemaError, match="unknown table 'clicks'") as info:
        conform("clicks", engagements())
    for name in TABLES:
        assert name in str(info.value)


# --- check_values ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_check_values_is_empty_for_a_clean_table(name):
    assert check_values(name, BUILDERS[name]()) == []


def test_check_values_flags_positions_below_one():
    table = replace(impressions(), "position", pa.array([0, -3, 1], pa.int32()))
    assert check_values("impressions", table) == ["impressions.position: 2 value(s) below 1"]


@pytest.mark.parametrize(
    ("propensity", "bad"),
    [
        ([0.0, 1.0, None], 1),
        ([1.5, 1.0, None], 1),
        ([0.0, 1.5, -0.2], 3),
        ([1.0, 1.0, 1.0], 0),
        ([None, None, None], 0),
        ([1e-9, 0.5, 1.0], 0),
    ],
)
def test_check_values_flags_propensities_outside_zero_one(propensity, bad):
    table = replace(impressions(), "propensity", pa.array(propensity, pa.float64()))
    expected = [f"impressions.propensity: {bad} value(s) outside (0, 1]"] if bad else []
    assert check_values("impressions", table) == expected


def test_check_values_flags_unknown_actions_and_negative_dwell():
    table = engagements(action=["closeup", "click", "like", "save", "hide"], dwell=[-1.0, 2.0, None, None, None])
    problems = check_values("engagements", table)
    assert len(problems) == 2
    assert problems[0].startswith("engagements.action: 1 value(s) not in ")
    for action in ACTIONS:
        assert action in problems[0]
    assert problems[1] == "engagements.dwell: 1 negative value(s)"


def test_check_values_flags_unknown_safety_labels():
    table = items(safety_label=["safe", "nsfw", "SPAM"])
    assert check_values("items", table) == ["items.safety_label: 2 value(s) not in safe, spam, racy"]


def test_check_values_reports_every_problem_of_a_table():
    table = impressions(position=[0, 1, 2], propensity=[0.0, 0.5, 0.5])
    problems = check_values("impressions", table)
    assert [p.split(":")[0] for p in problems] == ["impressions.position", "impressions.propensity"]


# --- Label -----------------------------------------------------------------------------------------------------------


def test_label_rejects_an_unknown_action():
    with pytest.raises(ValueError, match="like"):
        Label("liked", ("save", "like"))


@pytest.mark.parametrize("window", [dt.timedelta(0), dt.timedelta(hours=-1)])
def test_label_rejects_a_non_positive_window(window):
    with pytest.raises(ValueError, match="window"):
        Label("saved", ("save",), window=window)


def test_label_accepts_known_actions_and_a_positive_window():
    label = Label("quick_save", ("save",), window=dt.timedelta(minutes=5))
    assert label.actions == ("save",)
    assert label.window == dt.timedelta(minutes=5)


def test_default_labels_use_known_actions():
    for name, label in LABELS.items():
        assert label.name == name
        assert label.actions
        assert set(label.actions) <= set(ACTIONS)
        assert label.window > dt.timedelta(0)


def test_negative_label_covers_hide_and_report_and_engaged_has_no_negative_action():
    assert set(LABELS["negative"].actions) == {"hide", "report"} == set(NEGATIVE_ACTIONS)
    assert not set(LABELS["engaged"].actions) & set(NEGATIVE_ACTIONS)
