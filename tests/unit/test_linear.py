"""The linear model as a `model.type: auto` candidate, and the equal-weight blend: the linear baseline's fit on
the shared contract (ONNX parity with scikit-learn's predict, served through `inference.load_version`, missing
values and unseen categories, a class absent from train), the blend's subset chosen on valid as one graph, and
TabM's CPU sizing."""

from __future__ import annotations

import copy
import json

import numpy as np
import polars as pl
import pytest

from evergreen.config import ModelConfig, TrainConfig, parse_params
from evergreen.inference import load_version, predict
from evergreen.model.auto import MIN_EPOCHS, TABM_CPU, _too_short, cpu_sized
from evergreen.model.baselines import fit_baselines, predict_baseline
from evergreen.model.candidates import load_candidate, save_candidate
from evergreen.model.ensemble import best_blend, equal_blend
from evergreen.model.export import onnx_session, signature
from evergreen.model.linear import LinearModel, fit_linear_model
from evergreen.model.preprocess import encode_target, fit_preprocessing
from evergreen.model.trees import fit_trees
from tests.harness import SMALL_MODEL, TINY, synthetic


def _prep(task: str, frame: pl.DataFrame, raw: dict | None = None):
    raw = copy.deepcopy(raw or TINY)
    raw["data"]["task"] = task
    transform = "log1p" if task == "regression" else "none"
    return fit_preprocessing(
        frame, parse_params(raw).data, SMALL_MODEL.model_copy(update={"target_transform": transform})
    )


def _xy(frame: pl.DataFrame, prep) -> tuple[np.ndarray, np.ndarray]:
    y = frame[prep.target].cast(pl.Float64).to_numpy() if prep.task == "regression" else encode_target(frame, prep)
    return prep.matrix(frame), y


def _awkward(prep) -> np.ndarray:
    """Rows with an unseen category and missing numerics and categories: the graph imputes as the pipeline does."""
    rows = synthetic(300, 3).with_columns(
        weather=pl.when(pl.col("id") % 3 == 0).then(pl.lit(7)).otherwise(pl.col("weather")),
        hum=pl.when(pl.col("id") % 4 == 0).then(None).otherwise(pl.col("hum")),
        hr=pl.when(pl.col("id") % 5 == 0).then(None).otherwise(pl.col("hr")),
    )
    return prep.matrix(rows)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_linear_candidate_is_the_linear_baseline_and_its_graph_matches_it(task, tmp_path):
    train, valid = synthetic(600, 1, task), synthetic(200, 2, task)
    prep = _prep(task, train)
    model = fit_linear_model(prep, _xy(train, prep), _xy(valid, prep))
    x = _awkward(prep)
    assert np.isnan(x).any()  # the missing values reach the graph as NaN
    classes = len(prep.classes or [])
    baseline = fit_baselines(prep, _xy(train, prep), _xy(valid, prep), ["linear"], 10, 5, 0)["linear"]
    np.testing.assert_allclose(model.predict_matrix(x), predict_baseline(baseline, task, x, classes))
    out = onnx_session(model.to_onnx(17)).run(None, {"features": x})[0]
    expected = model.predict_matrix(x)
    assert out.shape == expected.shape == ((len(x),) if task == "regression" else (len(x), 2))
    assert np.abs(out - expected).max() < (1e-4 * prep.target_scale if task == "regression" else 1e-5)
    # saved (the graph, not the pipeline), loaded, and served through the inference core like the others
    save_candidate(model, tmp_path / "model.pt")
    loaded = load_candidate(tmp_path / "model.pt")
    assert isinstance(loaded, LinearModel) and loaded.pipeline is None
    test = synthetic(120, 4, task)
    (tmp_path / "model.onnx").write_bytes(loaded.to_onnx(17))
    (tmp_path / "signature.json").write_text(json.dumps(signature(loaded)))
    served = predict(load_version(tmp_path, "v1"), test)
    assert np.abs(served - model.predict(test)).max() < (1e-4 * prep.target_scale if task == "regression" else 1e-5)
    np.testing.assert_allclose(loaded.predict(test), served, rtol=1e-6, atol=1e-6)


