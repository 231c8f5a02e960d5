"""The prediction service's core (`PredictionService`, no HTTP) on a trained model: what it answers, what it
logs, and the outputs and labels it must refuse (issue 10 b and f)."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest
import yaml

from evergreen.errors import Rejected
from evergreen.prediction_log.base import LogColumns
from evergreen.prediction_log.read import read_log
from evergreen.registry.store import Registry
from evergreen.serving.service import PredictionService
from evergreen.stages import evaluate as evaluate_stage
from evergreen.stages import export as export_stage
from evergreen.stages import train as train_stage
from evergreen.workspace import LogLocation, Workspace
from tests.harness import TINY, synthetic

pytestmark = [pytest.mark.slow]


def _good(trained) -> dict:
    return trained.records()[0]


def test_predict_logs_each_record_and_answers_with_its_request_id(service, trained):
    """A scored request answers one prediction per record, the version, a request id and out-of-range flags,
    and its rows are in the log (features, prediction, flags) once `predict` returns."""
    records = trained.records()[:3]
    answer = service.predict(json.dumps({"records": records}).encode())
    assert answer["model_version"] == "v1" and len(answer["predictions"]) == 3
    assert answer["out_of_range"] == [[], [], []]
    log = read_log(service.log.location)
    assert log["request_id"].to_list() == [answer["request_id"]] * 3
    assert log["prediction"].to_list() == answer["predictions"]
    assert log["id"].to_list() == [r["id"] for r in records]
    assert log[LogColumns.OUT_OF_RANGE].to_list() == [[], [], []]


def test_predict_refuses_bad_payloads_with_the_right_status(service, trained):
    """Errors a client can cause are `Rejected` with a 4xx status, and nothing is logged for them."""
    good = _good(trained)
    cases = [
        (b"{", 400),
        ([1], 422),
        ({"records": [good], "x": 1}, 422),
        ({"records": [{**good, "hr": "7"}]}, 422),
        ({"records": [good] * 51}, 413),
    ]
    for body, status in cases:
        with pytest.raises(Rejected) as caught:
            service.predict(body)
        assert caught.value.status == status, (body, caught.value.body())
    assert read_log(service.log.location).height == 0


def test_a_non_finite_output_is_a_422_naming_the_record_and_is_not_logged(service, trained):
    """Promise: an answer is valid JSON holding finite numbers, and the log holds acknowledged predictions only.
    Attack: values the schema accepts (finite float64) but the graph overflows on: temp 1e38, hum 1e308, temp
    1e6 (exp of the log-scale output). Before: the row was committed with a NULL prediction, then the answer
    failed to serialise (500)."""
    good = _good(trained)
    for change in ({"temp": 1e38}, {"hum": 1e308}, {"temp": 1e6}):
        with pytest.raises(Rejected) as caught:
            service.predict({"records": [good, {**good, **change}]})
        assert caught.value.status == 422
        assert "records[1]" in caught.value.error and caught.value.detail[0]["field"] == "records[1]"
        assert list(change)[0] in caught.value.detail[0]["message"]  # it names the feature out of range
    assert read_log(service.log.location).height == 0
    with sqlite3.connect(service.log.location.path) as conn:
        assert conn.execute("SELECT count(*) FROM predictions WHERE prediction IS NULL").fetchone() == (0,)
    assert len(service.predict({"records": [good]})["predictions"]) == 1  # and it keeps serving


def test_out_of_range_inputs_are_scored_and_flagged_in_the_answer_and_the_log(service, trained):
    """Promise: an input outside the declared range or set is scored (drift must be seen), and flagged per
    record in the answer and in the log, so a client can distrust it and monitoring can count it. Attack:
    temp 1.5 and -0.5 (declared [0, 1]), hr 40 (declared [0, 23]), weather 9 (allowed 1, 2, 3)."""
    good = _good(trained)
    records = [good, {**good, "temp": 1.5}, {**good, "temp": -0.5, "hr": 40}, {**good, "weather": 9}]
    answer = service.predict({"records": records})
    assert answer["out_of_range"] == [[], ["temp"], ["hr", "temp"], ["weather"]]
    log = read_log(service.log.location)
    assert log[LogColumns.OUT_OF_RANGE].to_list() == [[], ["temp"], ["hr", "temp"], ["weather"]]
    assert log["prediction"].to_list() == answer["predictions"]


def test_feedback_refuses_labels_outside_the_declared_range(service, trained):
    """Promise: a label the declaration would quarantine (the target `y` is an int with min 0) is refused at
    the door with a 422 naming it, and nothing is labelled. Attack: -5, 1e308 (beyond int64), NaN as text.
    Before: they were stored as ground truth."""
    request_id = service.predict({"records": trained.records()[:3]})["request_id"]
    for labels, where in (([1, -5, 2], "labels[1]"), ([1e308, 1, 2], "labels[0]"), ([1, 2, "NaN"], "labels[2]")):
        with pytest.raises(Rejected) as caught:
            service.feedback({"request_id": request_id, "labels": labels})
        assert caught.value.status == 422 and where in caught.value.error, caught.value.body()
    assert read_log(service.log.location)["label"].null_count() == 3
    assert service.feedback({"request_id": request_id, "labels": [0, 12.0, None]}) == {
        "request_id": request_id,
        "labelled": 2,
    }
    assert read_log(service.log.location)["label"].to_list() == [0, 12, None]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A binary classifier (classes 0 and 1) trained, evaluated and exported by the real stages and promoted.
    Its target `y` is declared an int with min 0 and no allowed set: only the model knows its classes."""
    root = tmp_path_factory.mktemp("classifier")
    raw = copy.deepcopy(TINY)
    raw["data"]["task"] = "classification"
    raw |= {"model": {"hidden": [16], "embedding_dim": 4}, "train": {"epochs": 2, "device": "cpu"}}
    raw |= {"evaluate": {"hgb_max_iter": 10}, "export": {"latency_runs": 10, "throughput_batch": 64}}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    ws = Workspace.open(root)
    ws.split("train").parent.mkdir(parents=True)
    for name, seed, n in (("train", 1, 400), ("valid", 2, 150), ("test", 3, 150)):
        synthetic(n, seed, task="classification").write_parquet(ws.split(name))
    for stage in (train_stage, evaluate_stage, export_stage):
        stage.run(ws)
    registry = Registry(ws.registry)
    files = {"model.onnx": ws.onnx_model, "signature.json": ws.signature}
    registry.promote(registry.add(files, json.loads(ws.model_card.read_text())), "test: the classifier")
    return ws


