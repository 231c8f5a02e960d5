"""The shadow gate: its pure decision, its config, and `check_shadow` on a real registry and prediction log
(tiny hand-built ONNX graphs; the gate reads the answers the log holds, so they need not come from them)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import polars as pl
import pytest
import yaml
from onnx import TensorProto, helper
from typer.testing import CliRunner

from evergreen.artifacts.decisions import RetrainDecision, RetrainResult, ShadowDecision, append_entry, read_history
from evergreen.artifacts.reports import Comparison, PromotionReport
from evergreen.cli import app
from evergreen.config import PolicyConfig, ShadowConfig, parse_params
from evergreen.errors import ConfigError
from evergreen.monitoring.policy import decide
from evergreen.monitoring.summary import ColumnDrift, MonitorSummary
from evergreen.prediction_log.base import utc_now
from evergreen.prediction_log.writer import PredictionLog, log_rows
from evergreen.registry.gate import GateDecision
from evergreen.registry.shadow import check_shadow, judge, live_pairs
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace
from tests.harness import TINY

SHADOW = ShadowConfig(min_labels=50, max_wait_hours=24)


def _comparison(relative: float) -> Comparison:
    return Comparison(
        metric="rmse",
        challenger=10 * (1 + relative),
        champion=10.0,
        relative_difference=relative,
        ci_low=relative - 0.05,
        ci_high=relative + 0.05,
        confidence=0.95,
        rows=60,
    )


def _judge(labelled: int, waited: float, comparison: Comparison | None = None):
    return judge(
        version="v2",
        champion="v1",
        labelled=labelled,
        waited_hours=waited,
        shadow=SHADOW,
        champion_margin=0.02,
        comparison=comparison,
    )


# ------------------------------------------------------------------------------------------ the decision
def test_too_few_labels_waits_and_says_how_many_are_missing():
    verdict = _judge(labelled=12, waited=3.0)
    assert verdict.outcome == "waiting" and verdict.comparison is None
    assert "12 of the 50 labelled live records" in verdict.reasons[0] and "21.0 h left" in verdict.reasons[0]


def test_too_few_labels_after_the_longest_wait_discards_it():
    verdict = _judge(labelled=49, waited=24.0)
    assert verdict.outcome == "discarded"
    assert verdict.reasons[0].startswith("timed out: 24.0 h in the shadow") and "49 of the 50" in verdict.reasons[0]


def test_enough_labels_and_no_worse_promotes():
    verdict = _judge(labelled=60, waited=1.0, comparison=_comparison(-0.10))
    assert verdict.outcome == "promoted" and verdict.comparison is not None
    assert "no worse than champion v1" in verdict.reasons[0] and "60 labelled live records" in verdict.reasons[0]


def test_within_the_champion_margin_still_promotes_beyond_it_discards():
    assert _judge(labelled=60, waited=1.0, comparison=_comparison(0.015)).outcome == "promoted"
    worse = _judge(labelled=60, waited=1.0, comparison=_comparison(0.05))
    assert worse.outcome == "discarded" and "worse than champion v1" in worse.reasons[0]


def test_enough_labels_are_judged_even_after_the_longest_wait():
    assert _judge(labelled=50, waited=100.0, comparison=_comparison(-0.2)).outcome == "promoted"


def test_enough_labels_without_a_comparison_is_a_programming_error():
    with pytest.raises(ValueError, match="needs its comparison"):
        _judge(labelled=50, waited=1.0)


def test_live_pairs_align_the_two_models_classes_and_the_labels():
    pairs = pl.DataFrame(
        {
            "label": ["b", "a", "c"],
            "probabilities": [json.dumps([0.2, 0.8]), json.dumps([0.9, 0.1]), json.dumps([0.5, 0.5])],
            "shadow_probabilities": [json.dumps([0.7, 0.3]), json.dumps([0.6, 0.4]), json.dumps([0.1, 0.9])],
            "prediction": ["b", "a", "a"],
            "shadow_prediction": ["a", "a", "c"],
        }
    )
    live = live_pairs(pairs, "classification", shadow_classes=["a", "c"], champion_classes=["a", "b"])
    assert live.actual.tolist() == [1, 0, 2]  # every = [a, b, c]
    assert live.champion.tolist() == [[0.2, 0.8, 0.0], [0.9, 0.1, 0.0], [0.5, 0.5, 0.0]]
    assert live.shadow.tolist() == [[0.7, 0.0, 0.3], [0.6, 0.0, 0.4], [0.1, 0.0, 0.9]]


def test_no_retrain_while_a_shadow_awaits_its_verdict_then_the_drift_episode_retrains():
    drifted = MonitorSummary(
        rows=1000,
        reference_rows=5000,
        champion="v1",
        features=[ColumnDrift(name, "wasserstein", 0.3, 0.1, True) for name in FEATURES],
    )
    policy = PolicyConfig(consecutive=1, cooldown_hours=0)
    held = decide(drifted, [], policy, now="2024-01-01T00:00:00", shadow="v2")
    assert held.action == "none" and held.drifted and "no retrain while shadow v2 awaits" in held.reasons[-1]
    assert decide(drifted, [held], policy, now="2024-01-01T01:00:00").action == "retrain"


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("shadow", "message"),
    [
        ({"min_labels": 0, "max_wait_hours": 1}, "promote.shadow.min_labels"),
        ({"min_labels": 10, "max_wait_hours": 0}, "promote.shadow.max_wait_hours"),
        ({"min_labels": 10}, "promote.shadow.max_wait_hours: required key is missing"),
        ({"min_labels": 10, "max_wait_hours": 1, "min_lables": 3}, "promote.shadow.min_lables: unknown key"),
        (True, "promote.shadow"),
    ],
)
def test_bad_shadow_settings_name_the_key(shadow: Any, message: str):
    raw = copy.deepcopy(TINY) | {"promote": {"shadow": shadow}}
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_params(raw)


def test_shadow_is_off_by_default_and_parses():
    assert parse_params(copy.deepcopy(TINY)).promote.shadow is None
    raw = copy.deepcopy(TINY) | {"promote": {"shadow": {"min_labels": 200, "max_wait_hours": 48}}}
    assert parse_params(raw).promote.shadow == ShadowConfig(min_labels=200, max_wait_hours=48.0)


# ------------------------------------------------------------------------------------------ the records
def test_shadow_entries_round_trip_the_decisions_log_beside_the_others(tmp_path: Path):
    path = tmp_path / "decisions.jsonl"
    verdict = _judge(labelled=60, waited=1.0, comparison=_comparison(0.3))
    append_entry(path, RetrainResult(status="shadow", version="v2", reason="scheduled"))
    append_entry(path, ShadowDecision(**verdict.model_dump()))
    history = read_history(path)
    assert [type(e) for e in history] == [RetrainResult, ShadowDecision]
    assert history[1].outcome == "discarded" and history[1].comparison.relative_difference == 0.3
    assert not any(isinstance(e, RetrainDecision) for e in history)  # the retrain policy ignores them


def test_a_promotion_report_of_a_shadowed_challenger_says_shadow_not_promoted():
    decision = GateDecision(promote=True, checks=[], reasons=["every check passed"])
    report = PromotionReport.from_gate(decision, "v2", "v1", "v1", shadow=True)
    assert (report.promoted, report.shadow, report.promote, report.version) == (False, True, True, "v2")
    assert "shadow" not in PromotionReport.from_gate(decision, "v2", "v1", "v2").to_dict()


# ------------------------------------------------------------------------------------- check_shadow I/O
FEATURES = ["hr", "weather", "temp", "hum"]


def graph_version(
    folder: Path,
    name: str,
    weights: list[list[float]],
    classes: list[Any] | None = None,
    features: list[str] = FEATURES,
) -> dict[str, Path]:
    """Registry files of a graph `features @ weights` ([F, K]): squeezed to [N] for regression, or softmax
    probabilities over `classes`; with the signature the service and `servable` read."""
    k = len(weights[0])
    w = helper.make_tensor("w", TensorProto.FLOAT, [len(features), k], [v for row in weights for v in row])
    if classes is None:
        axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
        last, initializers = helper.make_node("Squeeze", ["z", "axes"], ["y"]), [w, axes]
        output = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])
    else:
        last, initializers = helper.make_node("Softmax", ["z"], ["y"], axis=1), [w]
        output = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", k])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["z"]), last],
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(features)])],
        [output],
        initializer=initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(folder / f"{name}.onnx"))
    task = "regression" if classes is None else "classification"
    signature = {
        "task": task,
        "input": {"columns": [{"name": n} for n in features]},
        "output": {} if classes is None else {"classes": classes},
    }
    (folder / f"{name}.json").write_text(json.dumps(signature))
    return {"model.onnx": folder / f"{name}.onnx", "signature.json": folder / f"{name}.json"}


@pytest.fixture
def shadowed(tmp_path: Path) -> Workspace:
    """A project whose registry has champion v1 and shadow v2, and an empty prediction log."""
    raw = copy.deepcopy(TINY) | {"promote": {"shadow": {"min_labels": 40, "max_wait_hours": 24}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    ws = Workspace.open(tmp_path)
    registry = Registry(ws.registry)
    registry.promote(registry.add(graph_version(tmp_path, "one", [[1], [0], [0], [0]]), {}), "first")
    registry.set_shadow(registry.add(graph_version(tmp_path, "two", [[0], [1], [0], [0]]), {}), "passed the gate")
    return ws


def _serve_labelled(ws: Workspace, n: int, champion_noise: float, shadow_noise: float, champion: str = "v1") -> None:
    """`n` one-record requests scored by `champion` and the shadow v2, then labelled, through the real log."""
    rng = np.random.default_rng(n)
    log = PredictionLog(ws.prediction_log_location)
    try:
        for i in range(n):
            label = float(rng.uniform(0, 100))
            request = f"{champion}-{n}-{i}"
            record = {"hr": 1, "weather": 1, "temp": 0.5, "hum": 0.5}
            rows = log_rows(request, utc_now(), champion, [record], [label + rng.normal(0, champion_noise)])
            shadow = [(request, 0, "v2", label + rng.normal(0, shadow_noise), None)]
            log.write(rows, shadow_rows=shadow)
            log.attach_labels(request, [label])
    finally:
        log.close()


def test_no_shadow_is_nothing_to_check(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(copy.deepcopy(TINY)))
    assert check_shadow(Workspace.open(tmp_path)) is None


def test_a_better_shadow_is_promoted_once_enough_labels_arrived_and_the_evidence_is_recorded(shadowed):
    registry = Registry(shadowed.registry)
    _serve_labelled(shadowed, 30, champion_noise=10, shadow_noise=1)
    waiting = check_shadow(shadowed)
    assert waiting.outcome == "waiting" and waiting.labelled_rows == 30
    assert (registry.champion(), registry.shadow()) == ("v1", "v2") and not shadowed.decisions.exists()

    _serve_labelled(shadowed, 15, champion_noise=10, shadow_noise=1)
    verdict = check_shadow(shadowed)
    assert verdict.outcome == "promoted" and verdict.labelled_rows == 45
    assert verdict.comparison.rows == 45 and verdict.comparison.challenger < verdict.comparison.champion
    assert verdict.comparison.ci_high < 0  # clearly better: the whole interval is an improvement
    assert (registry.champion(), registry.shadow()) == ("v2", None)
    card = registry.card("v2")["shadow"]
    assert card["outcome"] == "promoted" and card["comparison"]["rows"] == 45 and card["champion"] == "v1"
    [entry] = read_history(shadowed.decisions)
    assert isinstance(entry, ShadowDecision) and entry.outcome == "promoted" and entry.version == "v2"
    assert [e["event"] for e in registry.history()][-2:] == ["promote", "end_shadow"]
    assert check_shadow(shadowed) is None  # decided once


def test_a_worse_shadow_is_discarded_and_the_champion_stays(shadowed):
    registry = Registry(shadowed.registry)
    _serve_labelled(shadowed, 45, champion_noise=1, shadow_noise=10)
    report = check_shadow(shadowed, act=False)  # `evergreen shadow` without --check only reports
    assert report.outcome == "discarded" and registry.shadow() == "v2"
    verdict = check_shadow(shadowed)
    assert verdict.outcome == "discarded" and verdict.comparison.ci_low > 0
    assert (registry.champion(), registry.shadow()) == ("v1", None)
    assert registry.card("v2")["shadow"]["outcome"] == "discarded"
    assert registry.history()[-1] | {"time": None} == {
        "time": None,
        "event": "end_shadow",
        "version": "v2",
        "outcome": "discarded",
        "reason": "; ".join(verdict.reasons),
    }


def test_only_records_scored_beside_the_current_champion_count_and_the_wait_times_out(shadowed):
    _serve_labelled(shadowed, 45, champion_noise=10, shadow_noise=1, champion="v0")  # another champion's
    assert check_shadow(shadowed).labelled_rows == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)
    verdict = check_shadow(shadowed, now=later)
    assert verdict.outcome == "discarded" and verdict.reasons[0].startswith("timed out: 25.0 h")
    assert Registry(shadowed.registry).shadow() is None


def test_the_shadow_command_reports_the_standing_and_names_a_damaged_pointer(shadowed):
    params = str(shadowed.root / "params.yaml")
    _serve_labelled(shadowed, 10, champion_noise=10, shadow_noise=1)
    status = CliRunner().invoke(app, ["shadow", "-p", params])
    assert status.exit_code == 0, status.output
    assert "shadow v2 vs champion v1: waiting (10 of 40 labelled records, 0.0 of 24 h)" in status.output
    (shadowed.registry / "SHADOW").write_bytes(b"\x00junk")
    damaged = CliRunner().invoke(app, ["shadow", "--check", "-p", params])
    assert damaged.exit_code == 1 and "SHADOW is damaged" in damaged.output and "Traceback" not in damaged.output


def test_models_list_marks_the_champion_and_the_shadow(shadowed):
    listed = CliRunner().invoke(app, ["models", "list", "-p", str(shadowed.root / "params.yaml")])
    assert listed.exit_code == 0, listed.output
    assert [line[:4] for line in listed.output.splitlines()] == ["* v1", "~ v2"]
