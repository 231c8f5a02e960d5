"""What `evaluate` adds for a task: per-class metrics and the plot tables (calibration, residuals), and its pass
over the test split one record batch at a time."""

from __future__ import annotations

import copy
import json

import numpy as np
import polars as pl
import pytest

from evergreen.config import parse_params
from evergreen.data import parquet_rows
from evergreen.model.candidates import load_candidate
from evergreen.model.export import onnx_session, parity
from evergreen.model.metrics import per_class_metrics, score
from evergreen.model.preprocess import encode_target
from evergreen.stages import evaluate as evaluate_stage
from evergreen.stages import export as export_stage
from evergreen.stages import train as train_stage
from evergreen.stages.evaluate import calibration, residuals
from evergreen.workspace import Workspace
from tests.harness import TINY, synthetic


def test_per_class_precision_recall_f1_name_every_class_even_an_absent_one():
    actual = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1, 0], [0.4, 0.6, 0], [0.2, 0.8, 0], [0.3, 0.7, 0]])
    table = per_class_metrics(actual, probabilities, ["low", "high", "rare"])
    assert table["low"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert table["high"]["precision"] == pytest.approx(2 / 3) and table["high"]["recall"] == 1.0
    assert table["rare"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_calibration_bins_confidence_against_accuracy_and_residuals_are_actual_minus_predicted():
    actual = np.array([0, 1, 1, 0, 0])
    probabilities = np.array([[0.95, 0.05], [0.15, 0.85], [0.9, 0.1], [0.92, 0.08], [0.55, 0.45]])
    table = calibration(actual, probabilities, bins=10)
    assert table["rows"].to_list() == [1, 1, 3]
    assert table["accuracy"].to_list() == [1.0, 1.0, 0.6667]  # the 0.9+ bin is right 2 times in 3: overconfident
    frame = residuals(np.array([10.0, 5.0]), np.array([8.0, 7.5]))
    assert frame["residual"].to_list() == [2.0, -2.5]


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_test_split_is_scored_batch_by_batch_as_it_would_be_whole(tmp_path, monkeypatch, task):
    tmp_path.joinpath("data/split").mkdir(parents=True)
    for name, seed, n in (("train", 1, 400), ("valid", 2, 150), ("test", 3, 700)):
        synthetic(n, seed, task).write_parquet(tmp_path / f"data/split/{name}.parquet")
    raw = copy.deepcopy(TINY)
    raw["data"]["task"] = task
    raw["model"] = {"hidden": [16], "embedding_dim": 4}
    raw["train"] = {"epochs": 2, "batch_size": 64, "device": "cpu"}
    raw["evaluate"] = {"baselines": ["mean", "linear"], "plot_rows": 250}
    raw["export"] = {"latency_runs": 10, "throughput_batch": 64}
    ws = Workspace(tmp_path, parse_params(raw))
    train_stage.run(ws)
    monkeypatch.setattr(parquet_rows, "READ_ROWS", 64)  # 11 record batches of the 700 test rows
    evaluate_stage.run(ws)

    test = pl.read_parquet(ws.split("test"))
    model = load_candidate(ws.model)
    output = model.predict(test)
    actual = test["y"].to_numpy() if task == "regression" else encode_target(test, model.prep)
    whole = score(task, actual, output, model.prep.classes, model.prep.decision_weights)
    report = json.loads(ws.eval_metrics.read_text())
    assert report["model"] == pytest.approx({k: round(v, 6) for k, v in whole.items()}, abs=2e-6)
    predictions = pl.read_parquet(ws.test_predictions)
    assert predictions["id"].to_list() == test["id"].to_list()  # every row once, in the split's order
    if task == "regression":
        np.testing.assert_allclose(predictions["prediction"].to_numpy(), output, rtol=1e-6)
    else:
        np.testing.assert_allclose(predictions[[f"p_{c}" for c in model.prep.classes]].to_numpy(), output, rtol=1e-6)
        assert pl.read_csv(ws.calibration_csv)["rows"].sum() == 700  # calibration bins every row
    plotted = pl.read_csv(ws.predictions_csv)
    assert plotted.height == 250  # a seeded sample of the rows, in row order
    assert plotted.columns[:2] == ["actual", "predicted"]
    evaluate_stage.run(ws)
    assert pl.read_csv(ws.predictions_csv).equals(plotted)  # the same sample again

    export_stage.run(ws)  # the parity gate reads the test split batch by batch too
    exported = json.loads(ws.export_metrics.read_text())
    whole_diff = parity(onnx_session(ws.onnx_model.read_bytes()), model.net, model.prep.matrix(test))
    assert exported["parity_rows"] == 700 and exported["parity_max_abs_diff"] == pytest.approx(whole_diff, rel=1e-6)
