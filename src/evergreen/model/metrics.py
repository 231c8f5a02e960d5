"""Metric functions shared by training (valid split), evaluation (test split) and the baselines, and the one
table of every metric Evergreen reports with its direction (the gate, the policy and the summaries read it).

Torch-free: monitoring imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class Metric:
    name: str  # the key in metrics files (`metrics/eval.json`, the model card, monitoring's performance)
    label: str  # how a person reads it in summaries and dashboards
    lower_is_better: bool


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("rmse", "RMSE", lower_is_better=True),
        Metric("mae", "MAE", lower_is_better=True),
        Metric("r2", "R2", lower_is_better=False),
        Metric("accuracy", "accuracy", lower_is_better=False),
        Metric("f1_macro", "macro F1", lower_is_better=False),
        Metric("log_loss", "log loss", lower_is_better=True),
        Metric("roc_auc", "ROC AUC", lower_is_better=False),
    )
}
# the metric the promotion gate compares, per task (`registry.gate.per_row_loss` aggregates to exactly this)
GATED: dict[str, str] = {"regression": "rmse", "classification": "log_loss"}
# the metric monitoring computes on labelled windows, per task (the policy's performance check and dashboards)
MONITORED: dict[str, str] = {"regression": "rmse", "classification": "accuracy"}


def metric(name: str) -> Metric:
    """The table's entry for `name`; a `KeyError` naming the known metrics otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def worsening(name: str, value: float, reference: float) -> float:
    """Relative change of `value` against `reference`, signed so that a positive number is worse."""
    change = value / reference - 1
    return change if metric(name).lower_is_better else -change


def within_margin(name: str, value: float, reference: float, margin: float) -> bool:
    """True when `value` is not worse than `reference` by more than the relative `margin`."""
    if metric(name).lower_is_better:
        return value <= reference * (1 + margin)
    return value >= reference * (1 - margin)


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R2 in target units."""
    actual, predicted = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    error, nan = predicted - actual, float("nan")
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        # by hand, not sklearn: NaN predictions give NaN here (the caller names the epoch), not an exception
        "r2": float(1 - np.sum(error**2) / np.sum((actual - actual.mean()) ** 2)) if len(actual) > 1 else nan,
    }


def classification_metrics(actual: np.ndarray, probabilities: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    """Accuracy, macro F1, log loss and ROC AUC (one-vs-rest macro when there are more than two classes).

    `actual` holds class indices into `classes`; `probabilities` is [N, len(classes)]. ROC AUC is None when
    the split holds a single class, where it is undefined.
    """
    actual = np.asarray(actual)
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    labels = list(range(len(classes)))
    predicted = probabilities.argmax(axis=1)
    roc_auc = None
    if len(np.unique(actual)) > 1:
        if len(classes) == 2:
            roc_auc = float(skm.roc_auc_score(actual, probabilities[:, 1]))
        else:
            present = np.unique(actual)
            # macro over the classes present: AUC of an absent class is undefined
            roc_auc = float(np.mean([skm.roc_auc_score(actual == c, probabilities[:, c]) for c in present]))
    return {
        "accuracy": float(skm.accuracy_score(actual, predicted)),
        "f1_macro": float(skm.f1_score(actual, predicted, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(skm.log_loss(actual, probabilities, labels=labels)),
        "roc_auc": roc_auc,
    }


def score(task: str, actual: np.ndarray, output: np.ndarray, classes: list[Any] | None = None) -> dict[str, Any]:
    """The task's metrics for model output (predictions, or class probabilities)."""
    if task == "regression":
        return regression_metrics(actual, output)
    return classification_metrics(actual, output, classes or [])
