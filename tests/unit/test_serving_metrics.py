"""The service's Prometheus metrics (`serving.metrics`, `GET /metrics`): each moves when it should.

The model is a hand-made ONNX graph (the sum of the features) registered as v1, so the service and the app
run in-process without training anything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
import yaml
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families

from evergreen.artifacts.decisions import RetrainDecision, RetrainResult, append_entry
from evergreen.errors import Rejected
from evergreen.registry.store import Registry
from evergreen.serving.app import create_app
from evergreen.serving.metrics import ServiceMetrics
from evergreen.serving.service import PredictionService
from evergreen.workspace import Workspace
from tests.harness import TINY

TOKEN = "metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEATURES = ["hr", "weather", "temp", "hum"]  # TINY's features, in declared order
GOOD = {"hr": 7, "weather": 2, "temp": 0.5, "hum": 0.4}


def _graph(path: Path, scale: float) -> None:
    """features [N, 4] -> their sum times `scale`, [N]: a regression graph the service can load."""
    nodes = [
        helper.make_node("ReduceSum", ["features", "axes"], ["sum"], keepdims=0),
        helper.make_node("Mul", ["sum", "scale"], ["prediction"]),
    ]
    graph = helper.make_graph(
        nodes,
        "sum",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", len(FEATURES)])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1]), helper.make_tensor("scale", 1, [], [scale])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


def _add_version(ws: Workspace, scale: float) -> str:
    folder = ws.root / f"graph-{scale}"
    folder.mkdir()
    _graph(folder / "model.onnx", scale)
    signature = {"task": "regression", "input": {"columns": [{"name": n} for n in FEATURES]}, "output": {}}
    (folder / "signature.json").write_text(json.dumps(signature))
    files = {"model.onnx": folder / "model.onnx", "signature.json": folder / "signature.json"}
    return Registry(ws.registry).add(files, {"note": f"sum x {scale}"})


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A project whose champion v1 is the sum of the features; v2 (x 2) is registered, not promoted."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    ws = Workspace.open(tmp_path)
    Registry(ws.registry).promote(_add_version(ws, 1.0), "test")
    _add_version(ws, 2.0)
    return ws


@pytest.fixture
def service(workspace: Workspace) -> Iterator[tuple[PredictionService, ServiceMetrics]]:
    """The service without HTTP, its hooks wired to a metrics registry as the app wires them."""
    metrics = ServiceMetrics()
    with PredictionService(workspace, metrics.observe_scored, metrics.observe_commit) as service:
        metrics.watch(lambda: (service.champion.model, service.champion.fallback), workspace.decisions)
        yield service, metrics


@pytest.fixture
def client(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("EVERGREEN_API_TOKEN", TOKEN)
    with TestClient(create_app(workspace)) as client:
        yield client


def _value(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist yet."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _scraped(client: TestClient, name: str, **labels: str) -> float | None:
    """A sample's value as `GET /metrics` shows it (None when absent), parsed from the text format."""
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def _decision(action: str, share: float, time: str = "2024-03-01T12:00:00Z") -> RetrainDecision:
    return RetrainDecision(
        time=time, action=action, drifted=action == "retrain", reasons=[], champion="v1", drift_share=share
    )


# ------------------------------------------------------------------------------------------ service hooks
def test_a_scored_request_counts_its_rows_and_its_commit(service):
    """Promise: rows scored counts committed records, by version; each commit is timed and sized."""
    service, metrics = service
    service.predict({"records": [GOOD, GOOD, GOOD]})
    assert _value(metrics, "evergreen_rows_scored_total", model_version="v1") == 3
    assert _value(metrics, "evergreen_log_commit_duration_seconds_count") >= 1
    assert _value(metrics, "evergreen_log_commit_duration_seconds_sum") > 0
    assert _value(metrics, "evergreen_log_commit_operations_sum") >= 1
    commits = _value(metrics, "evergreen_log_commit_duration_seconds_count")
    request_id = service.predict({"records": [GOOD]})["request_id"]
    service.feedback({"request_id": request_id, "labels": [3]})
    assert _value(metrics, "evergreen_log_commit_duration_seconds_count") >= commits + 2
    assert _value(metrics, "evergreen_rows_scored_total", model_version="v1") == 4


def test_a_refused_request_scores_no_rows(service):
    """Promise: a 422 (a wrong type, a non-finite output) moves no row counter: it was not scored and logged."""
    service, metrics = service
    for body in ({"records": [{**GOOD, "hr": "7"}]}, {"records": [{**GOOD, "temp": 3e38, "hum": 3e38}]}):
        with pytest.raises(Rejected):
            service.predict(body)
    assert _value(metrics, "evergreen_rows_scored_total", model_version="v1") == 0
    assert _value(metrics, "evergreen_rows_out_of_range_total") == 0


def test_out_of_range_records_are_counted_per_record_and_per_feature(service):
    """Promise: the out-of-range share is countable: records with any flagged feature, and each feature.
    Attack: temp 1.5 (declared [0, 1]); temp -0.5 and hr 40 in one record; weather 9 (allowed 1, 2, 3)."""
    service, metrics = service
    records = [GOOD, {**GOOD, "temp": 1.5}, {**GOOD, "temp": -0.5, "hr": 40}, {**GOOD, "weather": 9}]
    service.predict({"records": records})
    assert _value(metrics, "evergreen_rows_scored_total", model_version="v1") == 4
    assert _value(metrics, "evergreen_rows_out_of_range_total") == 3
    counts = {f: _value(metrics, "evergreen_feature_out_of_range_total", feature=f) for f in FEATURES}
    assert counts == {"hr": 1, "weather": 1, "temp": 2, "hum": 0}


