"""Baselines fitted on the same training split as the network and scored on the same test split.

They read the same input matrix as the network (raw values, declared order), so the comparison is fair:
the mean (or majority class), a linear model on one-hot categoricals and standardised numerics, and
scikit-learn's HistGradientBoosting with the categorical features declared.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from evergreen.model.preprocess import Preprocessing

_HGB_MAX_CATEGORIES = 255  # HistGradientBoosting bins each categorical value; more are treated as numeric


def _linear(prep: Preprocessing) -> Pipeline:
    columns = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), prep.categorical),
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), prep.numeric),
        ]
    )
    model = Ridge() if prep.task == "regression" else LogisticRegression(max_iter=2000)
    return make_pipeline(columns, model)


def _hgb(prep: Preprocessing, x: np.ndarray, max_iter: int, seed: int) -> Any:
    categorical = [
        kind == "categorical" and len(np.unique(x[:, i][~np.isnan(x[:, i])])) <= _HGB_MAX_CATEGORIES
        for i, kind in enumerate(prep.kinds)
    ]
    cls = HistGradientBoostingRegressor if prep.task == "regression" else HistGradientBoostingClassifier
    return cls(max_iter=max_iter, categorical_features=categorical or None, random_state=seed)


def fit_baselines(
    prep: Preprocessing, x: np.ndarray, y: np.ndarray, names: list[str], max_iter: int, seed: int
) -> dict[str, Any]:
    """Fit the named baselines on raw features `x` and the raw target `y` (class indices when classifying)."""
    fitted: dict[str, Any] = {}
    for name in names:
        if name == "mean":
            model = DummyRegressor() if prep.task == "regression" else DummyClassifier(strategy="prior")
        elif name == "linear":
            model = _linear(prep)
        else:
            model = _hgb(prep, x, max_iter, seed)
        fitted[name] = model.fit(x, y)
    return fitted


def predict_baseline(model: Any, task: str, x: np.ndarray) -> np.ndarray:
    """Predictions in target units (regression) or class probabilities (classification)."""
    return model.predict(x) if task == "regression" else model.predict_proba(x)
