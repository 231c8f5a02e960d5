"""Metric functions shared by training (valid split), evaluation (test split) and the baselines.

The table of the metrics (names, labels, directions, the task each suits, the per-task defaults) lives in
`evergreen.config.metrics`, one definition that the config validates `promote.metric` against;
`metric(name)` reads it for the gate, the policy and the summaries. Torch-free: monitoring imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evergreen.config.metrics import METRICS, Metric
from evergreen.inference import predicted_classes


def metric(name: str) -> Metric:
    """The table's entry for `name`; a `KeyError` naming the known metrics otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def worsening(name: str, value: float, reference: float) -> float:
    """Relative change of `value` against `reference`, signed so that a positive number is worse.

    Relative to |reference|, so a metric that can be negative (R2) keeps its direction."""
    change = (value - reference) / max(abs(reference), 1e-12)
    return change if metric(name).lower_is_better else -change


# A relative difference below this is float32 rounding, not a difference: the `linear` candidate, the linear
# baseline's own fit scored through its float32 graph, came 1.9e-8 (relative) behind the float64 baseline on
# test and was refused by a margin of 0 (RMSE 78,682.808113 against 78,682.806587)
FLOAT32_TIE = 1e-6


def within_margin(name: str, value: float, reference: float, margin: float) -> bool:
    """True when `value` is not worse than `reference` by more than the relative `margin` (of |reference|); a
    difference within `FLOAT32_TIE` is a tie."""
    allowed = abs(reference) * (margin + FLOAT32_TIE)
    if metric(name).lower_is_better:
        return value <= reference + allowed
    return value >= reference - allowed


def best(name: str, values: dict[str, float | None]) -> tuple[str, float] | None:
    """The (key, value) with the best value of metric `name`, ignoring None; None when there is none."""
    known = {k: v for k, v in values.items() if v is not None}
    if not known:
        return None
    pick = min if metric(name).lower_is_better else max
    key = pick(known, key=lambda k: known[k])
    return key, known[key]


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


Weights = Sequence[float] | None  # a model's decision weights (`predicted_classes`); None or empty: plain argmax


def fit_decision_weights(actual: np.ndarray, probabilities: np.ndarray, classes: int) -> list[float]:
    """Per-class decision weights that maximise macro F1 on `actual` (valid rows); [] where plain argmax is as
    good. Two classes: the threshold t on p(1) (weights [t, 1 - t]) from the valid probabilities' quantiles.
    More: two passes of coordinate ascent over each class's weight on a log grid (x1/4 .. x4). On a 5% minority
    class every model predicts the majority everywhere with argmax (macro F1 0.49, lending_club); the gated
    metric rewards predicting the rare class where it is likely enough, which a threshold does."""
    actual, probabilities = np.asarray(actual), np.asarray(probabilities, dtype=np.float64)
    if len(actual) == 0 or classes < 2 or len(np.unique(actual)) < 2:
        return []
    actual = actual.astype(np.int64)

    def f1(weights: np.ndarray) -> float:  # macro F1 over every class, as sklearn's (zero_division=0)
        confusion = np.bincount(actual * classes + predicted_classes(probabilities, weights), minlength=classes**2)
        confusion = confusion.reshape(classes, classes)
        tp = np.diagonal(confusion)
        both = confusion.sum(axis=0) + confusion.sum(axis=1)  # 2 tp + fp + fn
        return float(np.mean(np.divide(2 * tp, both, out=np.zeros(classes), where=both > 0)))

    plain = f1(np.ones(classes))
    if classes == 2:
        thresholds = np.unique(np.quantile(probabilities[:, 1], np.linspace(0.01, 0.99, 99)))
        values = _binary_macro_f1(actual == 1, probabilities[:, 1][None, :] > thresholds[:, None])
        best_at = max(range(len(thresholds)), key=lambda i: (values[i], -abs(thresholds[i] - 0.5)))
        t = float(thresholds[best_at])
        return [t, 1 - t] if values[best_at] > plain + 1e-12 else []
    weights, value = np.ones(classes), plain
    for _ in range(2):
        for c in range(classes):
            for factor in np.geomspace(0.25, 4.0, 13):
                trial = weights.copy()
                trial[c] = weights[c] * factor
                trial_value = f1(trial)
                if trial_value > value:
                    weights, value = trial, trial_value
    return [float(w) for w in weights / weights.max()] if value > plain else []


def decision_for(name: str, task: str, actual: np.ndarray, output: np.ndarray, classes: int) -> list[float]:
    """The decision weights a classifier gets for gated metric `name` from its valid output: fitted for macro F1
    (`fit_decision_weights`), none otherwise (the most probable class is already right for accuracy, and log
    loss and ROC AUC read the probabilities). Every candidate and every baseline gets the same treatment."""
    if task != "classification" or name != "f1_macro":
        return []
    return fit_decision_weights(actual, output, classes)


