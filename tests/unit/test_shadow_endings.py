"""How a shadow challenger ends, exactly once (issue 19, part 4): two `evergreen shadow --check` at once, a rollback
onto the shadow's version, and a retrain that replaces a pending shadow. A real registry, prediction log,
decisions log and CLI processes; the models are tiny hand-built ONNX graphs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from evergreen.artifacts.decisions import ShadowDecision, read_history
from evergreen.prediction_log.base import utc_now
from evergreen.prediction_log.writer import PredictionLog, log_rows
from evergreen.registry.shadow import check_shadow, record_replaced
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace
from tests.harness import TINY
from tests.process_harness import run_together

FEATURES = ["hr", "weather", "temp", "hum"]


def _graph(folder: Path, name: str, weight: list[float]) -> dict[str, Path]:
    """Registry files of the regression graph `features @ weight`, with the signature `servable` reads."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [len(FEATURES), 1], weight)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["z"]), helper.make_node("Squeeze", ["z", "axes"], ["y"])],
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURES)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        initializer=[w, axes],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(folder / f"{name}.onnx"))
    signature = {"task": "regression", "input": {"columns": [{"name": n} for n in FEATURES]}, "output": {}}
    (folder / f"{name}.json").write_text(json.dumps(signature))
    return {"model.onnx": folder / f"{name}.onnx", "signature.json": folder / f"{name}.json"}


@pytest.fixture
def project(tmp_path: Path) -> Workspace:
    """Champion v1, then v2 promoted over it, then v3 in the shadow; nothing in the log yet."""
    raw = copy.deepcopy(TINY) | {"promote": {"shadow": {"min_labels": 40, "max_wait_hours": 24}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    ws = Workspace.open(tmp_path)
    registry = Registry(ws.registry)
    for name, weight in (("one", [1, 0, 0, 0]), ("two", [0, 1, 0, 0])):
        registry.promote(registry.add(_graph(tmp_path, name, weight), {}), f"{name} passed the gate")
    registry.set_shadow(registry.add(_graph(tmp_path, "three", [0, 0, 1, 0]), {}), "passed the offline gate")
    return ws


def _serve_labelled(ws: Workspace, n: int, shadow: str) -> None:
    """`n` labelled one-record requests served by champion v2, the shadow scoring them ten times better."""
    rng = np.random.default_rng(n)
    log = PredictionLog(ws.prediction_log_location)
    try:
        for i in range(n):
            label = float(rng.uniform(0, 100))
            record = {"hr": 1, "weather": 1, "temp": 0.5, "hum": 0.5}
            log.write(
                log_rows(f"r{i}", utc_now(), "v2", [record], [label + rng.normal(0, 10)]),
                shadow_rows=[(f"r{i}", 0, shadow, label + rng.normal(0, 1), None)],
            )
            log.attach_labels(f"r{i}", [label])
    finally:
        log.close()


def _shadow_decisions(ws: Workspace) -> list[ShadowDecision]:
    return [e for e in read_history(ws.decisions) if isinstance(e, ShadowDecision)]


# ----------------------------------------------------------------------------------------- two at once
@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_two_shadow_checks_at_once_end_the_shadow_and_record_its_verdict_once(project, attempt):
    _serve_labelled(project, 45, shadow="v3")
    # `evergreen shadow --check` twice, started together (before the lock, 1 try in 3 recorded it twice)
    params = str(project.root / "params.yaml")
    check = 'app(["shadow", "--check", "-p", sys.argv[1]], standalone_mode=False)'
    runs = run_together("from evergreen.cli import app", check, [params], project.root / "barrier")
    outputs = [out for _, out in runs]
    assert [status for status, _ in runs] == [0, 0], outputs
    assert sorted("promoted" in out for out in outputs) == [False, True], outputs  # one verdict, one "no shadow"
    assert any("no shadow model" in out for out in outputs), outputs
    [decision] = _shadow_decisions(project)
    assert decision.outcome == "promoted" and decision.version == "v3"
    ends = [e for e in Registry(project.registry).history() if e["event"] == "end_shadow"]
    assert [(e["version"], e["outcome"]) for e in ends] == [("v3", "promoted")]


# ----------------------------------------------------------------------------- a rollback onto the shadow
def test_a_rollback_onto_the_shadows_version_ends_it_as_rolled_back_not_promoted(project, tmp_path: Path):
    registry = Registry(project.registry)
    # a retrain rebuilt v1 byte for byte: the registry hands back v1, and it goes into the shadow
    assert registry.add(_graph(tmp_path, "one", [1, 0, 0, 0]), {}) == "v1"
    registry.set_shadow("v1", reason="passed the offline gate")
    assert registry.rollback() == "v1"  # from v2 back to v1: the shadow's version is now the champion
    verdict = check_shadow(project)
    assert verdict.outcome == "rolled_back" and "rollback from v2" in verdict.reasons[0]
    assert registry.shadow() is None and registry.card("v1")["shadow"]["outcome"] == "rolled_back"
    decisions = _shadow_decisions(project)
    assert [(d.version, d.outcome) for d in decisions if d.version == "v1"] == [("v1", "rolled_back")]
    assert registry.history()[-1]["outcome"] == "rolled_back"


def test_a_shadow_promoted_by_the_gate_then_interrupted_is_still_recorded_as_promoted(project):
    registry = Registry(project.registry)
    registry.promote("v3", reason="shadow gate: no worse than v2")  # then killed before ending the shadow
    verdict = check_shadow(project)
    assert verdict.outcome == "promoted" and verdict.reasons == ["v3 is the champion already"]


# --------------------------------------------------------------------------------- replaced by a retrain
def test_a_retrain_that_replaces_a_pending_shadow_records_its_decision_once(project, tmp_path: Path):
    _serve_labelled(project, 12, shadow="v3")
    registry = Registry(project.registry)
    registry.set_shadow(registry.add(_graph(tmp_path, "four", [0, 0, 0, 1]), {}), "passed the offline gate")
    [replaced] = record_replaced(project)  # what the retrain flow calls after its pipeline
    assert (replaced.outcome, replaced.version, replaced.replaced_by) == ("replaced", "v3", "v4")
    assert replaced.labelled_rows == 12 and "replaced by v4 before its verdict" in replaced.reasons[0]
    assert replaced.champion == "v2" and replaced.waited_hours >= 0
    assert record_replaced(project) == []  # once
    assert check_shadow(project).outcome == "waiting"  # v4 is judged as usual; v3's decision is not repeated
    assert [(d.version, d.outcome, d.replaced_by) for d in _shadow_decisions(project)] == [("v3", "replaced", "v4")]


def test_a_replacement_made_by_hand_is_recorded_by_the_next_check(project, tmp_path: Path):
    registry = Registry(project.registry)
    registry.set_shadow(registry.add(_graph(tmp_path, "four", [0, 0, 0, 1]), {}), "dvc repro by hand")
    assert not project.decisions.exists()
    check_shadow(project, act=False)  # `evergreen shadow` only reports: it writes nothing
    assert not project.decisions.exists()
    check_shadow(project)
    assert [(d.version, d.outcome, d.replaced_by) for d in _shadow_decisions(project)] == [("v3", "replaced", "v4")]
