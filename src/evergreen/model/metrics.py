"""Metric functions shared by training (valid split), evaluation (test split) and the baselines."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


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
