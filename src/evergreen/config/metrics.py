"""The one table of the metrics Evergreen reports: each one's name, label, direction and task, and what each
task is judged by when `promote.metric` is not declared.

It lives in the config package because the config validates `promote.metric` against it, and the config must
not import `evergreen.model` (whose modules import torch). `evergreen.model.metrics` computes the metrics and
reads their directions from here, so the names are written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Metric:
    name: str  # the key in metrics files (`metrics/eval.json`, the model card, monitoring's performance)
    label: str  # how a person reads it in summaries and dashboards
    lower_is_better: bool
    task: str  # the task whose models it scores: `promote.metric` must suit `data.task`

    @property
    def direction(self) -> str:
        return "lower is better" if self.lower_is_better else "higher is better"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("rmse", "RMSE", lower_is_better=True, task="regression"),
        Metric("mae", "MAE", lower_is_better=True, task="regression"),
        Metric("r2", "R2", lower_is_better=False, task="regression"),
        Metric("accuracy", "accuracy", lower_is_better=False, task="classification"),
        Metric("f1_macro", "macro F1", lower_is_better=False, task="classification"),
        Metric("log_loss", "log loss", lower_is_better=True, task="classification"),
        Metric("roc_auc", "ROC AUC", lower_is_better=False, task="classification"),  # binary targets only
    )
}
# the names `promote.metric` accepts: the table's keys, in its order (the order a bad value's message lists)
MetricName = Literal[*METRICS]  # type: ignore[valid-type]
TASK_METRICS: dict[str, tuple[str, ...]] = {
    task: tuple(m.name for m in METRICS.values() if m.task == task) for task in ("regression", "classification")
}
# what `promote.metric` means when it is not declared (params.yaml says why); ask `PromoteConfig.metric_for`
DEFAULT_METRIC: dict[str, str] = {"regression": "rmse", "classification": "f1_macro"}
# the metric monitoring's dashboard panel shows on labelled windows, per task
MONITORED: dict[str, str] = {"regression": "rmse", "classification": "accuracy"}
