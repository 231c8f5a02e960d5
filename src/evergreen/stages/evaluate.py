"""Stage `evaluate`: the model and the baselines scored on the test split; metrics, plots, predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from evergreen.artifacts.reports import EvalReport
from evergreen.data import io
from evergreen.data.schema import EVENT_TIME
from evergreen.data.split import read_split
from evergreen.inference import feature_matrix
from evergreen.model.baselines import fit_baselines, predict_baseline
from evergreen.model.metrics import score
from evergreen.model.network import TabularNet
from evergreen.model.preprocess import check_frame, encode_target
from evergreen.workspace import Workspace


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}


def run(ws: Workspace) -> None:
    params = ws.params
    model = TabularNet.load(ws.model)
    prep = model.prep
    train, test = read_split(ws, "train"), read_split(ws, "test")
    check_frame(test, [*prep.features, prep.target], "test")
    regression = prep.task == "regression"
    # actual values: target units (regression), or indices into the model's classes (classification)
    actual = test[prep.target].cast(pl.Float64).to_numpy() if regression else encode_target(test, prep)
    output = model.predict(test)
    model_scores = _rounded(score(prep.task, actual, output, prep.classes))

    y_train = train[prep.target].cast(pl.Float64).to_numpy() if regression else encode_target(train, prep)
    x_train, x_test = feature_matrix(train, prep.features), feature_matrix(test, prep.features)
    cfg = params.evaluate
    baseline_scores = {}
    for name, baseline in fit_baselines(prep, x_train, y_train, cfg.baselines, cfg.hgb_max_iter,
                                        params.train.seed).items():  # fmt: skip
        baseline_output = predict_baseline(baseline, prep.task, x_test)
        baseline_scores[name] = _rounded(score(prep.task, actual, baseline_output, prep.classes))
    report = EvalReport(model=model_scores, baselines=baseline_scores)
    report.write(ws.eval_metrics)

    # plots for `dvc plots show`, and the full-precision test predictions (serving checks it has no skew)
    keys = [c for c in (params.data.id_column.name if params.data.id_column else None, EVENT_TIME) if c in test]
    predictions = test.select(*keys, *prep.features, prep.target)
    if regression:
        predictions = predictions.with_columns(prediction=pl.Series(output, dtype=pl.Float64))
        plot = pl.DataFrame({"actual": actual, "predicted": output.round(3)})
        error = np.abs(output - actual).round(3)
    else:
        labels = np.array(prep.classes, dtype=object)
        probabilities = {f"p_{label}": pl.Series(output[:, i]) for i, label in enumerate(prep.classes)}
        predicted = [str(v) for v in labels[output.argmax(axis=1)]]
        predictions = predictions.with_columns(prediction=pl.Series(predicted), **probabilities)
        plot = pl.DataFrame({"actual": [str(v) for v in labels[actual]], "predicted": predicted})
        error = (output.argmax(axis=1) != actual).astype(float)  # 0/1: the error rate over time
    ws.eval_reports.mkdir(parents=True, exist_ok=True)
    if not regression:
        plot.write_csv(ws.confusion_csv)
    if EVENT_TIME in test.columns:
        plot = plot.with_columns(test[EVENT_TIME])
    plot.with_columns(abs_error=pl.Series(error)).write_csv(ws.predictions_csv)
    io.write_parquet(predictions, ws.test_predictions)

    main = "rmse" if regression else "accuracy"
    scores = {"model": report.model[main]} | {k: v[main] for k, v in report.baselines.items()}
    print("evaluate: test " + main + " " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