def test_feedback_refuses_a_label_outside_the_models_classes(classifier: Workspace, tmp_path: Path):
    """Promise (issue 11): `/feedback` refuses a label the champion has no class for, with a 422 naming it,
    even where the declaration allows it. Attack: 5 and 2 for a model of classes 0 and 1 (the target is only
    declared `min: 0`). Before: they were stored as ground truth, and monitoring scored the model on them."""
    records = pl.read_parquet(classifier.split("test")).head(3)
    records = records.select("id", "hr", "weather", "temp", "hum", pl.col("day").cast(pl.String)).to_dicts()
    log_path = tmp_path / "predictions.db"
    params = classifier.params.model_copy(update={"serve": classifier.params.serve.model_copy(
        update={"log_path": str(log_path)})})  # fmt: skip
    with PredictionService(Workspace(classifier.root, params)) as service:
        answer = service.predict({"records": records})
        assert answer["classes"] == [0, 1]
        request_id = answer["request_id"]
        with pytest.raises(Rejected) as caught:
            service.feedback({"request_id": request_id, "labels": [1, 5, 2]})
        assert caught.value.status == 422
        assert "5, 2" in caught.value.error, caught.value.body()
        assert [d["field"] for d in caught.value.detail] == ["labels[1]", "labels[2]"]
        assert "not one of the classes of model v1: [0, 1]" in caught.value.detail[0]["message"]
        with pytest.raises(Rejected) as caught:
            service.feedback({"request_id": request_id, "labels": [-1, 0, 1]})  # the declared min still holds
        assert caught.value.status == 422 and "labels[0]" in caught.value.error
        assert read_log(LogLocation.sqlite(log_path))["label"].null_count() == 3  # nothing was labelled
        assert service.feedback({"request_id": request_id, "labels": [1, None, 0]})["labelled"] == 2
    assert read_log(LogLocation.sqlite(log_path))["label"].to_list() == [1, None, 0]


def test_feedback_for_an_unknown_request_is_a_404(service):
    """An id the log does not hold is a 404, not a silent no-op."""
    with pytest.raises(Rejected) as caught:
        service.feedback(b'{"request_id": "nope", "labels": [1]}')
    assert caught.value.status == 404 and "nope" in caught.value.error


def test_health_and_model_info_report_the_served_version(service: PredictionService):
    """Without HTTP: health says ok with the log writable, model_info the version, features and schema."""
    assert service.health() == {"status": "ok", "model_version": "v1", "log": "ok", "log_backend": "sqlite"}
    info = service.model_info()
    assert info["version"] == "v1" and info["features"] == ["hr", "weather", "temp", "hum"]
    assert "fallback" not in info and info["max_batch"] == 50
