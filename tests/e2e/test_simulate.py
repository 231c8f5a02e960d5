"""`evergreen simulate` on a fresh copy: a short replay with light training, every policy, real DVC pipelines."""

from __future__ import annotations

import json
import subprocess

import pytest

from evergreen.config import load_params
from evergreen.orchestration.overrides import apply_overrides

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_short_backtest_writes_its_summary_and_plot(project, run):
    apply_overrides(
        project / "params.yaml",
        {
            # five weeks across a month boundary, so the periodic policy retrains once
            "simulate.start": "2012-01-15",
            "simulate.overrides": {
                "model.ensemble": 1,
                "train.epochs": 3,
                "model.hidden": [32],
                "promote.baseline": "mean",
                # three epochs of a 32-wide net come near the mean, not always below it (123.6 vs 118.8 once);
                # the replay is under test here, the baseline gate has its own tests (tests/unit/test_gate.py)
                "promote.baseline_margin": 0.5,
                # so the mean is the only baseline each retrain's `evaluate` fits (gradient boosting was most of
                # its time); the gate reads only the mean
                "evaluate.baselines": ["mean"],
            },
        },
    )
    out = run("evergreen", "simulate", "--weeks", "5", "--output", "backtest").stdout
    assert "the drift policy recovers" in out
    assert "    never: RMSE " in out  # the declared metric, by name
    assert "Running stage" not in out and "epoch 1/" not in out  # the pipelines' chatter went to stages.log
    summary = json.loads((project / "backtest/summary.json").read_text())
    assert (summary["metric"], summary["lower_is_better"]) == ("rmse", True)
    policies = summary["policies"]
    assert set(policies) == {"never", "periodic", "drift"}
    assert policies["never"]["retrains"] == 0
    assert policies["periodic"]["retrains"] == 1  # at the first window of February
    for run_ in policies.values():
        assert len(run_["windows"]) == 5 and run_["metric"] == "rmse" and run_["value"] > 0
        assert all(w["rows"] > 100 for w in run_["windows"])
    # the same first model served the first window under every policy
    assert len({run_["windows"][0]["value"] for run_ in policies.values()}) == 1
    assert (project / "backtest/error_over_time.png").stat().st_size > 10_000
    decisions = (project / "backtest/work/drift/monitoring/decisions.jsonl").read_text().splitlines()
    assert len([d for d in decisions if json.loads(d)["kind"] == "decision"]) == 5

    # every policy's workspace is a project DVC ran: its own pipeline, params and lock file
    work = project / "backtest/work"
    for name in ("initial", "never", "periodic", "drift"):
        assert (work / name / ".dvc").is_dir() and (work / name / "dvc.yaml").read_text() == (
            project / "dvc.yaml"
        ).read_text()
        assert load_params(work / name / "params.yaml").data.source == "data/source/initial.parquet"
        assert "stage train" in (work / name / "dvc.lock").read_text()
    assert (work / "periodic/src/evergreen/stages/train.py").exists()  # the code deps dvc.yaml lists
    periodic_log = (work / "periodic/stages.log").read_text()
    assert periodic_log.count("--- retrain at") == 2  # the first model's, copied, and February's
    assert "> evergreen stage train" in periodic_log and "promote:" in periodic_log
    # the project itself was only read: nothing but the output folder (and the edited params) changed
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True).stdout
    assert sorted(status.splitlines()) == [" M params.yaml", "?? backtest/"]
