"""Typed contracts between steps: each artefact round-trips through JSON, old files load, bad ones are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evergreen.artifacts.card import ModelCard
from evergreen.artifacts.decisions import RetrainDecision, RetrainResult, append_entry, read_history
from evergreen.artifacts.reports import Check, EvalReport, ExportReport, GateDecision, PromotionReport
from evergreen.config import DEFAULT_METRIC, METRICS, MONITORED, with_overrides
from evergreen.errors import ArtifactError
from evergreen.model.metrics import within_margin, worsening
from evergreen.orchestration.promotion import promotion_outcome, record_commit
from evergreen.orchestration.summary import run_summary
from evergreen.registry.gate import compare
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]

EVAL = {
    "model": {"rmse": 57.2, "mae": 33.9, "r2": 0.89},
    "baselines": {"mean": {"rmse": 174.7, "mae": 138.7, "r2": -0.003}, "hgb": {"rmse": 70.3, "mae": 47.6, "r2": 0.84}},
}
EXPORT = {
    "parity_max_abs_diff": 0.00042,
    "parity_tolerance": 0.0001,
    "parity_limit": 0.0171,
    "parity_rows": 1460,
    "opset": 17,
    "batch_size": 1024,
    "onnxruntime": {"latency_p50_ms": 0.09, "latency_p99_ms": 0.22, "throughput_rows_per_s": 248706.5},
    "torch": {"latency_p50_ms": 0.36, "latency_p99_ms": 4.4, "throughput_rows_per_s": 278727.7},
}


def _gate(champion_error: float | None = None) -> GateDecision:
    """A gate decision with a real comparison: a challenger off by 1 on each row, the champion by `champion_error`."""
    comparison = None
    if champion_error is not None:
        actual = np.zeros(50)
        comparison = compare("rmse", actual, actual + 1, actual + champion_error, samples=200, confidence=0.9, seed=0)
    checks = [Check(name="data_suites", passed=True, detail="all data suites passed")]
    return GateDecision(promote=True, checks=checks, comparison=comparison, reasons=["every check passed"])


# ------------------------------------------------------------------------------------------- metrics files
@pytest.mark.parametrize(("kind", "payload"), [(EvalReport, EVAL), (ExportReport, EXPORT)])
def test_reports_round_trip_byte_for_byte(tmp_path, kind, payload):
    path = tmp_path / "metrics" / "report.json"
    path.parent.mkdir()
    path.write_text(json.dumps(payload, indent=2) + "\n")
    report = kind.read(path)
    assert report.to_dict() == payload
    report.write(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()  # same keys, same order: dvc metrics diff


def test_typed_fields_are_read_as_types():
    export = ExportReport.from_dict(EXPORT)
    assert export.onnxruntime.latency_p50_ms == 0.09 and export.parity_rows == 1460
    assert EvalReport.from_dict(EVAL).baselines["hgb"]["rmse"] == 70.3


def test_unknown_keys_load_and_survive_a_rewrite():
    newer = {**EXPORT, "calibration": {"ece": 0.02}, "torch": {**EXPORT["torch"], "latency_p999_ms": 9.0}}
    assert ExportReport.from_dict(newer).to_dict() == newer


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({**EXPORT, "parity_rows": "many"}, "parity_rows"),
        ({**EXPORT, "torch": {"latency_p50_ms": 1.0}}, "torch.latency_p99_ms"),
        ({k: v for k, v in EXPORT.items() if k != "opset"}, "opset"),
    ],
)
def test_a_mistyped_or_missing_key_is_an_error_naming_file_and_key(tmp_path, payload, named):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ArtifactError, match=rf"{path}: not a valid ExportReport: {named}"):
        ExportReport.read(path)


def test_unreadable_files_are_errors_naming_the_file(tmp_path):
    with pytest.raises(ArtifactError, match="missing"):
        EvalReport.read(tmp_path / "eval.json")
    assert EvalReport.read_if_exists(tmp_path / "eval.json") is None
    (tmp_path / "eval.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"eval\.json: not valid JSON"):
        EvalReport.read(tmp_path / "eval.json")


# ------------------------------------------------------------------------------------------- promotion
def test_promotion_report_carries_the_gate_with_the_keys_it_always_had(tmp_path):
    gate = _gate(champion_error=2.0)
    report = PromotionReport.from_gate(gate, "v2", "v1", "v2")
    payload = report.to_dict()
    assert list(payload) == [
        "promoted", "version", "champion_before", "champion_after", "promote", "checks", "comparison", "reasons"
    ]  # fmt: skip
    assert payload["comparison"]["metric"] == "rmse" and payload["checks"][0]["name"] == "data_suites"
    assert payload["comparison"]["relative_difference"] == pytest.approx(-0.5)  # rmse 1 vs 2: half, i.e. better
    report.write(tmp_path / "promotion.json")
    assert promotion_outcome(tmp_path / "promotion.json") == report


def test_promotion_without_a_gate_writes_no_gate_keys_and_a_missing_report_means_no_promotion(tmp_path):
    identical = PromotionReport(
        promoted=False, version=None, champion_before="v1", champion_after="v1", reasons=["identical to champion v1"]
    )
    assert set(identical.to_dict()) == {"promoted", "version", "champion_before", "champion_after", "reasons"}
    missing = promotion_outcome(tmp_path / "promotion.json")
    assert not missing.promoted and missing.version is None and missing.reasons == ["no promotion ran"]


# -------------------------------------------------------------------------------------------- model card
def test_the_card_through_its_three_writers(tmp_path):
    # export: what the model is
    exported = ModelCard(
        task="regression", target="cnt", onnx_sha256="ab", params={"train": {"lr": 0.01}},
        data={"data/split/train.parquet": "f00"}, metrics=EvalReport.from_dict(EVAL), train_metrics=None,
        code={"git_commit": None, "package_version": "0.1"},
    )  # fmt: skip
    exported.write(tmp_path / "model_card.json")
    # promote: the gate's decision, then the registry adds version, time and file hashes
    gate = _gate()
    promoted = ModelCard.read(tmp_path / "model_card.json").model_copy(update={"gate": gate})
    model = tmp_path / "model.onnx"
    model.write_bytes(b"graph")
    registry = Registry(tmp_path / "registry")
    version = registry.add({"model.onnx": model}, promoted.to_dict())
    # retrain flow: the commit that pins it
    record_commit(registry, version, "c0ffee", "pushed to DVC remote store")

    card = ModelCard.from_dict(registry.card(version))
    assert card.gate == gate and card.metrics == EvalReport.from_dict(EVAL) and card.test_metrics["rmse"] == 57.2
    assert (card.version, card.git_commit, card.data_push) == (version, "c0ffee", "pushed to DVC remote store")
    assert set(card.files_sha256) == {"model.onnx"} and card.registered_at
    assert card.to_dict() == registry.card(version)  # the typed card is the whole card
    assert list(card.to_dict())[:3] == ["task", "target", "onnx_sha256"]


def test_a_card_from_an_older_version_still_loads():
    old = {"task": "regression", "metrics": {"model": {"rmse": 60.0}}, "framework": "torch 1.x", "version": "v1"}
    card = ModelCard.from_dict(old)
    assert card.test_metrics == {"rmse": 60.0} and card.gate is None and card.to_dict() == old
    assert ModelCard.from_dict({}).test_metrics == {}  # a bare card (tests, hand-made registries)


def test_a_mistyped_card_names_its_source():
    with pytest.raises(ArtifactError, match=r"v3/model_card.json: not a valid ModelCard: metrics.model"):
        ModelCard.from_dict({"metrics": {"model": "fast"}}, source="v3/model_card.json")


# ------------------------------------------------------------------------------------------ decisions log
def _decision(**kw) -> RetrainDecision:
    fields = {"time": "2012-01-08T00:00:00", "action": "retrain", "drifted": True, "reasons": ["data drift"],
              "champion": "v1", "drift_share": 0.75, "drifted_features": ["temp"]}  # fmt: skip
    return RetrainDecision(**(fields | kw))


def test_decisions_log_is_a_tagged_union(tmp_path):
    path = tmp_path / "monitoring" / "decisions.jsonl"
    entries = [
        _decision(report="monitoring/reports/x.html"),
        RetrainResult(status="promoted", reason="data drift", version="v2", reasons=["every check passed"]),
        RetrainResult(status="failed", reason="scheduled", error="dvc repro failed"),
    ]
    for entry in entries:
        append_entry(path, entry)
    history = read_history(path)
    assert history == entries and [type(h) for h in history] == [RetrainDecision, RetrainResult, RetrainResult]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["decision", "retrain_result", "retrain_result"]
    assert list(lines[0])[:3] == ["kind", "time", "action"] and lines[0]["degradation"] is None


def test_old_log_lines_load(tmp_path):
    path = tmp_path / "decisions.jsonl"
    lines = [
        {
            "kind": "decision",
            "time": "2012-01-01T00:00:00",
            "action": "none",
            "drifted": False,
            "reasons": ["no drift"],
            "champion": "v1",
            "drift_share": 0.0,
        },
        {"kind": "retrain_result", "status": "skipped: a retrain was already running"},
        {"kind": "retrain_result", "status": "failed", "reason": "scheduled", "error": "boom", "host": "ci-3"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    old_decision, skipped, failed = read_history(path)
    assert old_decision.report is None and old_decision.drifted_features == []
    assert skipped.status == "skipped" and skipped.reasons == ["a retrain was already running"]
    assert failed.error == "boom" and failed.to_dict()["host"] == "ci-3"


def test_a_bad_log_line_is_named_and_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "decisions.jsonl"
    good = json.dumps(RetrainResult(status="failed").to_dict())
    path.write_text(good + "\n" + good[:20])  # a writer killed mid-append
    assert len(read_history(path)) == 1
    path.write_text(good + "\n" + json.dumps({"kind": "vote", "status": "x"}) + "\n")
    with pytest.raises(ArtifactError, match=r"decisions.jsonl: line 2 is not a decisions-log entry"):
        read_history(path)


# ------------------------------------------------------------------------------------------ metrics table
def test_one_metrics_table_with_directions():
    assert [m for m, info in METRICS.items() if info.lower_is_better] == ["rmse", "mae", "log_loss"]
    assert DEFAULT_METRIC == {"regression": "rmse", "classification": "f1_macro"}  # the defaults params.yaml explains
    assert set(MONITORED.values()) <= set(METRICS)
    assert worsening("r2", -0.2, -0.1) == pytest.approx(1.0)  # a negative R2 keeps its direction
    assert within_margin("r2", -0.1, -0.1, 0.0) and not within_margin("r2", -0.2, -0.1, 0.5)
    assert worsening("rmse", 66.0, 60.0) == pytest.approx(0.1)
    assert worsening("accuracy", 0.72, 0.8) == pytest.approx(0.1)  # lower accuracy is worse
    assert within_margin("rmse", 71.0, 70.0, 0.02) and not within_margin("rmse", 72.0, 70.0, 0.02)
    # float32 rounding is a tie (the linear candidate against its own float64 baseline), a real difference is not
    assert within_margin("rmse", 78682.808113, 78682.806587, 0.0)
    assert not within_margin("rmse", 78690.0, 78682.806587, 0.0) and not within_margin("r2", 0.6347, 0.6348, 0.0)
    assert within_margin("accuracy", 0.79, 0.8, 0.02) and not within_margin("accuracy", 0.7, 0.8, 0.02)
    with pytest.raises(KeyError, match="unknown metric 'mape'"):
        worsening("mape", 1.0, 2.0)


def test_run_summary_reads_metrics_through_the_types(tmp_path):
    (tmp_path / "metrics").mkdir()
    ws = Workspace(tmp_path, with_overrides(Workspace.open(ROOT).params, {"promote.baseline": "hgb"}))
    EvalReport.from_dict(EVAL).write(ws.eval_metrics)
    ExportReport.from_dict(EXPORT).write(ws.export_metrics)
    summary = run_summary({"evaluate": "ran"}, ws)
    baseline = ws.params.promote.baseline
    assert "model test RMSE: 57.2" in summary and "ONNX parity max abs diff: 0.0004" in summary
    assert f"{baseline} baseline test RMSE: {EVAL['baselines'][baseline]['rmse']}" in summary
