"""The service's fast input builder (`serving.service.fast_matrix`) against the shared one
(`inference.feature_matrix`): the same float32 matrix for the same validated records, or a refusal that sends
the request down the shared path."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from evergreen.inference import ServingModel, feature_matrix
from evergreen.serving.service import fast_matrix, fast_plan

DTYPES = {"hr": pl.Int64(), "weather": pl.String(), "temp": pl.Float64(), "holiday": pl.Boolean()}


def _model(derived: list | None = None) -> ServingModel:
    columns = [
        {"name": "temp", "type": "float"},
        {"name": "weather", "type": "str", "vocabulary": ["rain", "sun", "snow"]},
        {"name": "hr", "type": "int"},
        {"name": "holiday", "type": "bool"},
    ]
    signature = {"task": "regression", "input": {"columns": columns, "derived": derived or []}, "output": {}}
    return ServingModel("v1", session=None, signature=signature, card={})  # type: ignore[arg-type]


RECORDS = [
    {"hr": 0, "weather": "sun", "temp": 0.1, "holiday": False},
    {"hr": 23, "weather": "hail", "temp": -1e30, "holiday": True},  # an unseen category: NaN
    {"hr": None, "weather": None, "temp": None, "holiday": None},  # missing: NaN
    {"hr": 2**40 + 1, "weather": "snow", "temp": 1 / 3, "holiday": True},  # rounds to float32 once
    {"hr": -7, "weather": "rain", "temp": 3, "holiday": False},  # an integral float sent as an int
]


def test_the_fast_matrix_equals_the_shared_one_bit_for_bit():
    model = _model()
    frame = pl.DataFrame([tuple(r[n] for n in DTYPES) for r in RECORDS], schema=DTYPES, orient="row")
    expected = feature_matrix(frame, model.features, model.vocabularies)
    fast = fast_matrix(fast_plan(model, DTYPES), RECORDS)
    assert fast is not None and fast.dtype == np.float32
    np.testing.assert_array_equal(fast, expected)  # NaN where NaN, every other value identical
    assert math.isnan(fast[1, 1]) and np.isnan(fast[2]).all()


def test_an_int_beyond_float64_precision_goes_down_the_shared_path():
    plan = fast_plan(_model(), DTYPES)
    assert fast_matrix(plan, [{**RECORDS[0], "hr": 2**60 + 1}]) is None


def test_derived_calendar_features_or_a_date_feature_have_no_fast_plan():
    derived = [{"name": "month", "from": "day", "part": "month"}]
    assert fast_plan(_model(derived), DTYPES) is None
    assert fast_plan(_model(), {**DTYPES, "temp": pl.Date()}) is None


def test_a_value_beyond_float32_becomes_infinity_on_both_paths():
    model, record = _model(), {**RECORDS[0], "temp": 1e39}
    frame = pl.DataFrame([tuple(record[n] for n in DTYPES)], schema=DTYPES, orient="row")
    fast = fast_matrix(fast_plan(model, DTYPES), [record])
    np.testing.assert_array_equal(fast, feature_matrix(frame, model.features, model.vocabularies))
    assert np.isinf(fast[0, 0])
