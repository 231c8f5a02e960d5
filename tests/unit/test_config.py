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
    with pytest.raises(ConfigError, match=r"monitor.policy.feature_thresholds.tmep: 'tmep' is not a feature"):
        parse_params(tiny_raw)


def test_every_cross_reference_is_checked_in_one_pass_with_its_key_path(tiny_raw):
    tiny_raw["data"]["columns"][1]["min"] = "2024-01-01"  # the timestamp column `day`
    tiny_raw["model"] = {"crosses": [["weather", "hour"], ["temp", "hr"]], "additive": ["yr"]}
    tiny_raw["promote"] = {"metric": "accuracy", "baseline": "hgb"}
    tiny_raw["evaluate"] = {"baselines": ["mean", "linear"]}
    tiny_raw["monitor"] = {"policy": {"feature_thresholds": {"season": 0.9}}}
    tiny_raw["simulate"] = {"start": "2012-01-01"}
    tiny_raw["split"] = {"valid_from": "2023-06-01", "test_from": "2024-02-01"}
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw)
    lines = str(err.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "model.crosses[0][1]",
        "model.crosses[1][0]",
        "model.additive[0]",
        "promote.metric",
        "promote.baseline",
        "split.valid_from",
        "simulate.start",
        "monitor.policy.feature_thresholds.season",
    ]
    assert "model.crosses[0][1]: 'hour' is not a declared feature" in lines[0]
    assert "'temp' is numeric; a cross takes categoricals" in lines[1]
    assert "promote.metric: 'accuracy' does not suit regression (use one of: rmse, mae, r2)" in lines[3]
    assert "<top level>" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"promote": {"metric": "roc_auc"}}, r"promote.metric: roc_auc needs a binary target; 'y' allows 3 classes"),
        ({"promote": {"metric": "rmse"}}, r"promote.metric: 'rmse' does not suit classification"),
        ({"model": {"target_transform": "log1p"}}, r"model.target_transform: log1p applies to regression only"),
        ({"split": {"method": "time", "test_from": "2030-01-01", "valid_from": "2029-01-01"}}, r"split.test_from: "),
    ],
)
def test_task_and_range_cross_references(tiny_raw, change, message):
    tiny_raw["data"]["task"] = "classification"
    tiny_raw["data"]["columns"][-1] = {"name": "y", "type": "int", "role": "target", "allowed": [0, 1, 2]}
    tiny_raw["data"]["columns"][1]["max"] = "2024-12-31"
    tiny_raw.update(change)
    with pytest.raises(ConfigError, match=message):
        parse_params(tiny_raw)


def test_the_defaults_follow_the_data(tiny_raw):
    params = parse_params(tiny_raw)
    assert params.promote.metric_for("regression") == "rmse" and params.split.method_for(params.data) == "time"
    tiny_raw["data"]["task"] = "classification"
    tiny_raw["data"].pop("timestamp")
    tiny_raw["data"]["columns"].pop(1)  # the date column
    classification = parse_params(tiny_raw)
    assert classification.promote.metric_for("classification") == "f1_macro"
    assert classification.split.method_for(classification.data) == "random"
    negative = tiny_raw | {"data": {**tiny_raw["data"], "task": "regression"}}
    negative["data"]["columns"][-1] = {"name": "y", "type": "float", "role": "target", "min": -5}
    with pytest.raises(ConfigError, match=r"model.target_transform: log1p needs a non-negative target; 'y' has min -5"):
        parse_params(negative)
    negative["model"] = {"target_transform": "none"}
    assert parse_params(negative).model.target_transform == "none"


def test_a_validation_batch_too_small_to_be_worth_a_gx_run_names_the_key(tiny_raw):
    tiny_raw["validation"] = {"batch_rows": 10}
    with pytest.raises(ConfigError, match=r"validation.batch_rows: .*1000"):
        parse_params(tiny_raw)
