"""The prediction service with a shadow model (without HTTP): both score, the champion answers, the shadow's
answers reach the log (from the shadow scorer's thread), and nothing the shadow does can fail a request. Real
registry, real log, tiny graphs."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from evergreen.inference import load_champion
from evergreen.prediction_log.read import read_shadow_pairs
from evergreen.prediction_log.writer import PredictionLog
from evergreen.registry.store import Registry
from evergreen.serving.service import PredictionService
from evergreen.serving.shadow import ShadowJob, ShadowScorer
from evergreen.workspace import Workspace
from tests.harness import TINY
from tests.unit.test_shadow import graph_version

RECORD = {"id": 1, "day": "2024-01-01", "hr": 2, "weather": 3, "temp": 0.25, "hum": 0.5}


def _workspace(root: Path, classification: bool = False) -> Workspace:
    raw: dict[str, Any] = copy.deepcopy(TINY)
    if classification:
        raw["data"]["task"] = "classification"
        raw["data"]["columns"][-1] = {"name": "y", "type": "int", "role": "target", "allowed": [0, 1]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return Workspace.open(root)


@pytest.fixture
def regression(tmp_path: Path) -> Workspace:
    """Champion v1 = hr + 10 weather; v2 = 100 temp, taking its features in another order (its own matrix);
    v3 = 3e38 (temp + hum), which overflows to infinity when temp + hum > 1.13."""
    ws = _workspace(tmp_path)
    registry = Registry(ws.registry)
    registry.promote(registry.add(graph_version(tmp_path, "one", [[1], [10], [0], [0]]), {}), "first")
    reordered = ["temp", "hum", "hr", "weather"]
    registry.add(graph_version(tmp_path, "two", [[100], [0], [0], [0]], features=reordered), {})
    registry.add(graph_version(tmp_path, "three", [[0], [0], [3e38], [3e38]]), {})
    return ws


@pytest.fixture
def service(regression: Workspace) -> Iterator[PredictionService]:
    with PredictionService(regression) as service:
        yield service


def _pairs(service: PredictionService, answer: dict[str, Any], version: str, labels: list[Any]):
    service.feedback({"request_id": answer["request_id"], "labels": labels})
    assert service.shadow_scorer.flush(10)  # the shadow scores on its own thread, after the answer
    return read_shadow_pairs(service.log.location, version, service.data)


def test_without_a_shadow_only_the_champion_scores(service):
    assert service.champion.shadow.model is None and "shadow_version" not in service.health()
    answer = service.predict({"records": [RECORD]})
    assert answer["model_version"] == "v1" and answer["predictions"] == [32.0]
    assert _pairs(service, answer, "v2", [30]).height == 0


def test_the_shadow_scores_every_request_the_champion_answers_and_both_are_logged(service, regression):
    Registry(regression.registry).set_shadow("v2", reason="test")
    assert service.champion.shadow.refresh("v1")  # what the watcher does every reload interval
    assert service.health()["shadow_version"] == "v2" and service.model_info()["shadow_version"] == "v2"
    answer = service.predict({"records": [RECORD, {**RECORD, "temp": 0.5}]})
    assert answer["model_version"] == "v1" and answer["predictions"] == [32.0, 32.0]  # the champion's
    pairs = _pairs(service, answer, "v2", [30, 40])
    assert pairs["prediction"].to_list() == [32.0, 32.0] and pairs["shadow_prediction"].to_list() == [25.0, 50.0]
    assert pairs["label"].to_list() == [30.0, 40.0] and pairs["model_version"].to_list() == ["v1", "v1"]


def test_the_event_loop_path_logs_the_shadow_too(service, regression):
    Registry(regression.registry).set_shadow("v2", reason="test")
    service.champion.shadow.refresh("v1")
    answer = asyncio.run(service.predict_async(json.dumps({"records": [RECORD]}).encode()))
    assert _pairs(service, answer, "v2", [30])["shadow_prediction"].to_list() == [25.0]


def test_a_non_finite_shadow_answer_leaves_that_record_without_one_and_the_request_is_served(service, regression):
    Registry(regression.registry).set_shadow("v3", reason="test")
    service.champion.shadow.refresh("v1")
    answer = service.predict({"records": [RECORD, {**RECORD, "temp": 0.9, "hum": 0.9}]})
    assert answer["predictions"] == [32.0, 32.0]
    pairs = _pairs(service, answer, "v3", [30, 40])
    assert pairs["row"].to_list() == [0]  # the overflowing record has no shadow answer
    assert pairs["shadow_prediction"][0] == pytest.approx(3e38 * 0.75, rel=1e-6)
    assert (service.shadow_scorer.scored, service.shadow_scorer.skipped) == (1, 1)


def test_many_requests_are_scored_together_and_every_one_gets_its_own_answers(service, regression):
    Registry(regression.registry).set_shadow("v2", reason="test")
    service.champion.shadow.refresh("v1")
    answers = [service.predict({"records": [{**RECORD, "temp": t / 100}] * 2}) for t in range(40)]
    assert service.shadow_scorer.flush(10) and service.shadow_scorer.scored == 80
    for answer in answers:
        service.feedback({"request_id": answer["request_id"], "labels": [1, 2]})
    pairs = read_shadow_pairs(service.log.location, "v2", service.data)
    expected = [float(t) for t in range(40) for _ in "ab"]  # 100 temp, in float32
    assert pairs.height == 80 and pairs["shadow_prediction"].to_list() == pytest.approx(expected, rel=1e-6)


def test_closing_the_scorer_logs_what_is_still_pending_and_then_refuses_more(regression):
    log = PredictionLog(regression.prediction_log_location)
    model = load_champion(Registry(regression.registry), version="v2")
    scorer = ShadowScorer(log, build=lambda *_: np.zeros((1, 4), dtype=np.float32), interval_s=60)  # no pass yet
    for i in range(3):
        scorer.submit(ShadowJob(model, f"r{i}", [RECORD], matrix=np.full((1, 4), i, dtype=np.float32)))
    scorer.submit(ShadowJob(model, "built", [RECORD], matrix=None))
    assert scorer.scored == 0
    scorer.close()
    scorer.submit(ShadowJob(model, "late", [RECORD], matrix=None))
    log.close()
    assert (scorer.scored, scorer.skipped) == (4, 1)
    with sqlite3.connect(regression.prediction_log) as conn:
        rows = conn.execute("SELECT request_id, row, model_version, prediction FROM shadow_predictions").fetchall()
    expected = [("built", 0, "v2", 0.0), ("r0", 0, "v2", 0.0), ("r1", 0, "v2", 100.0), ("r2", 0, "v2", 200.0)]
    assert sorted(rows) == expected  # r_i: temp = i (the matrix given); "built": the build function's zeros


def test_a_shadow_that_cannot_load_is_ignored_and_serving_goes_on(regression):
    registry = Registry(regression.registry)
    registry.set_shadow("v2", reason="test")
    graph = registry.path("v2") / "model.onnx"
    os.truncate(graph, graph.stat().st_size // 2)  # damaged after it went into the shadow
    with PredictionService(regression) as service:
        assert service.champion.shadow.model is None
        health = service.health()
        assert health["status"] == "ok" and "shadow_version" not in health
        assert service.predict({"records": [RECORD]})["predictions"] == [32.0]


def test_a_shadow_promoted_to_champion_is_no_longer_scored_as_a_shadow(service, regression):
    registry = Registry(regression.registry)
    registry.set_shadow("v2", reason="test")
    service.champion.shadow.refresh("v1")
    registry.promote("v2", reason="won in the shadow")  # the pointer is removed only after this
    assert service.champion.refresh() and service.champion.shadow.refresh("v2")
    assert service.champion.shadow.model is None
    answer = service.predict({"records": [RECORD]})
    assert answer["model_version"] == "v2" and answer["predictions"] == [25.0]


def test_a_classification_shadow_logs_its_probabilities_in_its_own_class_order(tmp_path: Path):
    ws = _workspace(tmp_path, classification=True)
    registry = Registry(ws.registry)
    registry.promote(registry.add(graph_version(tmp_path, "one", [[0, 1], [0, 0], [0, 0], [0, 0]], [0, 1]), {}), "x")
    registry.set_shadow(registry.add(graph_version(tmp_path, "two", [[0, 0], [0, 0], [0, 8], [0, 0]], [1, 0]), {}), "x")
    with PredictionService(ws) as service:
        answer = service.predict({"records": [RECORD]})
        assert answer["predictions"] == [1] and answer["classes"] == [0, 1]
        [pair] = _pairs(service, answer, "v2", [0]).to_dicts()
    assert pair["prediction"] == 1 and pair["shadow_prediction"] == 0  # column 1 (class 0) wins: 8 * 0.25 > 0
    assert json.loads(pair["shadow_probabilities"])[1] > 0.8 and json.loads(pair["probabilities"])[1] > 0.8
