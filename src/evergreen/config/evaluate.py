"""`evaluate`: scoring on the test split, and the baselines fitted beside the model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from evergreen.config.base import StrictModel

Baseline = Literal["mean", "linear", "hgb", "lightgbm"]


class EvaluateConfig(StrictModel):
    """Scoring on the test split, and the baselines fitted on the same split."""

    baselines: list[Baseline] = Field(default_factory=lambda: ["mean", "linear", "hgb", "lightgbm"], min_length=1)
    # an upper bound: HistGradientBoosting stops early on the valid split (`hgb_patience` rounds without gain)
    hgb_max_iter: int = Field(500, ge=1)
    hgb_patience: int = Field(20, ge=1)
    # the baselines fit on at most this many train rows, a seeded sample of them (eval.json says so): on a
    # history of tens of millions of rows they would otherwise hold the whole train matrix and take hours
    baseline_rows: int = Field(2_000_000, ge=100)
    # the plot tables (predictions, residuals, confusion) hold at most this many test rows, a seeded sample in
    # row order: a plot of millions of points says no more and does not load. Metrics read every row.
    plot_rows: int = Field(100_000, ge=100)
