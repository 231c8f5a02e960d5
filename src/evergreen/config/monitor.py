"""`monitor`: the window of the prediction log a monitoring run reads, and the retraining policy."""

from __future__ import annotations

from pydantic import Field

from evergreen.config.base import StrictModel


class WindowConfig(StrictModel):
    """Which slice of the prediction log a monitoring run looks at: the last N rows and/or the last T hours."""

    last_rows: int | None = Field(2000, ge=1)
    last_hours: float | None = Field(None, gt=0)


class PolicyConfig(StrictModel):
    """When drift or decay is worth a retrain. The decision is a pure function of summaries and history."""

    drift_share: float = Field(0.6, gt=0, le=1, description="share of features drifted to call the window drifted")
    feature_threshold: float = Field(0.1, gt=0, description="drift score above which a feature has drifted")
    feature_thresholds: dict[str, float] = Field(default_factory=dict, description="per-feature overrides")
    prediction_drift: bool = Field(False, description="count a drifted prediction distribution as drift")
    min_rows: int = Field(100, ge=1, description="fewer rows in a window: insufficient data, no decision")
    consecutive: int = Field(2, ge=1, description="drifted windows in a row before a retrain (hysteresis)")
    cooldown_hours: float = Field(336, ge=0, description="time between retrains, on the prediction log's clock")
    performance_degradation: float | None = Field(
        0.25, gt=0, description="relative worsening of the primary metric vs the champion's, when labels exist"
    )
    retrain_every: int | None = Field(None, ge=1, description="fallback: retrain after this many monitor runs")


class MonitorConfig(StrictModel):
    """Monitoring of the deployed model: the window, where reports go, and the retraining policy."""

    window: WindowConfig = WindowConfig()
    reports_dir: str = "monitoring/reports"
    workspace: str = "monitoring/workspace"
    project: str = "evergreen"
    decisions: str = "monitoring/decisions.jsonl"
    max_rows: int = Field(1_000_000, ge=1000, description="larger windows are sampled down for the drift check")
    policy: PolicyConfig = PolicyConfig()
