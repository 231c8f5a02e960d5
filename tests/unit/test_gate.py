"""The gate's baseline check with the default margin (0): a challenger worse than the best baseline on test is
not promoted, and the reason names both figures."""

from __future__ import annotations

from evergreen.config import PromoteConfig
from evergreen.registry.gate import decide


def _decide(model_value: float, margin: float) -> object:
    return decide(
        data_suites_passed={"raw": True, "clean": True},
        parity_diff=1e-5,
        parity_limit=1e-3,
        metric="rmse",
        model_value=model_value,
        baselines={"mean": 120.0, "hgb": 70.0, "lightgbm": 60.0},
        baseline_margin=margin,
        train_rows=5000,
        min_train_rows=100,
        champion=None,
        champion_margin=0.02,
    )


def test_the_default_margin_refuses_a_challenger_worse_than_the_best_baseline():
    margin = PromoteConfig().baseline_margin
    assert margin == 0
    worse = _decide(60.6, margin)  # 1% worse than lightgbm: passed with the old 5% margin, not any more
    assert not worse.promote
    assert worse.reasons == ["baseline: rmse 60.6 vs best baseline lightgbm 60 (margin 0%, lower is better)"]
    assert _decide(60.6, 0.05).promote
    assert _decide(60.0, margin).promote and _decide(59.0, margin).promote  # as good or better: promoted
