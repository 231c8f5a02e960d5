from __future__ import annotations

from pathlib import Path

import pytest

from evergreen.config import load_params, parse_params
from evergreen.errors import ConfigError


def test_bundled_params_load(bundled_params):
    data = bundled_params.data
    assert data.target.name == "cnt"
    assert data.id_column is not None and data.id_column.name == "instant"
    roles = {c.name: c.role for c in data.columns}
    assert roles["casual"] == roles["registered"] == "ignore"  # leakage: casual + registered = cnt
    assert "casual" not in [c.name for c in data.features]


def test_bad_role_names_the_key_path(tiny_raw):
    tiny_raw["data"]["columns"][3]["role"] = "lable"
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw)
    assert "data.columns[3].role: 'lable' is not one of: feature, target, timestamp, id, ignore" in str(err.value)


def test_unknown_key_is_rejected(tiny_raw):
    tiny_raw["split"] = {"method": "time", "valid_frm": "2012-01-01"}
    with pytest.raises(ConfigError, match=r"split.valid_frm: unknown key"):
        parse_params(tiny_raw)


def test_wrong_type_names_the_key(tiny_raw):
    tiny_raw["data"]["columns"][4]["min"] = "low"
    with pytest.raises(ConfigError, match=r"data.columns\[4\]"):
        parse_params(tiny_raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["columns"].append({"name": "y", "type": "int", "role": "feature"}),
            "unique; repeated: y",
        ),
        (lambda d: d["columns"].pop(), "exactly one column must have role 'target'"),
        (lambda d: d["timestamp"].update(column="when"), "timestamp.column 'when' is not a declared column"),
        (lambda d: d["columns"][3].update(min=0), "either an allowed set or a min/max range"),
        (
            lambda d: d["columns"][2].update(min=5, max=1),
            r"data.columns\[2\]: min \(5.0\) is greater than max \(1.0\)",
        ),
        (lambda d: d["columns"][1].update(kind="numeric"), "kind 'numeric' needs type int or float"),
    ],
)
def test_inconsistent_data_declarations(tiny_raw, change, message):
    change(tiny_raw["data"])
    with pytest.raises(ConfigError, match=message):
        parse_params(tiny_raw)


def test_split_dates_must_be_ordered(tiny_raw):
    tiny_raw["split"] = {"valid_from": "2012-05-01", "test_from": "2012-01-01"}
    with pytest.raises(ConfigError, match="split: valid_from must be before test_from"):
        parse_params(tiny_raw)


def test_missing_params_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "params.yaml")


def test_params_file_that_is_not_a_mapping(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(path)


def test_kind_defaults_from_type(tiny):
    kinds = {c.name: c.kind for c in tiny.data.columns}
    assert kinds["temp"] == "numeric" and kinds["day"] == "categorical" and kinds["hr"] == "categorical"


def test_feature_threshold_for_an_unknown_feature_is_rejected(tiny_raw):
    tiny_raw["monitor"] = {"policy": {"feature_thresholds": {"tmep": 0.2}}}
    with pytest.raises(ConfigError, match="feature_thresholds names tmep, which is not a feature"):
        parse_params(tiny_raw)
