"""Stage `evaluate`: the model and the baselines scored on the test split; metrics, plots, predictions.

Also the leaderboard, `metrics/leaderboard.json`: every candidate the train stage listed in
`models/candidates/index.json` (one, unless `model.type: auto`) with its valid metric, fit seconds and, from
here, its test metrics. The test split judges; it chose nothing (the train stage chose on valid).

Plots for `dvc plots show`, all in `reports/eval/`: predicted against actual and the error over time
(`predictions.csv`), residuals against prediction (`residuals.csv`, regression), the confusion matrix
(`confusion.csv`) and the calibration curve of the predicted class (`calibration.csv`, classification).

The test split is read one record batch at a time, never whole: every row is scored and judged, and its
prediction written (`test_predictions.parquet`); the plot tables show a seeded sample of at most
`evaluate.plot_rows` rows, in row order (the calibration curve bins every row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from evergreen.artifacts.reports import EvalReport
from evergreen.data import io
from evergreen.data.parquet_rows import ParquetRows, sample_rows
from evergreen.data.schema import EVENT_TIME
from evergreen.data.split import split_pieces
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


Predict = Callable[[pl.DataFrame, np.ndarray], np.ndarray]  # (test rows, their input matrix) -> output


def run(ws: Workspace) -> None:
    params = ws.params
    model = load_candidate(ws.model)
    prep = model.prep
    test = ParquetRows.of(split_pieces(ws, "test"))
    check_frame(test.lazy(), [*prep.input_columns, prep.target], "test")
    regression = prep.task == "regression"

    def xy(part: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return prep.matrix(part), _actual(part, prep)

    cfg, classes, gated = params.evaluate, len(prep.classes or []), params.promote.metric_for(prep.task)
    # the baselines fit on at most `evaluate.baseline_rows` train rows and stop on at most as many valid rows
    # (as the network's training does on `train.stream.sample_rows`), each a seeded sample read piece by piece
    train = ParquetRows.of(split_pieces(ws, "train"))
    sampled = train.total > cfg.baseline_rows
    fit_rows = sample_rows(train, cfg.baseline_rows, params.train.seed)
    valid = sample_rows(ParquetRows.of(split_pieces(ws, "valid")), cfg.baseline_rows, params.train.seed)
    # valid chooses the linear penalty and the number of boosted trees, as it stops the network's training, and
    # a classifier's decision weights, as it chose the model's (`decision_for`)
    valid_xy = xy(valid)
    fitted = fit_baselines(prep, xy(fit_rows), valid_xy, cfg.baselines, cfg.hgb_max_iter,
                           cfg.hgb_patience, params.train.seed)  # fmt: skip
    fit_count = fit_rows.height
    del fit_rows, valid

    def baseline(fit: Any) -> Predict:
        return lambda rows, x: predict_baseline(fit, prep.task, x, classes)

    index = _candidate_index(ws)
    others = _unchosen_candidates(ws, index)
    predictors: dict[str, Predict] = {"model": lambda rows, x: model.predict(rows)}
    predictors |= {f"baseline {name}": baseline(fit) for name, fit in fitted.items()}
    predictors |= {f"candidate {file}": (lambda rows, x, c=c: c.predict(rows)) for file, c in others.items()}
    keys = [c for c in (params.data.id_column.name if params.data.id_column else None, EVENT_TIME)
            if c in test.lazy().collect_schema().names()]  # fmt: skip
    actual, outputs, times = _score_test(ws, test, prep, predictors, keys)

    output, decision = outputs["model"], prep.decision_weights  # decision: empty, the most probable class
    model_scores = _judged(prep, actual, output, decision)
    baseline_scores = {
        name: _judged(prep, actual, outputs[f"baseline {name}"], baseline_decision(fit, prep, valid_xy, gated))
        for name, fit in fitted.items()
    }
    # per-class figures only where there are classes: a null in metrics/eval.json is dropped by `dvc exp show`
    extra = {} if regression else {"per_class": per_class_metrics(actual, output, prep.classes or [], decision)}
    if sampled:
        extra["baselines_fit_on"] = {"rows": fit_count, "of": train.total}
    report = EvalReport(model=model_scores, baselines=baseline_scores, **extra)
    report.write(ws.eval_metrics)
    candidate_scores = {
        file: _judged(c.prep, actual, outputs[f"candidate {file}"], c.prep.decision_weights)
        for file, c in others.items()
    }
    write_leaderboard(ws, index, model_scores, candidate_scores)
    shown = _plot_rows(len(actual), cfg.plot_rows, params.train.seed)
    write_plots(ws, prep, actual[shown], output[shown], None if times is None else times[shown])
    if not regression:  # calibration bins every row: a table of ten, whatever the split's size
        calibration(actual, output).write_csv(ws.calibration_csv)

    main = params.promote.metric_for(prep.task)
    scores = {"model": report.model[main]} | {k: v[main] for k, v in report.baselines.items()}
    print("evaluate: test " + main + " " + ", ".join(f"{k} {_show(v)}" for k, v in scores.items()))


def _judged(prep: Any, actual: np.ndarray, output: np.ndarray, weights: list[float]) -> dict[str, Any]:
    """Every test metric of one output (rounded), a classifier's classes decided with `weights`."""
    return _rounded(score(prep.task, actual, output, prep.classes, weights))


