"""ONNX export: a checked graph with a dynamic batch, parity with torch, a gate that catches a bad graph,
and the train → evaluate → export stages end to end on tiny synthetic data."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import polars as pl
import pytest
import yaml
from onnx import numpy_helper

from evergreen.config import Params, parse_params
from evergreen.errors import ParityFailed
from evergreen.inference import feature_matrix, onnx_predict
from evergreen.model.export import check_parity, export_onnx, onnx_session, parity, signature
from evergreen.model.network import TabularNet
from evergreen.model.train import train_model
from evergreen.orchestration.summary import closing_summary
from evergreen.provenance import data_hashes
from evergreen.stages import evaluate as evaluate_stage
from evergreen.stages import export as export_stage
from evergreen.stages import train as train_stage
from evergreen.workspace import Workspace
from tests.harness import SMALL_MODEL, SMALL_TRAIN, TINY, synthetic


def _params(task: str = "regression") -> Params:
    raw = copy.deepcopy(TINY)
    raw["data"]["task"] = task
    return parse_params(raw)


@pytest.fixture(scope="module")
def model() -> TabularNet:
    params = _params()
    config = SMALL_MODEL.model_copy(update={"ensemble": 2, "additive": ["temp"]})
    return train_model(synthetic(400, 1), synthetic(100, 2), params.data, config, SMALL_TRAIN, progress=False).model


def _awkward_rows(model: TabularNet) -> np.ndarray:
    """Test rows plus unseen categories and missing values, which the graph must treat like torch does."""
    rows = synthetic(60, 3).with_columns(
        weather=pl.when(pl.col("id") % 3 == 0).then(pl.lit(7)).otherwise(pl.col("weather")),
        hum=pl.when(pl.col("id") % 4 == 0).then(None).otherwise(pl.col("hum")),
        hr=pl.when(pl.col("id") % 5 == 0).then(None).otherwise(pl.col("hr")),
    )
    return feature_matrix(rows, model.prep.features)


def test_the_graph_is_valid_and_matches_torch(model):
    graph = export_onnx(model, opset=17)
    proto = onnx.load_from_string(graph)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    assert [i.name for i in proto.graph.input] == ["features"] and [o.name for o in proto.graph.output] == [
        "prediction"
    ]
    session = onnx_session(graph)
    x = _awkward_rows(model)
    assert parity(session, model, x) < 1e-3  # counts of ~100: float32 rounding only
    for batch in (1, 37):  # the batch axis is dynamic
        assert onnx_predict(session, x[:batch]).shape == (batch,)


def test_a_tampered_graph_fails_the_parity_gate(model):
    proto = onnx.load_from_string(export_onnx(model, opset=17))
    weight = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the largest weight matrix
    tampered = numpy_helper.to_array(weight) * 1.05
    weight.CopyFrom(numpy_helper.from_array(tampered.astype(np.float32), weight.name))
    session = onnx_session(proto.SerializeToString())
    diff = parity(session, model, _awkward_rows(model))
    with pytest.raises(ParityFailed, match="exceeds export.parity_tolerance"):
        check_parity(diff, 1e-4, model.prep.target_scale)
    check_parity(0.0, 1e-4, model.prep.target_scale)  # and an exact graph passes


def test_classification_exports_class_probabilities():
    params = _params("classification")
    frames = synthetic(400, 1, "classification"), synthetic(100, 2, "classification")
    net = train_model(*frames, params.data, SMALL_MODEL, SMALL_TRAIN, progress=False).model
    session = onnx_session(export_onnx(net, opset=17))
    x = _awkward_rows(net)
    probabilities = onnx_predict(session, x)
    assert probabilities.shape == (len(x), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert parity(session, net, x) < 1e-5
    assert signature(net)["output"] == {
        "name": "probabilities", "dtype": "float32", "shape": ["batch", 2],
        "meaning": "probability of each class of y", "classes": [0, 1],
    }  # fmt: skip


def test_signature_lists_the_input_columns_in_order(model):
    sig = signature(model)
    assert [c["name"] for c in sig["input"]["columns"]] == ["hr", "weather", "temp", "hum"]
    assert sig["input"]["columns"][1] == {"name": "weather", "type": "int", "kind": "categorical",
                                          "vocabulary": [1, 2, 3]}  # fmt: skip
    assert sig["output"]["name"] == "prediction"


def test_data_hashes_come_from_the_train_stage_in_dvc_lock():
    deps = [{"path": "data/split/train.parquet", "md5": "aa"}, {"path": "src/evergreen/x.py", "md5": "bb"}]
    lock = {"stages": {"train": {"deps": deps}}}
    assert data_hashes(lock) == {"data/split/train.parquet": "aa"}
    assert data_hashes({"stages": {"split": {"outs": [{"path": "data/split", "md5": "cc.dir"}]}}}) == {
        "data/split": "cc.dir"
    }
    assert data_hashes({}) == {}


def test_train_evaluate_export_stages(tmp_path):
    tmp_path.joinpath("data/split").mkdir(parents=True)
    for name, seed, n in (("train", 1, 500), ("valid", 2, 150), ("test", 3, 150)):
        synthetic(n, seed).write_parquet(tmp_path / f"data/split/{name}.parquet")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"train": {"deps": [
        {"path": "data/split/train.parquet", "md5": "abc"}]}}}))  # fmt: skip
    raw = copy.deepcopy(TINY)
    raw["model"] = {"hidden": [16], "embedding_dim": 4}
    raw["train"] = {"epochs": 3, "batch_size": 64, "device": "cpu"}
    raw["evaluate"] = {"hgb_max_iter": 20}
    raw["export"] = {"latency_runs": 10, "throughput_batch": 64}
    ws = Workspace(tmp_path, parse_params(raw))

    train_stage.run(ws)
    assert json.loads(ws.train_metrics.read_text())["epochs_run"] == 3
    assert (ws.dvclive / "plots/metrics/valid_rmse.tsv").exists()
    evaluate_stage.run(ws)
    report = json.loads(ws.eval_metrics.read_text())
    assert set(report["model"]) == {"rmse", "mae", "r2"}
    assert set(report["baselines"]) == {"mean", "linear", "hgb", "lightgbm"}
    # one family declared: the leaderboard is its one row, the model's test metric beside its valid one
    board = json.loads(ws.leaderboard.read_text())
    assert [(r["family"], r["chosen"], r["test"]) for r in board["candidates"]] == [
        ("mlp", True, report["model"]["rmse"])
    ]
    assert pl.read_csv(ws.predictions_csv).columns == ["actual", "predicted", "abs_error"]
    predictions = pl.read_parquet(ws.test_predictions)
    assert predictions.height == 150 and {"id", "prediction", "y"} <= set(predictions.columns)
    export_stage.run(ws)
    exported = json.loads(ws.export_metrics.read_text())
    assert exported["parity_max_abs_diff"] <= exported["parity_limit"]
    assert exported["onnxruntime"]["latency_p50_ms"] > 0 and exported["torch"]["throughput_rows_per_s"] > 0
    card = json.loads(ws.model_card.read_text())
    assert card["data"] == {"data/split/train.parquet": "abc"}
    assert card["metrics"] == report and card["params"]["model"]["hidden"] == [16]
    session = onnx_session(ws.onnx_model.read_bytes())
    test = pl.read_parquet(ws.split("test"))
    np.testing.assert_allclose(
        onnx_predict(session, feature_matrix(test, ["hr", "weather", "temp", "hum"])),
        predictions["prediction"].to_numpy(),
        rtol=1e-4,
    )
    assert "baselines_fit_on" not in report  # every train row, and nothing to say

    # a train split above evaluate.baseline_rows: the baselines fit on a seeded sample, and both files say so
    raw["evaluate"]["baseline_rows"] = 300
    evaluate_stage.run(Workspace(tmp_path, parse_params(raw)))
    assert json.loads(ws.eval_metrics.read_text())["baselines_fit_on"] == {"rows": 300, "of": 500}
    assert "(RMSE; fitted on 300 of 500 train rows)" in closing_summary(ws)


def test_train_and_evaluate_stages_for_classification(tmp_path):
    tmp_path.joinpath("data/split").mkdir(parents=True)
    for name, seed, n in (("train", 1, 500), ("valid", 2, 150), ("test", 3, 150)):
        synthetic(n, seed, "classification").write_parquet(tmp_path / f"data/split/{name}.parquet")
    raw = copy.deepcopy(TINY)
    raw["data"]["task"] = "classification"
    raw["model"] = {"hidden": [16], "embedding_dim": 4}
    raw["train"] = {"epochs": 3, "batch_size": 64, "device": "cpu"}
    raw["evaluate"] = {"hgb_max_iter": 20}
    ws = Workspace(tmp_path, parse_params(raw))
    train_stage.run(ws)
    evaluate_stage.run(ws)
    report = json.loads(ws.eval_metrics.read_text())
    assert set(report["model"]) == {"accuracy", "f1_macro", "log_loss", "roc_auc"}
    assert report["baselines"]["mean"]["roc_auc"] == 0.5  # class priors rank nothing
    confusion = pl.read_csv(ws.confusion_csv)
    assert confusion.columns == ["actual", "predicted"] and confusion.height == 150
    assert set(pl.read_csv(ws.predictions_csv)["abs_error"].unique()) <= {0.0, 1.0}


def test_strings_and_derived_features_score_the_same_in_the_service_path(tmp_path):
    """The signature carries the string vocabulary and the derived features; the inference core, given the raw
    request columns only, scores like the torch model (unseen and missing strings included)."""
    from evergreen.inference import ServingModel, predict

    raw = copy.deepcopy(TINY)
    raw["data"]["columns"][3] = {"name": "weather", "type": "str", "role": "feature"}
    raw["data"]["derived"] = [{"name": "day_dow", "from": "day", "part": "day_of_week"}]
    params = parse_params(raw)

    def words(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(weather=pl.format("w{}", pl.col("weather")))

    torch_model = train_model(words(synthetic(300, 1)), words(synthetic(100, 2)), params.data, SMALL_MODEL,
                              SMALL_TRAIN, progress=False).model  # fmt: skip
    sig = signature(torch_model)
    assert sig["input"]["derived"] == [{"name": "day_dow", "from": "day", "part": "day_of_week"}]
    weather = next(c for c in sig["input"]["columns"] if c["name"] == "weather")
    assert weather == {"name": "weather", "type": "str", "kind": "categorical", "vocabulary": ["w1", "w2", "w3"]}
    serving = ServingModel("v1", onnx_session(export_onnx(torch_model, 17)), json.loads(json.dumps(sig)), {})
    assert serving.request_columns == ["hr", "weather", "temp", "hum", "day"]
    rows = (
        words(synthetic(40, 3))
        .with_columns(
            weather=pl.when(pl.col("id") % 3 == 0).then(pl.lit("fog")).otherwise(pl.col("weather")),
        )
        .with_columns(weather=pl.when(pl.col("id") % 7 == 0).then(None).otherwise(pl.col("weather")))
    )
    request = rows.select(serving.request_columns)  # what the service builds from the records
    np.testing.assert_allclose(predict(serving, request), torch_model.predict(rows), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_a_tabm_model_goes_through_the_stages_and_serves(tmp_path):
    """tabm through the same train, evaluate and export stages (parity gate included) as any family, and its
    graph loads and scores where the service loads models."""
    from evergreen.inference import load_version

    tmp_path.joinpath("data/split").mkdir(parents=True)
    for name, seed, n in (("train", 1, 500), ("valid", 2, 150), ("test", 3, 150)):
        synthetic(n, seed).write_parquet(tmp_path / f"data/split/{name}.parquet")
    raw = copy.deepcopy(TINY)
    raw["model"] = {"type": "tabm", "k": 4, "d_block": 16, "n_blocks": 2, "bins": 8, "d_embedding": 4}
    raw["train"] = {"epochs": 3, "batch_size": 64, "device": "cpu", "lr": 0.01}
    raw["evaluate"] = {"hgb_max_iter": 20}
    raw["export"] = {"latency_runs": 10, "throughput_batch": 64}
    ws = Workspace(tmp_path, parse_params(raw))
    train_stage.run(ws)
    assert json.loads(ws.train_metrics.read_text())["model_type"] == "tabm"
    evaluate_stage.run(ws)
    export_stage.run(ws)
    exported = json.loads(ws.export_metrics.read_text())
    assert exported["parity_max_abs_diff"] <= exported["parity_limit"]
    served = load_version(ws.onnx_model.parent, "v-tabm")
    test = synthetic(40, 9)
    x = feature_matrix(test, served.features)
    np.testing.assert_allclose(onnx_predict(served.session, x), TabularNet.load(ws.model).predict(test), rtol=1e-4)
