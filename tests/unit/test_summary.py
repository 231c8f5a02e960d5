"""The closing summary: short lines, the leaderboard's top rows, the verdict and its reason, and the next
command; with no champion and nothing promoted, why and what to try next (no dead end)."""

from __future__ import annotations

import json

import pytest

from evergreen.artifacts.reports import EvalReport, PassedOver, PromotionReport
from evergreen.config import parse_params
from evergreen.orchestration.summary import WIDTH, closing_summary
from evergreen.workspace import Workspace

_BOARD = {
    "metric": "rmse",
    "direction": "lower is better",
    "candidates": [
        {"family": "lightgbm", "valid": 50.123, "test": 58.3, "seconds": 4.2, "chosen": True, "file": "model.pt"},
        {"family": "mlp", "valid": 55.0, "test": 57.2, "seconds": 61.0, "chosen": False, "file": "c/mlp.pt"},
    ],
}


def _workspace(tmp_path, tiny_raw, promoted: bool, champion: str | None, model_type: str = "auto") -> Workspace:
    tiny_raw["model"] = {"type": model_type}
    ws = Workspace(tmp_path, parse_params(tiny_raw))
    ws.metrics_dir.mkdir()
    ws.leaderboard.write_text(json.dumps(_BOARD))
    EvalReport(model={"rmse": 58.3}, baselines={"mean": {"rmse": 120.0}, "lightgbm": {"rmse": 57.9}}).write(
        ws.eval_metrics
    )
    reasons = ["every check passed"] if promoted else ["baseline: rmse 58.3 vs best baseline lightgbm 57.9 " * 3]
    PromotionReport(
        promoted=promoted, version="v2" if promoted else None, champion_before=None,
        champion_after=champion, promote=promoted, reasons=reasons,
    ).write(ws.promotion_metrics)  # fmt: skip
    return ws


def test_a_promotion_ends_with_the_leaderboard_and_evergreen_serve(tmp_path, tiny_raw):
    text = closing_summary(_workspace(tmp_path, tiny_raw, promoted=True, champion="v2"))
    lines = text.splitlines()
    assert all(len(line) < 100 for line in lines) and len(lines) <= 10
    assert lines[0].startswith("Leaderboard (RMSE, lower is better")
    assert lines[2].split() == ["*", "lightgbm", "50.12", "58.3", "4", "s"]
    assert lines[3].split()[0] == "mlp"
    assert "Promoted: v2 is the champion (every check passed)." in text
    assert lines[-1].startswith("Next: `evergreen serve` serves champion v2")


@pytest.mark.parametrize("model_type", ["auto", "mlp"])
def test_no_champion_and_nothing_promoted_says_why_and_what_to_try(tmp_path, tiny_raw, model_type):
    text = closing_summary(_workspace(tmp_path, tiny_raw, promoted=False, champion=None, model_type=model_type))
    assert max(len(line) for line in text.splitlines()) <= WIDTH  # a long reason is wrapped, not cut
    flat = " ".join(text.split())
    assert "Not promoted: baseline: rmse 58.3 vs best baseline lightgbm 57.9" in flat
    assert "the best candidate lightgbm scored RMSE 58.3 on test against baseline lightgbm 57.9" in flat
    assert "a longer train.time_budget_s" in flat and "`evergreen serve` serves nothing yet" in flat
    assert ("-S model.type=auto" in flat) == (model_type == "mlp")  # auto already: not suggested again
    # 0.7% behind: a near miss is named, with the margin that would accept it
    assert "`evergreen run -S promote.baseline_margin=0.007` accepts it (0.7% behind)" in flat
    assert text.splitlines()[-1].startswith("Next: `evergreen init TABLE`")


def test_a_clear_miss_is_not_offered_a_margin(tmp_path, tiny_raw):
    ws = _workspace(tmp_path, tiny_raw, promoted=False, champion=None)
    EvalReport(model={"rmse": 70.0}, baselines={"lightgbm": {"rmse": 57.9}}).write(ws.eval_metrics)
    flat = " ".join(closing_summary(ws).split())
    assert "scored RMSE 70 on test" in flat and "baseline_margin" not in flat


def test_a_fresh_project_says_how_to_run(tmp_path, tiny_raw):
    ws = Workspace(tmp_path, parse_params(tiny_raw))
    assert closing_summary(ws).splitlines()[0].startswith("Nothing has run here yet: `dvc repro`")


def test_a_candidate_promoted_after_the_chosen_one_failed_names_those_refused(tmp_path, tiny_raw):
    ws = _workspace(tmp_path, tiny_raw, promoted=True, champion="v2")
    refused = [PassedOver(family="ensemble", reasons=["baseline: rmse 58.3 vs best baseline lightgbm 57.9"]),
               PassedOver(family="mlp", reasons=["onnx_parity: max |onnx - torch| = 3 (limit 0.1)"])]  # fmt: skip
    report = PromotionReport.read(ws.promotion_metrics).model_copy(update={"family": "linear", "passed_over": refused})
    report.write(ws.promotion_metrics)
    text = closing_summary(ws)
    flat = " ".join(text.split())
    assert "Promoted: v2 is the champion: linear, the best candidate on valid that passed the gate." in flat
    assert "Refused first: ensemble, mlp (failed: baseline, onnx_parity)" in flat
    assert all(len(line) < 100 for line in text.splitlines())
    # read back from JSON as the summary command does: the refused list survives the file
    assert [p.family for p in PromotionReport.read(ws.promotion_metrics).passed_over] == ["ensemble", "mlp"]
