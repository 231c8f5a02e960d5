"""How well each model version did on the labelled rows of a window: the summary's `performance`.

Computed with the project's own metric functions (`evergreen.model.metrics`), the ones evaluation and the gate
use, so a window's number means what the model card's number means: RMSE, MAE, R2 for regression; accuracy,
macro F1 and, where the log kept the served probabilities, log loss and ROC AUC for classification. Not with
Evidently: its `GroupBy` returns the ungrouped value for every regression and classification metric in 0.7.23
(checked), so it cannot split by version.

The class labels and probabilities are read here the way the Evidently adapter passes them to its report
(`class_text`, `probability_matrix`), so the report and the summary agree on what a class is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
from sklearn import metrics as skm

from evergreen.model.metrics import classification_metrics, regression_metrics
from evergreen.monitoring.summary import Performance
from evergreen.prediction_log.base import LogColumns

PREDICTION = LogColumns.PREDICTION
PROBABILITIES = LogColumns.PROBABILITIES
LABEL = LogColumns.LABEL
VERSION = LogColumns.MODEL_VERSION


def score_versions(current: pl.DataFrame, task: str, classes: Mapping[str, Sequence[Any]]) -> list[Performance]:
    """Quality of each model version on the labelled rows of the whole window (not the drift sample).

    `classes` maps a version to its class labels in output order (its signature): how the log's probabilities
    are read. A version without them is judged on its predicted labels only.
    """
    if not {LABEL, PREDICTION, VERSION} <= set(current.columns):
        return []
    rows = current.filter(pl.col(LABEL).is_not_null() & pl.col(PREDICTION).is_not_null())
    out = []
    for (version,), group in sorted(rows.group_by(VERSION), key=lambda g: str(g[0][0])):
        if task == "regression":
            actual, predicted = group[LABEL].cast(pl.Float64), group[PREDICTION].cast(pl.Float64)
            metrics = regression_metrics(actual.to_numpy(), predicted.to_numpy())
        else:
            metrics = _classification(group, list(classes.get(str(version), [])))
        metrics = {k: v for k, v in metrics.items() if v is not None and not np.isnan(v)}  # undefined: left out
        out.append(Performance(model_version=str(version), rows=group.height, metrics=metrics))
    return out


def _classification(group: pl.DataFrame, classes: list[Any]) -> dict[str, float | None]:
    """One version's classification metrics: from the served probabilities when the log kept them for every
    row and the version's classes are known (as evaluation computes them), else from the predicted labels.

    A label the model has no class for counts as a miss with probability zero (clipped, as log loss does).
    """
    actual = [class_text(v) for v in group[LABEL].to_list()]
    if classes and PROBABILITIES in group.columns and group[PROBABILITIES].null_count() == 0:
        probabilities = probability_matrix(group[PROBABILITIES], len(classes))
        if not np.isnan(probabilities).any():
            order = [class_text(c) for c in classes]
            order += sorted(set(actual) - set(order))  # labels outside the model's classes: columns of zeros
            padded = np.zeros((len(actual), len(order)))
            padded[:, : len(classes)] = probabilities
            index = {label: i for i, label in enumerate(order)}
            return classification_metrics(np.array([index[a] for a in actual]), padded, order)
    predicted = [class_text(v) for v in group[PREDICTION].to_list()]
    return {
        "accuracy": float(skm.accuracy_score(actual, predicted)),
        "f1_macro": float(skm.f1_score(actual, predicted, average="macro", zero_division=0)),
    }


def probability_matrix(column: pl.Series, width: int) -> np.ndarray:
    """The JSON lists of a `probabilities` column as an [N, width] float array (NaN where a row has none)."""
    values = column.cast(pl.String).str.json_decode(pl.List(pl.Float64))
    rows = [v if v is not None and len(v) == width else [np.nan] * width for v in values.to_list()]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


def class_text(value: Any) -> str:
    """A class label as text, the way the Evidently adapter passes labels to its report (and compares them)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a label logged as 1.0 is the class 1
    return str(value)