def test_the_model_version_follows_a_hot_swap(service, workspace):
    service, metrics = service
    assert _value(metrics, "evergreen_model_info", version="v1", task="regression") == 1
    assert _value(metrics, "evergreen_model_fallback") == 0
    Registry(workspace.registry).promote("v2", "test")
    assert service.champion.refresh()
    assert _value(metrics, "evergreen_model_info", version="v2", task="regression") == 1
    assert metrics.registry.get_sample_value("evergreen_model_info", {"version": "v1", "task": "regression"}) is None
    service.predict({"records": [GOOD]})
    assert _value(metrics, "evergreen_rows_scored_total", model_version="v2") == 1


def test_the_last_drift_decision_is_read_from_the_decisions_log(service, workspace):
    """Promise: the drift gauges show the decisions log's last `decision` entry, read when scraped: none before
    the first check, the new one after each append, unchanged by a retrain result appended after it."""
    service, metrics = service
    assert metrics.registry.get_sample_value("evergreen_drift_share") is None
    append_entry(workspace.decisions, _decision("none", 0.25))
    assert _value(metrics, "evergreen_drift_share") == 0.25
    assert _value(metrics, "evergreen_drift_detected") == 0
    assert _value(metrics, "evergreen_drift_decision", action="none") == 1
    assert _value(metrics, "evergreen_drift_check_timestamp_seconds") == 1709294400  # 2024-03-01 12:00 UTC
    append_entry(workspace.decisions, _decision("retrain", 0.75, "2024-03-02T12:00:00Z"))
    append_entry(workspace.decisions, RetrainResult(status="promoted", version="v2"))
    assert _value(metrics, "evergreen_drift_share") == 0.75
    assert _value(metrics, "evergreen_drift_detected") == 1
    assert _value(metrics, "evergreen_drift_decision", action="retrain") == 1
    assert _value(metrics, "evergreen_drift_decision", action="none") == 0


def test_a_decisions_log_that_cannot_be_read_keeps_the_last_reading(service, workspace):
    """Attack: a line that is not a decisions-log entry. The scrape still answers, with the last good reading."""
    service, metrics = service
    append_entry(workspace.decisions, _decision("alert", 0.5))
    assert _value(metrics, "evergreen_drift_decision", action="alert") == 1
    with workspace.decisions.open("a") as handle:
        handle.write('{"kind": "nonsense"}\n')
    assert _value(metrics, "evergreen_drift_share") == 0.5
    assert b"evergreen_drift_share 0.5" in metrics.render()[0]


# --------------------------------------------------------------------------------------------------- HTTP
def test_metrics_need_the_token(client):
    """Promise: /metrics is behind the API token like everything but /health; a 401 is itself counted."""
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert _scraped(client, "evergreen_http_requests_total", endpoint="/metrics", status="401") == 2


def test_requests_are_counted_and_timed_by_endpoint_and_status(client):
    """Promise: every answer counts under its route and status (a 200, a 422, a 415, a 404 on an unknown path
    as endpoint "other"), and /predict's latency histogram counts each request."""
    assert client.post("/predict", json={"records": [GOOD]}, headers=AUTH).status_code == 200
    assert client.post("/predict", json={"records": [{**GOOD, "hr": "x"}]}, headers=AUTH).status_code == 422
    assert client.post("/predict", content=b"{}", headers=AUTH).status_code == 415
    assert client.get("/no/such/path-1234", headers=AUTH).status_code == 404
    assert _scraped(client, "evergreen_http_requests_total", endpoint="/predict", status="200") == 1
    assert _scraped(client, "evergreen_http_requests_total", endpoint="/predict", status="422") == 1
    assert _scraped(client, "evergreen_http_requests_total", endpoint="/predict", status="415") == 1
    assert _scraped(client, "evergreen_http_requests_total", endpoint="other", status="404") == 1
    assert _scraped(client, "evergreen_http_request_duration_seconds_count", endpoint="/predict") == 3
    assert _scraped(client, "evergreen_rows_scored_total", model_version="v1") == 1
    assert _scraped(client, "evergreen_model_info", version="v1", task="regression") == 1


def test_two_apps_in_one_process_count_apart(workspace, tmp_path, monkeypatch):
    """Promise: each app has its own registry: a second app neither fails on duplicate metrics nor shares
    counts with the first."""
    monkeypatch.setenv("EVERGREEN_API_TOKEN", TOKEN)
    with TestClient(create_app(workspace)) as first, TestClient(create_app(workspace)) as second:
        first.post("/predict", json={"records": [GOOD, GOOD]}, headers=AUTH)
        assert _scraped(first, "evergreen_rows_scored_total", model_version="v1") == 2
        assert _scraped(second, "evergreen_rows_scored_total", model_version="v1") is None


def test_openmetrics_is_served_when_asked_for(client):
    response = client.get("/metrics", headers={**AUTH, "Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