def _actual(rows: pl.DataFrame, prep: Any) -> np.ndarray:
    """The rows' targets: in target units (regression), or indices into the model's classes (classification)."""
    if prep.task == "regression":
        return rows[prep.target].cast(pl.Float64).to_numpy()
    return encode_target(rows, prep)


def _score_test(
    ws: Workspace, test: ParquetRows, prep: Any, predictors: dict[str, Predict], keys: list[str]
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """Every predictor's output on the test split, read one record batch at a time, never whole; the model's
    full-precision predictions are written to `test_predictions.parquet` batch by batch (serving checks them
    for skew). Returns the actual values, each predictor's output and the event times (None without them)."""
    actual, outputs, times = [], {name: [] for name in predictors}, []
    columns = [*keys, *(c for c in prep.input_columns if c not in keys), prep.target]
    ws.eval_reports.mkdir(parents=True, exist_ok=True)
    with io.parquet_writer(ws.test_predictions) as write:
        for rows in test.read():
            x = prep.matrix(rows)
            for name, predict in predictors.items():
                outputs[name].append(predict(rows, x))
            actual.append(_actual(rows, prep))
            if EVENT_TIME in keys:
                times.append(rows[EVENT_TIME].to_numpy())
            write(_prediction_rows(rows.select(columns), outputs["model"][-1], prep))
    joined = {name: np.concatenate(parts) for name, parts in outputs.items()}
    return np.concatenate(actual), joined, (np.concatenate(times) if times else None)


def _prediction_rows(rows: pl.DataFrame, output: np.ndarray, prep: Any) -> pl.DataFrame:
    """Test rows with the model's prediction: its value, or its decided class and every class's probability."""
    if prep.task == "regression":
        return rows.with_columns(prediction=pl.Series(output, dtype=pl.Float64))
    labels = np.array(prep.classes, dtype=object)
    probabilities = {f"p_{label}": pl.Series(output[:, i]) for i, label in enumerate(prep.classes)}
    predicted = [str(v) for v in labels[predicted_classes(output, prep.decision_weights)]]
    return rows.with_columns(prediction=pl.Series(predicted), **probabilities)


def _plot_rows(total: int, cap: int, seed: int) -> np.ndarray:
    """Which test rows the plot tables show: all of them up to `cap`, else a seeded sample, in row order."""
    if total <= cap:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=cap, replace=False))


def write_plots(ws: Workspace, prep: Any, actual: np.ndarray, output: np.ndarray, times: np.ndarray | None) -> None:
    """The plot tables for `dvc plots show`: predicted against actual and the error over time, residuals
    (regression) or the confusion matrix (classification). Every file is written for either task (empty, with
    its header, where it does not apply): dvc.yaml declares them all, and a declared output must exist."""
    if prep.task == "regression":
        plot = pl.DataFrame({"actual": actual, "predicted": output.round(3)})
        error = np.abs(output - actual).round(3)
        residuals(actual, output).write_csv(ws.residuals_csv)
        pl.DataFrame(schema={"actual": pl.String, "predicted": pl.String}).write_csv(ws.confusion_csv)
        calibration(np.zeros(0, dtype=int), np.zeros((0, 1))).write_csv(ws.calibration_csv)
    else:
        labels = np.array(prep.classes, dtype=object)
        decided = predicted_classes(output, prep.decision_weights)
        plot = pl.DataFrame(
            {"actual": [str(v) for v in labels[actual]], "predicted": [str(v) for v in labels[decided]]}
        )
        error = (decided != actual).astype(float)  # 0/1: the error rate over time
        residuals(np.zeros(0), np.zeros(0)).write_csv(ws.residuals_csv)
        plot.write_csv(ws.confusion_csv)
    if times is not None:
        plot = plot.with_columns(pl.Series(EVENT_TIME, times))
    plot.with_columns(abs_error=pl.Series(error)).write_csv(ws.predictions_csv)


def _unchosen_candidates(ws: Workspace, index: dict[str, Any] | None) -> dict[str, Any]:
    """The train stage's candidates other than the chosen one (`models/candidates/index.json`), by file."""
    entries = [] if index is None else index["candidates"]
    return {e["file"]: load_candidate(ws.models_dir / e["file"]) for e in entries if not e["chosen"]}


def _candidate_index(ws: Workspace) -> dict[str, Any] | None:
    """`models/candidates/index.json`, or None for a model trained before candidates were listed."""
    index_file = ws.candidates / "index.json"
    if not index_file.exists():
        return None
    return io.read_json(index_file, ModelError, subject="the list of candidates is ")


def write_leaderboard(
    ws: Workspace, index: dict[str, Any] | None, chosen: dict[str, Any], others: dict[str, dict[str, Any]]
) -> None:
    """`metrics/leaderboard.json`: the train stage's candidates (`index`), each with its test metrics: the
    chosen one's are the model's (`chosen`), the others' (`others`, by file) scored here."""
    if index is None:
        return
    name = index["metric"]
    rows = []
    for entry in index["candidates"]:
        scores = chosen if entry["chosen"] else others[entry["file"]]
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
