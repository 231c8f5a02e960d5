"""Baselines fitted on the same training split as the network and scored on the same test split.

They read the same input matrix as the network (raw values, declared order), and each gets what a careful
practitioner would give it, so that "better than the baselines" means something:
- `mean`: the training mean (regression) or the class prior (classification);
- `linear`: ridge or logistic regression on one-hot categoricals and standardised numerics, its regularisation
  chosen on the valid part from a small grid (as the network's epochs are);
- `hgb`: scikit-learn's HistGradientBoosting with the categorical features declared, stopped early on the
  valid part (the number of trees that scored best there, up to `evaluate.hgb_max_iter`);
- `lightgbm`: LightGBM with the categorical features declared, on the model's target transform, stopped early
  on the valid part: the same fit as the `lightgbm` candidate of `model.type: auto` (`evergreen.model.trees`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from evergreen.model.metrics import decision_for
from evergreen.model.preprocess import Preprocessing
from evergreen.model.trees import TreeModel, fit_trees

_HGB_MAX_CATEGORIES = 255  # HistGradientBoosting bins each categorical value; more are treated as numeric


_MISSING_CODE = -1e9  # a missing categorical code's one-hot column (codes are vocabulary codes or raw ints)
_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)  # ridge penalty; logistic regression's C is its inverse


def _valid_loss(task: str, y: np.ndarray, output: np.ndarray, classes: int) -> float:
    """Squared error or log loss on the valid part: what a baseline's knob is chosen by."""
    if task == "regression":
        return float(np.mean((output - y) ** 2))
    return float(log_loss(y, np.clip(output, 1e-12, 1), labels=list(range(classes))))


def _columns(prep: Preprocessing) -> ColumnTransformer:
    """The linear model's input: categorical codes one-hot, numbers median-filled and standardised."""
    # a missing category is its own one-hot column, as OneHotEncoder does with NaN, but through a constant fill:
    # skl2onnx converts that (`evergreen.model.linear`), not NaN categories
    missing = SimpleImputer(strategy="constant", fill_value=_MISSING_CODE)
    return ColumnTransformer(
        [
            ("categorical", make_pipeline(missing, OneHotEncoder(handle_unknown="ignore")), prep.categorical),
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), prep.numeric),
        ]
    )


def fit_linear(prep: Preprocessing, train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray]) -> Any:
    """Ridge or logistic regression with its penalty chosen on `valid` from `_ALPHAS`: the `linear` baseline,
    and `model.type: auto`'s `linear` candidate (`evergreen.model.linear`). One pipeline (columns, model).

    The columns' transform does not depend on the penalty, so it is fitted once, not once per penalty: on 2M
    rows the median fill alone took 20 s of the six fits (numpy's masked median)."""
    classes = len(prep.classes or [])
    columns = _columns(prep).fit(train[0])
    x = columns.transform(train[0])

    def model(alpha: float) -> Any:
        if prep.task == "regression":
            return Ridge(alpha=alpha).fit(x, train[1])
        return LogisticRegression(C=1 / alpha, max_iter=2000).fit(x, train[1])

    fitted = [make_pipeline(columns, model(alpha)) for alpha in _ALPHAS]
    losses = [
        _valid_loss(prep.task, valid[1], predict_baseline(m, prep.task, valid[0], classes), classes) for m in fitted
    ]
    return fitted[int(np.argmin(losses))]


def _hgb(prep: Preprocessing, x: np.ndarray, max_iter: int, seed: int) -> Any:
    categorical = [
        kind == "categorical" and len(np.unique(x[:, i][~np.isnan(x[:, i])])) <= _HGB_MAX_CATEGORIES
        for i, kind in enumerate(prep.kinds)
    ]
    cls = HistGradientBoostingRegressor if prep.task == "regression" else HistGradientBoostingClassifier
    # no internal early stopping: the trees are chosen on the valid part (`_early_stopped_hgb`)
    return cls(max_iter=max_iter, categorical_features=categorical or None, random_state=seed, early_stopping=False)


def _early_stopped_hgb(
    prep: Preprocessing, train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray],
    max_iter: int, patience: int, seed: int,
) -> Any:  # fmt: skip
    """Boost up to `max_iter` trees, keep the count that scored best on valid (stopping `patience` rounds after
    it), and refit with that many: boosting is deterministic here, so the refit is the model that scored best."""
    classes = len(prep.classes or [])
    model = _hgb(prep, train[0], max_iter, seed).fit(*train)
    staged = model.staged_predict(valid[0]) if prep.task == "regression" else model.staged_predict_proba(valid[0])
    best_loss, best_iter = np.inf, 1
    for i, output in enumerate(staged, start=1):
        if prep.task != "regression":
            output = _all_classes(output, model.classes_, classes)
        loss = _valid_loss(prep.task, valid[1], output, classes)
        if loss < best_loss:
            best_loss, best_iter = loss, i
        elif i - best_iter >= patience:
            break
    return model if best_iter == model.n_iter_ else _hgb(prep, train[0], best_iter, seed).fit(*train)


def fit_baselines(
    prep: Preprocessing,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    names: list[str],
    max_iter: int,
    patience: int,
    seed: int,
) -> dict[str, Any]:
    """Fit the named baselines on raw features and the raw target (class indices when classifying): `train`
    and `valid` are (x, y); valid chooses the linear model's penalty and the boosting's number of trees."""
    fitted: dict[str, Any] = {}
    for name in names:
        if name == "mean":
            model = DummyRegressor() if prep.task == "regression" else DummyClassifier(strategy="prior")
            fitted[name] = model.fit(*train)
        elif name == "linear":
            fitted[name] = fit_linear(prep, train, valid)
        elif name == "lightgbm":
            fitted[name] = fit_trees(prep, train, valid, seed=seed)
        else:
            fitted[name] = _early_stopped_hgb(prep, train, valid, max_iter, patience, seed)
    return fitted


def baseline_decision(
    model: Any, prep: Preprocessing, valid: tuple[np.ndarray, np.ndarray], metric: str
) -> list[float]:
    """A baseline classifier's decision weights, fitted on `valid` (x, y) for the gated `metric` as each
    candidate's are (`metrics.decision_for`): a careful practitioner tunes a macro-F1 threshold too."""
    classes = len(prep.classes or [])
    output = predict_baseline(model, prep.task, valid[0], classes)
    return decision_for(metric, prep.task, valid[1], output, classes)


def _all_classes(probabilities: np.ndarray, seen: np.ndarray, classes: int) -> np.ndarray:
    """Probabilities over every class of the model: a class absent from the train part gets probability 0."""
    out = np.zeros((len(probabilities), classes))
    out[:, np.asarray(seen, dtype=int)] = probabilities
    return out


def predict_baseline(model: Any, task: str, x: np.ndarray, classes: int = 0) -> np.ndarray:
    """Predictions in target units (regression) or probabilities over `classes` classes (classification)."""
    if isinstance(model, TreeModel):  # fitted on every class of the model's preprocessing
        return model.predict_matrix(x)
    if task == "regression":
        return model.predict(x)
    return _all_classes(model.predict_proba(x), model.classes_, classes or len(model.classes_))
