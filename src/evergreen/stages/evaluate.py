"""Stage `evaluate`: the model and the baselines scored on the test split; metrics, plots, predictions.

Also the leaderboard, `metrics/leaderboard.json`: every candidate the train stage listed in
`models/candidates/index.json` (one, unless `model.type: auto`) with its valid metric, fit seconds and, from
here, its test metrics. The test split judges; it chose nothing (the train stage chose on valid).

Plots for `dvc plots show`, all in `reports/eval/`: predicted against actual and the error over time
(`predictions.csv`), residuals against prediction (`residuals.csv`, regression), the confusion matrix
(`confusion.csv`) and the calibration curve of the predicted class (`calibration.csv`, classification).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from evergreen.artifacts.reports import EvalReport
from evergreen.data import io
from evergreen.data.parquet_rows import ParquetRows, sample_rows
from evergreen.data.schema import EVENT_TIME
from evergreen.data.split import read_split, split_pieces
from evergreen.errors import ModelError
from evergreen.inference import predicted_classes
from evergreen.model.baselines import baseline_decision, fit_baselines, predict_baseline
from evergreen.model.candidates import load_candidate
from evergreen.model.metrics import metric as metric_of
from evergreen.model.metrics import per_class_metrics, score
from evergreen.model.preprocess import check_frame, encode_target
from evergreen.workspace import Workspace


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}


def run(ws: Workspace) -> None:
    params = ws.params
    model = load_candidate(ws.model)
    prep = model.prep
    test = read_split(ws, "test")
    check_frame(test, [*prep.input_columns, prep.target], "test")
    regression = prep.task == "regression"
    # actual values: target units (regression), or indices into the model's classes (classification)
    actual = test[prep.target].cast(pl.Float64).to_numpy() if regression else encode_target(test, prep)
    output = model.predict(test)
    decision = prep.decision_weights  # the classes as the model decides them (empty: the most probable)
    model_scores = _rounded(score(prep.task, actual, output, prep.classes, decision))

    def xy(part: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        y = part[prep.target].cast(pl.Float64).to_numpy() if regression else encode_target(part, prep)
        return prep.matrix(part), y

    cfg, classes, gated = params.evaluate, len(prep.classes or []), params.promote.metric_for(prep.task)
    # the baselines fit on at most `evaluate.baseline_rows` train rows and stop on at most as many valid rows
    # (as the network's training does on `train.stream.sample_rows`), each a seeded sample read piece by piece
    train = ParquetRows.of(split_pieces(ws, "train"))
    sampled = train.total > cfg.baseline_rows
    fit_rows = sample_rows(train, cfg.baseline_rows, params.train.seed)
    valid = sample_rows(ParquetRows.of(split_pieces(ws, "valid")), cfg.baseline_rows, params.train.seed)
    # valid chooses the linear penalty and the number of boosted trees, as it stops the network's training, and
    # a classifier's decision weights, as it chose the model's (`decision_for`)
    x_test, (x_valid, y_valid) = prep.matrix(test), xy(valid)
    fitted = fit_baselines(prep, xy(fit_rows), (x_valid, y_valid), cfg.baselines, cfg.hgb_max_iter,
                           cfg.hgb_patience, params.train.seed)  # fmt: skip

    def baseline_score(fit: Any) -> dict[str, Any]:
        weights = baseline_decision(fit, prep, (x_valid, y_valid), gated)
        return _rounded(score(prep.task, actual, predict_baseline(fit, prep.task, x_test, classes), prep.classes,
                              weights))  # fmt: skip

    baseline_scores = {name: baseline_score(fit) for name, fit in fitted.items()}
    # per-class figures only where there are classes: a null in metrics/eval.json is dropped by `dvc exp show`
    extra = {} if regression else {"per_class": per_class_metrics(actual, output, prep.classes or [], decision)}
    if sampled:
        extra["baselines_fit_on"] = {"rows": fit_rows.height, "of": train.total}
    report = EvalReport(model=model_scores, baselines=baseline_scores, **extra)
    report.write(ws.eval_metrics)
    write_leaderboard(ws, test, actual, model_scores)

    # plots for `dvc plots show`, and the full-precision test predictions (serving checks it has no skew)
    keys = [c for c in (params.data.id_column.name if params.data.id_column else None, EVENT_TIME) if c in test]
    predictions = test.select(*keys, *(c for c in prep.input_columns if c not in keys), prep.target)
    if regression:
        predictions = predictions.with_columns(prediction=pl.Series(output, dtype=pl.Float64))
        plot = pl.DataFrame({"actual": actual, "predicted": output.round(3)})
        error = np.abs(output - actual).round(3)
    else:
        labels = np.array(prep.classes, dtype=object)
        probabilities = {f"p_{label}": pl.Series(output[:, i]) for i, label in enumerate(prep.classes)}
        decided = predicted_classes(output, decision)
        predicted = [str(v) for v in labels[decided]]
        predictions = predictions.with_columns(prediction=pl.Series(predicted), **probabilities)
        plot = pl.DataFrame({"actual": [str(v) for v in labels[actual]], "predicted": predicted})
        error = (decided != actual).astype(float)  # 0/1: the error rate over time
    ws.eval_reports.mkdir(parents=True, exist_ok=True)
    # every plot file is written for either task (empty, with its header, where it does not apply): dvc.yaml
    # declares them all, and a declared output must exist
    if regression:
        residuals(actual, output).write_csv(ws.residuals_csv)
        pl.DataFrame(schema={"actual": pl.String, "predicted": pl.String}).write_csv(ws.confusion_csv)
        calibration(np.zeros(0, dtype=int), np.zeros((0, 1))).write_csv(ws.calibration_csv)
    else:
        residuals(np.zeros(0), np.zeros(0)).write_csv(ws.residuals_csv)
        plot.write_csv(ws.confusion_csv)
        calibration(actual, output).write_csv(ws.calibration_csv)
    if EVENT_TIME in test.columns:
        plot = plot.with_columns(test[EVENT_TIME])
    plot.with_columns(abs_error=pl.Series(error)).write_csv(ws.predictions_csv)
    io.write_parquet(predictions, ws.test_predictions)

    main = params.promote.metric_for(prep.task)
    scores = {"model": report.model[main]} | {k: v[main] for k, v in report.baselines.items()}
    print("evaluate: test " + main + " " + ", ".join(f"{k} {_show(v)}" for k, v in scores.items()))


def write_leaderboard(ws: Workspace, test: pl.DataFrame, actual: np.ndarray, chosen: dict[str, Any]) -> None:
    """`metrics/leaderboard.json`: the train stage's candidates (`models/candidates/index.json`), each with its
    test metric; the chosen one's is the model's (`chosen`), the others are loaded and scored here."""
    index_file = ws.candidates / "index.json"
    if not index_file.exists():  # a model trained before candidates were listed
        return
    index = io.read_json(index_file, ModelError, subject="the list of candidates is ")
    name = index["metric"]
    rows = []
    for entry in index["candidates"]:
        if entry["chosen"]:
            scores = chosen
        else:
            candidate = load_candidate(ws.models_dir / entry["file"])
            output = candidate.predict(test)
            cp = candidate.prep
            scores = _rounded(score(cp.task, actual, output, cp.classes, cp.decision_weights))
        # every test metric: the gate judges a candidate by these, as it judges the chosen one by eval.json's
        rows.append({**entry, "test": scores.get(name), "test_scores": scores})
    board = {"metric": name, "direction": metric_of(name).direction, "candidates": rows}
    io.write_json(board, ws.leaderboard)


def _show(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4g}"


def residuals(actual: np.ndarray, predicted: np.ndarray) -> pl.DataFrame:
    """Residual (actual - predicted) against prediction: a pattern here is bias the metrics average away."""
    return pl.DataFrame({"predicted": predicted.round(3), "residual": (actual - predicted).round(3)})


def calibration(actual: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> pl.DataFrame:
    """Reliability of the predicted class: per confidence bin, mean confidence against observed accuracy.

    A calibrated model lies on the diagonal; above it is underconfident, below it overconfident.
    """
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == actual).astype(float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    frame = pl.DataFrame({"bin": which, "confidence": confidence, "correct": correct})
    return (
        frame.group_by("bin")
        .agg(
            confidence=pl.col("confidence").mean().round(4),
            accuracy=pl.col("correct").mean().round(4),
            rows=pl.len(),
        )
        .sort("bin")
        .drop("bin")
    )
