"""The request model derived from the declared schema: what a record must hold, and what is refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from evergreen.config import Params, parse_params
from evergreen.data.clean import clean
from evergreen.data.schema import LINEAGE
from evergreen.serving.schema import RequestSchema, build_schema, clip, field_errors, serving_data


@pytest.fixture
def schema(tiny: Params) -> RequestSchema:
    return build_schema(tiny.data, tiny.clean, max_string_length=8)


def _record(**changes: Any) -> dict[str, Any]:
    return {"hr": 7, "weather": 2, "temp": 0.4, "hum": 0.5} | changes


def _errors(schema: RequestSchema, records: list[dict[str, Any]]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        schema.validate_records(records)
    return {e.field: e.message for e in field_errors(caught.value)}


def test_a_valid_record_passes_with_optional_id_and_timestamp(schema):
    assert schema.features == ["hr", "weather", "temp", "hum"]
    assert schema.annotations == ["id", "day"]
    assert schema.validate_records([_record()]) == [_record()]
    [typed] = schema.validate_records([_record(id=3, day="2024-05-01")])
    assert typed["day"] == dt.date(2024, 5, 1) and typed["id"] == 3


def test_missing_and_unknown_fields_are_named(schema):
    record = _record(humidity=0.5)
    del record["hum"]
    errors = _errors(schema, [_record(), record])
    assert set(errors) == {"records[1].hum", "records[1].humidity"}
    assert "missing" in errors["records[1].hum"] and "unknown field" in errors["records[1].humidity"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hr", "7", "valid integer"),
        ("hr", True, "valid integer"),
        ("hr", 7.5, "valid integer"),
        ("hr", 2**64, "less than"),
        ("temp", "0.4", "valid number"),
        ("temp", float("nan"), "finite"),
        ("temp", float("inf"), "finite"),
        ("temp", None, "valid number"),  # temp's missing values are quarantined by cleaning: refused here
        ("day", 20240501, "ISO-8601"),
        ("day", "yesterday", "date"),
    ],
)
def test_wrong_types_are_refused_with_the_field_named(schema, field, value, message):
    errors = _errors(schema, [_record(**{field: value})])
    assert list(errors) == [f"records[0].{field}"]
    assert message in errors[f"records[0].{field}"]


def test_an_integral_float_is_an_int_and_imputed_columns_accept_null(schema):
    [typed] = schema.validate_records([_record(hr=7.0, hum=None)])
    assert typed["hr"] == 7 and type(typed["hr"]) is int and typed["hum"] is None


def test_ranges_and_allowed_sets_are_not_enforced_so_monitoring_sees_drift(schema):
    [typed] = schema.validate_records([_record(hr=30, weather=9, temp=1.7)])
    assert (typed["hr"], typed["weather"], typed["temp"]) == (30, 9, 1.7)


def test_strings_are_limited_and_errors_do_not_echo_the_input(tiny_raw):
    tiny_raw["data"]["columns"][0] = {"name": "id", "type": "str", "role": "id"}
    params = parse_params(tiny_raw)
    schema = build_schema(params.data, params.clean, max_string_length=8)
    assert schema.validate_records([_record(id="abcdefgh")])[0]["id"] == "abcdefgh"
    huge = "x" * 100_000
    with pytest.raises(ValidationError) as caught:
        schema.validate_records([_record(id=huge)])
    [error] = field_errors(caught.value)
    assert error.field == "records[0].id" and "at most 8 characters" in error.message
    assert huge[:100] not in repr(field_errors(caught.value))


def test_an_empty_batch_is_refused(schema):
    assert "at least 1" in _errors(schema, [])["records"]


def test_labels_are_finite_numbers_for_regression_and_class_labels_for_classification(schema, tiny_raw):
    assert schema.labels.validate_python([12, 12.0, None]) == [12, 12, None]
    for bad in (float("nan"), 12.5):  # the target `y` is an int: 12.5 would land as "12" (issue 19)
        with pytest.raises(ValidationError) as caught:
            schema.labels.validate_python([1, bad])
        assert [e.field for e in field_errors(caught.value, "labels")] == ["labels[1]"]
    with pytest.raises(ValidationError):
        schema.labels.validate_python([])
    tiny_raw["data"]["task"] = "classification"
    params = parse_params(tiny_raw)
    labels = build_schema(params.data, params.clean, 8).labels
    assert labels.validate_python([1, 0]) == [1, 0]
    with pytest.raises(ValidationError):
        labels.validate_python([0.5])


def test_serving_data_types_batch_rows_with_the_services_rules(tiny):
    view, policy = serving_data(tiny.data, tiny.clean)
    assert view.names == ["id", "day", "hr", "weather", "temp", "hum"]  # no target
    assert not policy.drop_duplicates and all(not c.has_range for c in view.columns)
    raw = pl.DataFrame(
        {
            "id": ["1", "2", "3", "3", None],
            "day": ["2024-01-01", None, "2024-01-01", "2024-01-01", "2024-01-02"],
            "hr": ["1", "30", "x", "x", "4"],
            "weather": ["1", "9", "2", "2", "3"],
            "temp": ["0.5", "1.5", "0.1", "0.1", None],
            "hum": [" 0.5 ", None, "0.2", "0.2", "0.3"],
            LINEAGE[0]: ["f.csv"] * 5,
            LINEAGE[1]: [1, 2, 3, 4, 5],
        }
    )
    result = clean(raw, view.model_copy(update={"timestamp": None}), policy)
    # out-of-range values and a missing id, day or imputed hum are scored as they are; the graph imputes
    assert result.clean["hr"].to_list() == [1, 30]
    assert result.clean["temp"].to_list() == [0.5, 1.5] and result.clean["hum"].to_list() == [0.5, None]
    assert result.quarantine[LINEAGE[1]].to_list() == [3, 4, 5]
    reasons = result.quarantine["_reason"].to_list()
    assert reasons[:2] == ["unparseable:hr"] * 2 and reasons[2] == "missing:temp"


def test_out_of_range_names_the_features_outside_their_declared_range_or_set(schema):
    records = schema.validate_records(
        [_record(), _record(temp=1.5), _record(hr=24, weather=4, hum=None), _record(temp=-0.1, hum=1.0)]
    )
    # hr [0, 23], weather {1, 2, 3}, temp [0, 1], hum [0, 1]; a missing value and the bounds themselves are in
    assert schema.out_of_range(records) == [[], ["temp"], ["hr", "weather"], ["temp"]]


def test_labels_must_lie_in_the_targets_declared_range(schema, tiny_raw):
    # y: int, min 0
    assert schema.labels.validate_python([0, 3.0, None]) == [0, 3.0, None]
    for bad in (-5, -0.5, 1e308):
        with pytest.raises(ValidationError):
            schema.labels.validate_python([bad])
    tiny_raw["data"]["task"] = "classification"
    tiny_raw["data"]["columns"][-1] = {"name": "y", "type": "int", "role": "target", "allowed": [0, 1]}
    params = parse_params(tiny_raw)
    labels = build_schema(params.data, params.clean, 8).labels
    assert labels.validate_python([0, 1]) == [0, 1]
    with pytest.raises(ValidationError) as caught:
        labels.validate_python([1, 2])
    assert [e.field for e in field_errors(caught.value, "labels")] == ["labels[1]"]


def test_an_unknown_key_is_clipped_in_the_error(schema):
    key = "z" * 10_000
    [(field, _)] = _errors(schema, [_record(**{key: 1})]).items()
    assert field == "records[0]." + "z" * 80 + "…"
    assert clip("\ud800abc") == "\\ud800abc"  # a lone surrogate cannot be sent in UTF-8
