"""`evergreen simulate` on a fresh copy: a short replay with light training, every policy, real stages."""

from __future__ import annotations

import json

import pytest

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
            },
        },
    )
    out = run("evergreen", "simulate", "--weeks", "5", "--output", "backtest").stdout
    assert "the drift policy recovers" in out
    summary = json.loads((project / "backtest/summary.json").read_text())
    policies = summary["policies"]
    assert set(policies) == {"never", "periodic", "drift"}
    assert policies["never"]["retrains"] == 0
    assert policies["periodic"]["retrains"] == 1  # at the first window of February
    for run_ in policies.values():
        assert len(run_["windows"]) == 5 and run_["rmse"] > 0
        assert all(w["rows"] > 100 for w in run_["windows"])
    # the same first model served the first window under every policy
    assert len({run_["windows"][0]["rmse"] for run_ in policies.values()}) == 1
    assert (project / "backtest/error_over_time.png").stat().st_size > 10_000
    decisions = (project / "backtest/work/drift/monitoring/decisions.jsonl").read_text().splitlines()
    assert len([d for d in decisions if json.loads(d)["kind"] == "decision"]) == 5
