"""The model:, train:, evaluate: and export: sections: defaults, and bad values named by their key path."""

from __future__ import annotations

import pytest

from evergreen.config import parse_params, with_overrides
from evergreen.errors import ConfigError


def test_defaults_when_the_sections_are_absent(tiny_raw):
    params = parse_params(tiny_raw)
    assert params.model.hidden and all(width > 0 for width in params.model.hidden)
    assert params.train.device == "auto"
    assert params.evaluate.baselines == ["mean", "linear", "hgb", "lightgbm"]
    assert params.model.type == "mlp" and params.promote.baseline_margin == 0
    assert params.export.opset >= 17 and params.export.parity_tolerance == 1e-4


def test_bundled_params_declare_the_model_sections(bundled_params):
    assert bundled_params.model.target_transform == "log1p"
    assert bundled_params.evaluate.hgb_max_iter == 500


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("model", {"hidden": [0]}, "model.hidden[0]"),
        ("model", {"hidden": [64, -3]}, "model.hidden[1]"),
        ("model", {"hidden": []}, "model.hidden"),
        ("model", {"activation": "relux"}, "model.activation: 'relux' is not one of: relu, gelu, silu, tanh"),
        ("model", {"dropout": 1.0}, "model.dropout"),
        ("model", {"embedding_dim": 0}, "model.embedding_dim"),
        ("model", {"ensemble": 0}, "model.ensemble"),
        ("model", {"crosses": [["hr"]]}, "model.crosses[0]: List should have at least 2 items"),
        ("model", {"crosses": [["hr", "hr"]]}, "crosses[0] names a column twice"),
        ("model", {"target_transform": "log"}, "model.target_transform"),
        ("model", {"hiden": [64]}, "model.hiden: unknown key"),
        ("model", {"type": "xgboost"}, "model.type: 'xgboost' is not one of: auto, mlp, resnet, ft_transformer, tabm"),
        ("model", {"d_token": 64, "heads": 6}, "model.heads: must divide model.d_token (64) evenly"),
        ("model", {"heads": 0}, "model.heads"),
        ("model", {"n_blocks": 0}, "model.n_blocks"),
        ("model", {"d_token": 0}, "model.d_token"),
        ("model", {"d_main": 0}, "model.d_main"),
        ("model", {"ffn_factor": 0}, "model.ffn_factor"),
        ("model", {"attention_dropout": 1.0}, "model.attention_dropout"),
        ("model", {"residual_dropout": -0.1}, "model.residual_dropout"),
        ("train", {"class_weight": "inverse"}, "train.class_weight"),
        ("train", {"tensorboard": "maybe"}, "train.tensorboard"),
        ("train", {"device": "tpu"}, "train.device: 'tpu' is not one of: auto, cpu, cuda"),
        ("train", {"lr": 0}, "train.lr"),
        ("train", {"lr": float("inf")}, "train.lr"),
        ("train", {"epochs": 0}, "train.epochs"),
        ("train", {"batch_size": 0}, "train.batch_size"),
        ("train", {"schedule": "step"}, "train.schedule"),
        ("train", {"grad_clip": 0}, "train.grad_clip"),
        ("evaluate", {"baselines": ["xgboost"]}, "evaluate.baselines[0]"),
        ("export", {"opset": 13}, "export.opset"),
        ("export", {"parity_tolerance": 0}, "export.parity_tolerance"),
    ],
)
def test_bad_values_name_the_key_path(tiny_raw, section, values, expected):
    tiny_raw[section] = values
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw)
    assert expected in str(err.value)


def test_good_values_are_accepted(tiny_raw):
    tiny_raw["model"] = {
        "hidden": [32, 16],
        "activation": "gelu",
        "crosses": [["hr", "weather"]],
        "ensemble": 2,
    }
    tiny_raw["train"] = {"device": "cpu", "grad_clip": None, "schedule": "cosine"}
    params = parse_params(tiny_raw)
    assert params.model.hidden == [32, 16] and params.train.grad_clip is None


def test_classes_are_not_weighted_by_default(tiny_raw, bundled_params):
    assert parse_params(tiny_raw).train.class_weight == "none"
    assert bundled_params.train.class_weight == "none" and bundled_params.train.tensorboard is False


def test_the_bundled_params_declare_every_family_knob(bundled_params):
    """`dvc exp run -S model.type=ft_transformer` needs nothing else: the family's knobs are declared and valid."""
    declared = bundled_params.model
    assert declared.type == "mlp" and declared.d_token % declared.heads == 0
    for family in ("resnet", "ft_transformer"):
        assert with_overrides(bundled_params, {"model.type": family}).model.type == family
