"""Which columns a request must carry: one function (`data.schema.required_inputs`) answers it for the
declaration, the trained model and the exported one, so the service never accepts a request the model cannot
score (issue 20, item 5)."""

from __future__ import annotations

from typing import Any

from evergreen.config import parse_params
from evergreen.data.schema import request_columns, required_inputs
from evergreen.inference import ServingModel
from evergreen.model.export import signature
from evergreen.model.network import TabularNet
from evergreen.model.preprocess import fit_preprocessing
from tests.harness import SMALL_MODEL, synthetic


def test_non_derived_features_then_their_timestamps_once_each():
    # "t" is both a feature and the source of two derived features: it keeps its place and appears once
    derived = [("t_month", "t"), ("u_year", "u"), ("t_dow", "t")]
    features = ["a", "t_month", "t", "b", "u_year", "t_dow"]
    assert required_inputs(features, derived) == ["a", "t", "b", "u"]
    assert required_inputs(["a", "b"], []) == ["a", "b"]


def test_the_declaration_the_trained_and_the_exported_model_agree(tiny_raw: dict[str, Any]):
    """Two derived features from the one timestamp, which is not a feature: each view lists the features sent,
    then the timestamp once; none lists a derived feature."""
    tiny_raw["data"]["derived"] = [
        {"name": "day_dow", "from": "day", "part": "day_of_week"},
        {"name": "day_month", "from": "day", "part": "month"},
    ]
    data = parse_params(tiny_raw).data
    prep = fit_preprocessing(synthetic(200, 1), data, SMALL_MODEL)
    exported = ServingModel("v1", None, signature(TabularNet(prep, SMALL_MODEL)), {})  # type: ignore[arg-type]
    declared = [c.name for c in request_columns(data)[0]]
    expected = ["hr", "weather", "temp", "hum", "day"]
    assert prep.features == ["hr", "weather", "temp", "hum", "day_dow", "day_month"]  # the derived are inputs
    assert declared == expected, "the declaration (request_columns)"
    assert prep.input_columns == expected, "the trained model (Preprocessing.input_columns)"
    assert exported.request_columns == expected, "the exported model (ServingModel.request_columns)"