def test_a_class_absent_from_train_gets_probability_zero_in_the_models_class_order():
    raw = copy.deepcopy(TINY)
    raw["data"]["columns"][-1] = {"name": "y", "type": "str", "role": "target"}
    level = pl.when(pl.col("y") < 30).then(pl.lit("c")).when(pl.col("y") < 55).then(pl.lit("a")).otherwise(pl.lit("b"))
    train, valid = (synthetic(n, s).with_columns(y=level) for n, s in ((600, 1), (200, 2)))
    prep = _prep("classification", train, raw)
    assert prep.classes == ["a", "b", "c"]
    without_b = train.filter(pl.col("y") != "b")
    model = fit_linear_model(prep, _xy(without_b, prep), _xy(valid, prep))
    x = _awkward(prep)
    out = onnx_session(model.to_onnx(17)).run(None, {"features": x})[0]
    assert out.shape == (len(x), 3) and np.all(out[:, 1] == 0)
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-5)
    assert np.abs(out - model.predict_matrix(x)).max() < 1e-5


def test_the_blend_is_the_even_mean_of_the_subset_best_on_valid_as_one_graph(tmp_path):
    prep = _prep("regression", synthetic(50, 1))
    actual = np.linspace(0, 100, 200)
    wave = 10 * np.sin(np.arange(200))
    # a and b err in opposite directions (their mean is exact); c is unbiased but noisy
    outputs = {"a": actual + wave, "b": actual - wave, "c": actual + 5 * np.cos(np.arange(200))}
    members, value = best_blend(prep, "rmse", actual, outputs)
    assert members == ["a", "b"] and value == pytest.approx(0.0, abs=1e-9)
    assert best_blend(prep, "rmse", actual, {"a": outputs["a"]}) is None  # one candidate: nothing to blend

    train, valid = synthetic(600, 1), synthetic(200, 2)
    parts = [fit_linear_model(prep, _xy(train, prep), _xy(valid, prep)),
             fit_trees(prep, _xy(train, prep), _xy(valid, prep), seed=0),
             fit_trees(prep, _xy(train, prep), _xy(valid, prep), seed=1, params={"seed": 1})]  # fmt: skip
    blend = equal_blend(parts)
    x = _awkward(prep)
    expected = sum(p.predict_matrix(x) for p in parts) / 3
    np.testing.assert_allclose(blend.predict_matrix(x), expected, rtol=1e-9)
    assert blend.parts == "linear + lightgbm + lightgbm (equal weights)"
    out = onnx_session(blend.to_onnx(17)).run(None, {"features": x})[0]
    assert np.abs(out - expected).max() < 1e-4 * prep.target_scale
    save_candidate(blend, tmp_path / "model.pt")
    loaded = load_candidate(tmp_path / "model.pt")
    assert loaded.parts == blend.parts
    np.testing.assert_allclose(loaded.predict_matrix(x), expected, rtol=1e-4)


def test_tabm_is_capped_to_cpu_sizes_on_a_cpu_and_other_families_are_not():
    cpu = TrainConfig(device="cpu")
    sized, detail = cpu_sized("tabm", ModelConfig(k=32, d_block=512), cpu)
    assert (sized.type, sized.k, sized.d_block) == ("tabm", TABM_CPU["k"], TABM_CPU["d_block"])
    assert detail == {"cpu_sized": TABM_CPU}  # said on the leaderboard
    smaller, detail = cpu_sized("tabm", ModelConfig(k=4, d_block=64), cpu)
    assert (smaller.k, smaller.d_block, detail) == (4, 64, {})  # already small: kept as declared
    mlp, detail = cpu_sized("mlp", ModelConfig(k=32, d_block=512), cpu)
    assert (mlp.type, mlp.k, detail) == ("mlp", 32, {})


def test_a_network_stopped_after_too_few_epochs_is_flagged_on_the_leaderboard():
    assert "too few to judge" in _too_short(1, 21.9, 40)["note"]
    assert _too_short(MIN_EPOCHS, 30.0, 40) == {}
    assert _too_short(2, 30.0, 2) == {}  # it ran every epoch declared: nothing cut it short
