"""`promote`: the promotion gate, the shadow period and registry retention."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from evergreen.config.base import StrictModel
from evergreen.config.metrics import DEFAULT_METRIC, MetricName


class ShadowConfig(StrictModel):
    """A challenger that passed the offline gate first serves in the shadow (scored beside the champion on live
    traffic, never answering) until `min_labels` of the records it scored are labelled through /feedback; then
    the gate compares the two on those records and promotes or discards it. Discarded after `max_wait_hours`
    without enough labels."""

    min_labels: int = Field(ge=1, description="labelled live records the shadow must have scored to be judged")
    max_wait_hours: float = Field(gt=0, description="discard a shadow still short of labels after this long")


class PromoteConfig(StrictModel):
    """The promotion gate: every check must pass before a challenger replaces the champion."""

    registry_dir: str = "models/registry"
    # the metric the gate and monitoring's performance rule judge by; None: the task's default (DEFAULT_METRIC)
    metric: MetricName | None = None
    # "best": the best of `evaluate.baselines` on `metric`; naming one compares with that one only
    baseline: Literal["best", "mean", "linear", "hgb", "lightgbm"] = "best"
    # the challenger may be at most this much worse (relative, on `metric`) than the baseline: 0, a challenger
    # worse than the baseline on test is not promoted (serving it would serve the worse model)
    baseline_margin: float = Field(0.0, ge=0)
    # ... and at most this much worse than the champion, on test rows neither model trained on
    champion_margin: float = Field(0.02, ge=0)
    min_train_rows: int = Field(100, ge=1, description="a model trained on fewer rows is never promoted")
    min_compare_rows: int = Field(
        100, ge=1, description="test rows outside the champion's training rows needed to compare with it"
    )
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    reference_rows: int = Field(5000, ge=100, description="training rows kept with a version for monitoring")
    seed: int = 42
    # None: a challenger that passes becomes the champion at once; else it serves in the shadow first
    shadow: ShadowConfig | None = None
    # registry retention, applied after each promotion: the newest N versions plus the champion, the shadow and
    # the fallback keep their files; older ones keep only their card. None keeps every version
    keep_versions: int | None = Field(None, ge=1)

    def metric_for(self, task: str) -> str:
        """The metric the gate judges by: the declared one, or the task's default."""
        return self.metric or DEFAULT_METRIC[task]