def _binary_macro_f1(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Macro F1 of two classes for each row of `predicted` ([T, N] booleans: class 1 predicted)."""
    tp = (predicted & truth).sum(axis=1)
    fp, fn = (predicted & ~truth).sum(axis=1), (~predicted & truth).sum(axis=1)
    tn = len(truth) - tp - fp - fn
    f1_one = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(len(tp)), where=(2 * tp + fp + fn) > 0)
    f1_zero = np.divide(2 * tn, 2 * tn + fn + fp, out=np.zeros(len(tn)), where=(2 * tn + fn + fp) > 0)
    return (f1_one + f1_zero) / 2


def classification_metrics(
    actual: np.ndarray, probabilities: np.ndarray, classes: list[Any], weights: Weights = None
) -> dict[str, Any]:
    """Accuracy, macro F1, log loss and ROC AUC (one-vs-rest macro when there are more than two classes).

    `actual` holds class indices into `classes`; `probabilities` is [N, len(classes)]. ROC AUC is None when
    the split holds a single class, where it is undefined. Accuracy and macro F1 judge the classes decided with
    the model's decision `weights` (`predicted_classes`); log loss and ROC AUC the probabilities.
    """
    from sklearn import metrics as skm  # here, not at the top: promote and regression runs never pay its import

    actual = np.asarray(actual)
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    labels = list(range(len(classes)))
    predicted = predicted_classes(probabilities, weights)
    return {
        "accuracy": float(skm.accuracy_score(actual, predicted)),
        "f1_macro": float(skm.f1_score(actual, predicted, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(skm.log_loss(actual, probabilities, labels=labels)),
        "roc_auc": roc_auc(actual, probabilities),
    }


def roc_auc(actual: np.ndarray, probabilities: np.ndarray) -> float | None:
    """ROC AUC of class probabilities [N, C] (one-vs-rest macro over the classes present when C > 2); None when
    `actual` holds one class, where it is undefined."""
    from sklearn import metrics as skm

    if len(np.unique(actual)) < 2:
        return None
    if probabilities.shape[1] == 2:
        return float(skm.roc_auc_score(actual, probabilities[:, 1]))
    # macro over the classes present: AUC of an absent class is undefined
    return float(np.mean([skm.roc_auc_score(actual == c, probabilities[:, c]) for c in np.unique(actual)]))


def per_class_metrics(
    actual: np.ndarray, probabilities: np.ndarray, classes: list[Any], weights: Weights = None
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class (label as text), of the classes the model decides."""
    from sklearn import metrics as skm

    predicted = predicted_classes(probabilities, weights)
    labels = list(range(len(classes)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        np.asarray(actual), predicted, labels=labels, zero_division=0
    )
    return {
        str(label): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
        for label, p, r, f, n in zip(classes, precision, recall, f1, support, strict=True)
    }


def resampled(
    name: str, actual: np.ndarray, output: np.ndarray, idx: np.ndarray, weights: Weights = None
) -> np.ndarray:
    """Metric `name` on each bootstrap resample: `idx` is [samples, n] row indices; one value per resample.

    `actual` holds values (regression) or class indices; `output` predictions or class probabilities. The same
    definitions as `score`, vectorised where they decompose (ROC AUC is computed resample by resample).
    """
    actual, output = np.asarray(actual), np.asarray(output, dtype=np.float64)
    if name in ("rmse", "mae", "r2"):
        error = output[idx] - actual[idx]
        if name == "rmse":
            return np.sqrt(np.mean(error**2, axis=1))
        if name == "mae":
            return np.mean(np.abs(error), axis=1)
        y = actual[idx].astype(np.float64)
        return 1 - np.sum(error**2, axis=1) / np.maximum(
            np.sum((y - y.mean(axis=1, keepdims=True)) ** 2, axis=1), 1e-12
        )
    k = output.shape[1]
    truth, predicted = actual[idx].astype(np.int64), predicted_classes(output, weights)[idx]
    if name == "accuracy":
        return np.mean(truth == predicted, axis=1)
    if name == "log_loss":
        probabilities = np.clip(output, 1e-12, 1.0)
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
        return np.mean(-np.log(probabilities[idx, truth]), axis=1)
    if name == "f1_macro":
        samples = np.arange(idx.shape[0])[:, None]
        counts = np.bincount((samples * k * k + truth * k + predicted).ravel(), minlength=idx.shape[0] * k * k)
        confusion = counts.reshape(idx.shape[0], k, k)  # [sample, actual, predicted]
        tp = np.diagonal(confusion, axis1=1, axis2=2)
        fp, fn = confusion.sum(axis=1) - tp, confusion.sum(axis=2) - tp
        # 0 where a class is neither present nor predicted, as sklearn's zero_division=0 over all labels
        f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(tp.shape), where=(2 * tp + fp + fn) > 0)
        return f1.mean(axis=1)
    if name == "roc_auc":
        # the AUC alone per resample (the other metrics of `classification_metrics` cost as much again), of the
        # probabilities clipped and normalised as there
        probabilities = np.clip(output, 1e-12, 1.0)
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
        values = [roc_auc(actual[row], probabilities[row]) for row in idx]
        return np.array([np.nan if v is None else v for v in values])
    raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")


def score(
    task: str, actual: np.ndarray, output: np.ndarray, classes: list[Any] | None = None, weights: Weights = None
) -> dict[str, Any]:
    """The task's metrics for model output (predictions, or class probabilities, decided with `weights`)."""
    if task == "regression":
        return regression_metrics(actual, output)
    return classification_metrics(actual, output, classes or [], weights)
