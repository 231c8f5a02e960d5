"""What a monitoring run found, as small typed values: the only thing the retraining policy looks at.

The Evidently adapter fills a `MonitorSummary`; the policy (`evergreen.monitoring.policy`) decides from it and
the decision history alone, so the decision can be tested without Evidently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column (a feature, or the prediction) between reference and current window."""

    column: str
    method: str  # the statistical test or distance Evidently used, e.g. "wasserstein", "jensenshannon"
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class Performance:
    """Quality of one model version on the labelled rows of the window."""

    model_version: str
    rows: int
    # rmse/mae/r2 (regression); accuracy/f1_macro, and log_loss/roc_auc where the log kept the probabilities
    # (classification). A metric undefined on these rows (r2 of one row, roc_auc of one class) is left out.
    metrics: dict[str, float]


@dataclass(frozen=True)
class MonitorSummary:
    """One monitoring window compared with the champion's reference data."""

    rows: int
    reference_rows: int
    window_start: str | None = None  # ISO timestamps of the window's first and last prediction
    window_end: str | None = None
    champion: str | None = None
    features: list[ColumnDrift] = field(default_factory=list)
    prediction: ColumnDrift | None = None
    missing_columns: list[str] = field(default_factory=list)  # declared features absent from the log
    unexpected_columns: list[str] = field(default_factory=list)  # logged columns nobody declared
    null_share: dict[str, float] = field(default_factory=dict)  # data quality: share of missing values
    performance: list[Performance] = field(default_factory=list)
    reference_metrics: dict[str, float] = field(default_factory=dict)  # the champion's metrics at promotion
    # the metric monitoring judges performance by: the declared `promote.metric` (`evergreen.model.metrics`
    # knows its direction); None only in summaries built without one
    metric: str | None = None
    report_html: str | None = None
    report_json: str | None = None

    @property
    def drift_share(self) -> float:
        """Share of features that drifted (0 when there are none to judge)."""
        return sum(f.drifted for f in self.features) / len(self.features) if self.features else 0.0

    @property
    def drifted_features(self) -> list[str]:
        return [f.column for f in self.features if f.drifted]

    def champion_performance(self) -> Performance | None:
        return next((p for p in self.performance if p.model_version == self.champion), None)

    def judged(self) -> tuple[str, float, float] | None:
        """(metric, the champion's value on the window's labelled rows, its value at promotion) for the metric
        monitoring judges by; None when there is no such metric, no labelled row of the champion, or either
        value is missing (e.g. ROC AUC of a window holding one class)."""
        current = self.champion_performance()
        if self.metric is None or current is None:
            return None
        now, then = current.metrics.get(self.metric), self.reference_metrics.get(self.metric)
        return None if now is None or then is None else (self.metric, now, then)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drift_share": self.drift_share, "drifted_features": self.drifted_features}
