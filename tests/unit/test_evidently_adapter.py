"""The Evidently adapter on synthetic windows (drift, thresholds, labels, schema drift, persistence), and the
pure window selection that feeds it."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from evergreen.config import MonitorConfig, WindowConfig, parse_params
from evergreen.data.schema import EVENT_TIME
from evergreen.model.metrics import classification_metrics
from evergreen.monitoring.drift import column_drift
from evergreen.monitoring.window import select_window
from tests.harness import imported_when_used

adapter = imported_when_used("evergreen.monitoring.evidently_adapter")
report_files = imported_when_used("evergreen.monitoring.report_files")

N = 2000
SEASONS = [1, 2, 3, 4]
WEATHER = ["clear", "mist", "rain"]
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _data(task: str = "regression"):
    target = {"name": "cnt", "type": "float", "role": "target"}
    if task == "classification":
        target = {"name": "busy", "type": "str", "role": "target", "allowed": ["low", "high"]}
    raw = {
        "data": {
            "source": "unused.csv",
            "task": task,
            "columns": [
                {"name": "rid", "type": "int", "role": "id"},
                {"name": "temp", "type": "float", "role": "feature"},
                {"name": "hum", "type": "float", "role": "feature"},
                {"name": "season", "type": "int", "role": "feature", "kind": "categorical", "allowed": SEASONS},
                {"name": "weather", "type": "str", "role": "feature", "allowed": WEATHER},
                target,
            ],
        }
    }
    return parse_params(raw).data


def _monitor(**policy) -> MonitorConfig:
    return MonitorConfig.model_validate({"policy": policy, "max_rows": 100_000})


def _features(seed: int, n: int = N, temp_shift: float = 0.0, season_p=None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "temp": rng.normal(0.5 + temp_shift, 0.15, n),
        "hum": rng.uniform(0.2, 0.9, n),
        "season": rng.choice(SEASONS, n, p=season_p or [0.25] * 4),
        "weather": rng.choice(WEATHER, n, p=[0.6, 0.3, 0.1]),
    }


def _reference(seed: int = 1) -> pl.DataFrame:
    f = _features(seed)
    cnt = 100 * f["temp"] + 20 * f["season"]
    times = [START - dt.timedelta(days=400) + dt.timedelta(hours=i) for i in range(N)]
    return pl.DataFrame({"rid": np.arange(N), **f, "cnt": cnt, EVENT_TIME: times, "prediction": cnt + 1.0})


def _log(seed: int = 2, versions=("v1",), labelled: float = 0.0, n: int = N, **shift) -> pl.DataFrame:
    """A frame shaped like `read_log`: features plus the request metadata, `label` null until feedback."""
    f = _features(seed, n, **shift)
    rng = np.random.default_rng(seed + 100)
    prediction = 100 * f["temp"] + 20 * f["season"]
    version = np.array(versions)[np.arange(n) % len(versions)]
    noise = np.where(version == versions[0], 5.0, 15.0)  # a later version is worse
    label = prediction + rng.normal(0, 1, n) * noise
    has_label = rng.uniform(size=n) < labelled
    return pl.DataFrame(
        {
            "request_id": [f"r{i // 10}" for i in range(n)],
            "row": np.arange(n) % 10,
            "time": [START + dt.timedelta(seconds=30 * i) for i in range(n)],
            "model_version": version,
            **f,
            "prediction": prediction,
            "probabilities": pl.Series([None] * n, dtype=pl.String),
            "label": pl.Series(np.where(has_label, label, np.nan)).fill_nan(None),
            "label_time": pl.Series([None] * n, dtype=pl.Datetime("us", "UTC")),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return _reference()


# ----------------------------------------------------------------------------------------------- drift
def test_no_drift_flags_nothing(reference):
    summary, snapshot = adapter.compute_report(reference, _log(), _data(), _monitor(), champion="v1")
    assert snapshot is not None
    assert [f.column for f in summary.features] == ["temp", "hum", "season", "weather"]
    assert summary.drift_share == 0 and summary.drifted_features == []
    assert {f.column: f.method for f in summary.features} == {
        "temp": "wasserstein",
        "hum": "wasserstein",
        "season": "jensenshannon",
        "weather": "jensenshannon",
    }
    assert all(f.score < f.threshold == 0.1 for f in summary.features)
    assert summary.prediction is not None and summary.prediction.method == "wasserstein"
    assert not summary.prediction.drifted
    assert (summary.rows, summary.reference_rows, summary.champion) == (N, N, "v1")
    assert summary.window_start == START.isoformat()
    assert summary.performance == [] and summary.missing_columns == [] and summary.unexpected_columns == []


def test_shifted_numeric_and_categorical_features_are_flagged(reference):
    current = _log(temp_shift=0.1, season_p=[0.55, 0.15, 0.15, 0.15])
    summary, _ = adapter.compute_report(reference, current, _data(), _monitor(), champion="v1")
    by_name = {f.column: f for f in summary.features}
    assert summary.drifted_features == ["temp", "season"]
    assert by_name["temp"].method == "wasserstein" and by_name["temp"].score > by_name["temp"].threshold
    assert by_name["season"].method == "jensenshannon" and by_name["season"].score > 0.1
    assert not by_name["hum"].drifted and not by_name["weather"].drifted
    assert summary.drift_share == 0.5
    assert summary.prediction is not None and summary.prediction.drifted  # the prediction follows temp


def test_per_feature_threshold_overrides_the_default(reference):
    current = _log(temp_shift=0.1)
    config = _monitor(feature_threshold=0.1, feature_thresholds={"temp": 5.0, "hum": 1e-6})
    summary, _ = adapter.compute_report(reference, current, _data(), config)
    by_name = {f.column: f for f in summary.features}
    assert by_name["temp"].threshold == 5.0 and not by_name["temp"].drifted  # shifted, but tolerated
    assert by_name["hum"].threshold == 1e-6 and by_name["hum"].drifted  # unshifted, but intolerant
    assert by_name["season"].threshold == 0.1 and not by_name["season"].drifted


# ----------------------------------------------------------------------------------------- performance
def test_labels_give_performance_per_model_version(reference):
    current = _log(versions=("v1", "v2"), labelled=0.5)
    summary, snapshot = adapter.compute_report(
        reference, current, _data(), _monitor(), champion="v1", reference_metrics={"rmse": 4.2, "note": "x"}
    )
    assert [p.model_version for p in summary.performance] == ["v1", "v2"]
    labelled = current.filter(pl.col("label").is_not_null())
    for p in summary.performance:
        rows = labelled.filter(pl.col("model_version") == p.model_version)
        assert p.rows == rows.height
        expected = float(np.sqrt(((rows["label"] - rows["prediction"]) ** 2).mean()))
        assert p.metrics["rmse"] == pytest.approx(expected)
    v1, v2 = summary.performance
    assert v1.metrics["rmse"] < 7 < 12 < v2.metrics["rmse"]
    assert summary.champion_performance() == v1
    assert summary.reference_metrics == {"rmse": 4.2}
    # Evidently's regression preset is in the report, on the labelled rows only
    metrics = snapshot.dict()["metrics"]
    rmse = next(m["value"] for m in metrics if m["config"]["type"] == "evidently:metric_v2:RMSE")
    all_labelled = float(np.sqrt(((labelled["label"] - labelled["prediction"]) ** 2).mean()))
    assert rmse == pytest.approx(all_labelled)


def test_no_labels_means_no_performance_section(reference):
    _, snapshot = adapter.compute_report(reference, _log(), _data(), _monitor())
    types = {m["config"]["type"] for m in snapshot.dict()["metrics"]}
    assert "evidently:metric_v2:RMSE" not in types


def test_classification_labels_give_accuracy_per_version():
    rng = np.random.default_rng(5)
    data = _data("classification")
    reference = (
        _reference()
        .drop("cnt")
        .with_columns(
            busy=pl.Series(rng.choice(["low", "high"], N)), prediction=pl.Series(rng.choice(["low", "high"], N))
        )
    )
    current = _log(versions=("v1", "v2"), labelled=0.4).with_columns(
        prediction=pl.Series(rng.choice(["low", "high"], N)), label=pl.Series(rng.choice(["low", "high"], N))
    )
    current = current.with_columns(pl.when(pl.col("row") < 5).then(pl.col("label")).alias("label"))
    summary, snapshot = adapter.compute_report(reference, current, data, _monitor(), champion="v1")
    assert summary.prediction is not None and summary.prediction.method == "jensenshannon"
    assert [p.model_version for p in summary.performance] == ["v1", "v2"]
    assert all(0.3 < p.metrics["accuracy"] < 0.7 and "f1_macro" in p.metrics for p in summary.performance)
    types = {m["config"]["type"] for m in snapshot.dict()["metrics"]}
    assert "evidently:metric_v2:Accuracy" in types


def _classified(classes: list, seed: int, versions=("v1", "v2"), n: int = N, sharp: float = 4.0) -> pl.DataFrame:
    """A log window of a classifier: probabilities in the model's class order (JSON, as `read_log` gives
    them), the most probable class as prediction, and labels drawn from the probabilities of the first
    version (a calibrated model) and at random for later versions (a useless one)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, sharp, (n, len(classes)))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = _log(seed=seed, versions=versions, n=n)
    good = frame["model_version"].to_numpy() == versions[0]
    drawn = [rng.choice(len(classes), p=p) for p in probabilities]
    label = np.where(good, drawn, rng.integers(0, len(classes), n))
    return frame.with_columns(
        prediction=pl.Series([classes[i] for i in probabilities.argmax(axis=1)]),
        probabilities=pl.Series([json.dumps(p) for p in probabilities.tolist()]),
        label=pl.Series([classes[i] for i in label]),
    )


def _classifier_data(classes: list) -> object:
    data = _data("classification")
    target = data.target.model_copy(update={"type": "int" if isinstance(classes[0], int) else "str",
                                            "allowed": classes})  # fmt: skip
    return data.model_copy(update={"columns": [*data.columns[:-1], target]})


@pytest.mark.parametrize("classes", [["low", "high"], [3, 5, 7]], ids=["binary", "multiclass"])
def test_classification_performance_per_version_uses_the_served_probabilities(classes):
    data = _classifier_data(classes)
    reference = _classified(classes, seed=11, versions=("v1",)).rename({"label": "busy"})
    current = _classified(classes, seed=12)
    summary, snapshot = adapter.compute_report(
        reference,
        current,
        data,
        _monitor(),
        champion="v1",
        reference_metrics={"log_loss": 0.3, "accuracy": 0.8},
        metric="log_loss",
        classes={"v1": classes, "v2": classes},
    )
    v1, v2 = summary.performance
    assert (v1.model_version, v2.model_version) == ("v1", "v2")
    for p in (v1, v2):
        assert set(p.metrics) == {"accuracy", "f1_macro", "log_loss", "roc_auc"}
        rows = current.filter(pl.col("model_version") == p.model_version)
        probabilities = np.array([json.loads(x) for x in rows["probabilities"]])
        actual = np.array([classes.index(v) for v in rows["label"]])
        assert p.metrics == pytest.approx(classification_metrics(actual, probabilities, classes))
    # calibrated labels give a low log loss and a high AUC; random labels do not
    assert v1.metrics["log_loss"] < 0.6 < 1.5 < v2.metrics["log_loss"]
    assert v1.metrics["roc_auc"] > 0.85 and v2.metrics["roc_auc"] < 0.6
    assert summary.metric == "log_loss"
    assert summary.judged() == ("log_loss", v1.metrics["log_loss"], 0.3)
    # Evidently's own classification metrics, probabilities included, are in the report
    values = {m["config"]["type"].rsplit(":", 1)[-1]: m["value"] for m in snapshot.dict()["metrics"]}
    assert {"Accuracy", "LogLoss", "RocAuc"} <= set(values)
    labelled = np.array([classes.index(v) for v in current["label"]])
    everything = np.array([json.loads(x) for x in current["probabilities"]])
    assert values["LogLoss"] == pytest.approx(skm.log_loss(labelled, everything, labels=range(len(classes))))


def test_classification_without_probabilities_or_classes_is_judged_on_labels():
    classes = ["low", "high"]
    data = _classifier_data(classes)
    reference = _classified(classes, seed=11, versions=("v1",)).rename({"label": "busy"})
    current = _classified(classes, seed=12).with_columns(
        probabilities=pl.when(pl.col("row") == 0).then(None).otherwise(pl.col("probabilities"))
    )
    summary, snapshot = adapter.compute_report(
        reference, current, data, _monitor(), champion="v1", metric="log_loss", classes={"v1": classes}
    )
    for p in summary.performance:  # v1 has a row without probabilities, v2 no known classes
        assert set(p.metrics) == {"accuracy", "f1_macro"}
    assert summary.judged() is None  # no log loss to judge by: no verdict, rather than a wrong one
    types = {m["config"]["type"].rsplit(":", 1)[-1] for m in snapshot.dict()["metrics"]}
    assert "Accuracy" in types and "LogLoss" not in types


def test_a_label_outside_the_models_classes_counts_as_a_confident_miss():
    classes = ["low", "high"]
    reference = _classified(classes, seed=11, versions=("v1",)).rename({"label": "busy"})
    current = _classified(classes, seed=12, versions=("v1",), n=200)
    stray = current.with_columns(label=pl.when(pl.col("row") == 0).then(pl.lit("medium")).otherwise("label"))

    def performance(window: pl.DataFrame):
        summary, _ = adapter.compute_report(
            reference, window, _classifier_data(classes), _monitor(), champion="v1", classes={"v1": classes}
        )
        assert summary.metric == "accuracy"  # no metric given: the task's default
        [p] = summary.performance
        return p.metrics

    clean, with_stray = performance(current), performance(stray)
    assert with_stray["accuracy"] < clean["accuracy"]
    # 20 of 200 rows at a probability of about zero (clipped at 1e-12): log loss grows by about 2.8
    assert with_stray["log_loss"] > clean["log_loss"] + 2


def test_a_window_evidentlys_classification_preset_cannot_score_still_gets_a_report():
    """Evidently 0.7.23 raises on a multiclass window that holds two classes only (KeyError: 1): such a
    window's report leaves the preset out, and the summary still has each version's performance."""
    classes = [3, 5, 7]
    reference = _classified(classes, seed=11, versions=("v1",)).rename({"label": "busy"})
    two = (
        _classified(classes, seed=12)
        .filter(pl.col("prediction") != 7)
        .with_columns(label=pl.when(pl.col("label") == 7).then(3).otherwise("label"))
    )
    summary, snapshot = adapter.compute_report(
        reference, two, _classifier_data(classes), _monitor(), champion="v1", classes={"v1": classes, "v2": classes}
    )
    assert snapshot is not None and [p.model_version for p in summary.performance] == ["v1", "v2"]
    assert all("log_loss" in p.metrics for p in summary.performance)
    types = {m["config"]["type"].rsplit(":", 1)[-1] for m in snapshot.dict()["metrics"]}
    assert "Accuracy" not in types and "ValueDrift" in types


# -------------------------------------------------------------------------------------- schema and size
def test_missing_feature_is_reported_and_skipped(reference):
    current = _log().drop("hum").with_columns(weather=pl.lit(None, dtype=pl.String))
    summary, _ = adapter.compute_report(reference, current, _data(), _monitor())
    assert summary.missing_columns == ["hum", "weather"]  # absent, and present without a single value
    assert [f.column for f in summary.features] == ["temp", "season"]
    assert summary.null_share["weather"] == 1.0 and "hum" not in summary.null_share


def test_undeclared_column_is_unexpected_and_metadata_is_not(reference):
    current = _log().with_columns(colour=pl.lit("red"), rid=pl.lit(7))
    summary, _ = adapter.compute_report(reference, current, _data(), _monitor())
    assert summary.unexpected_columns == ["colour"]  # `rid` is declared (id), request metadata is known
    assert "colour" not in [f.column for f in summary.features]


def test_null_share_counts_missing_values(reference):
    current = _log().with_columns(
        season=pl.when(pl.col("row") < 2).then(None).otherwise(pl.col("season")),
        temp=pl.when(pl.col("row") == 9).then(float("nan")).otherwise(pl.col("temp")),
    )
    summary, _ = adapter.compute_report(reference, current, _data(), _monitor())
    assert summary.null_share["season"] == pytest.approx(0.2)
    assert summary.null_share["temp"] == pytest.approx(0.1)
    assert summary.null_share["hum"] == 0.0
    assert not any(f.drifted for f in summary.features)  # nulls are a quality issue, not drift


def test_large_window_is_sampled_with_a_seed(reference):
    current = _log(n=5000)
    config = MonitorConfig(max_rows=1000)
    first, _ = adapter.compute_report(reference, current, _data(), config, seed=3)
    again, _ = adapter.compute_report(reference, current, _data(), config, seed=3)
    other, _ = adapter.compute_report(reference, current, _data(), config, seed=4)
    full, _ = adapter.compute_report(reference, current, _data(), _monitor())
    assert first.rows == 5000 and first.reference_rows == N  # the summary counts the whole window
    # the same seed samples the same rows; the scores may differ in the last bits, because numpy's dot product
    # sums in an order that depends on the arrays' memory alignment (seen: 7e-18 apart in a fresh venv)
    assert [f.score for f in first.features] == pytest.approx([f.score for f in again.features], rel=1e-12, abs=1e-15)
    assert [f.score for f in first.features] != [f.score for f in other.features]
    assert [f.score for f in first.features] != [f.score for f in full.features]
    assert first.drifted_features == full.drifted_features == []


def _judged(summary) -> list:
    return [*summary.features, *([summary.prediction] if summary.prediction else [])]


def _scores(summary) -> dict[str, float]:
    return {f.column: f.score for f in _judged(summary)}


def _flags(summary) -> dict[str, bool]:
    return {f.column: f.drifted for f in _judged(summary)}


@pytest.mark.parametrize("shift", [{}, {"temp_shift": 0.1, "season_p": [0.55, 0.15, 0.15, 0.15]}])
def test_drift_is_computed_as_evidently_computes_it(reference, shift):
    current = _log(**shift).with_columns(  # missing and infinite values, which both drop
        pl.when(pl.int_range(N) % 7 == 0).then(None).otherwise(pl.col("hum")).alias("hum"),
        pl.when(pl.int_range(N) % 11 == 0).then(float("inf")).otherwise(pl.col("temp")).alias("temp"),
        pl.when(pl.int_range(N) % 13 == 0).then(None).otherwise(pl.col("weather")).alias("weather"),
    )
    ours, _ = adapter.compute_report(reference, current, _data(), _monitor())
    theirs, _ = adapter.compute_report(reference, current, _data(), _monitor(), evidently_drift=True)
    assert ours.drifted_features == theirs.drifted_features == (["temp", "season"] if shift else [])
    assert _flags(ours) == _flags(theirs)
    assert _scores(ours) == pytest.approx(_scores(theirs), abs=1e-12)


def test_a_numeric_column_with_few_values_is_judged_by_its_frequencies(reference):
    """A numeric column with five values or fewer gets Jensen-Shannon on its values, as in Evidently."""
    ref = reference.with_columns(pl.col("hum").round(0))
    current = _log().with_columns((pl.col("hum") + 0.3).round(0))
    ours, _ = adapter.compute_report(ref, current, _data(), _monitor())
    theirs, _ = adapter.compute_report(ref, current, _data(), _monitor(), evidently_drift=True)
    hum = next(f for f in ours.features if f.column == "hum")
    assert hum.method == "jensenshannon" and hum.drifted
    assert hum.score == pytest.approx(_scores(theirs)["hum"], abs=1e-12)


def test_a_varied_numeric_column_is_binned_for_jensen_shannon_as_in_evidently():
    from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(0)
    ref, cur = pl.Series("x", rng.normal(0, 1, 3000)), pl.Series("x", rng.normal(0.3, 1.2, 5000))
    ours = column_drift("x", "jensenshannon", ref, cur, 0.1, numeric=True)
    theirs, _ = _jensenshannon(ref.to_pandas(), cur.to_pandas(), ColumnType.Numerical, 0.1)
    assert ours.score == pytest.approx(theirs, abs=1e-12) and ours.drifted == (theirs >= 0.1)


def test_a_column_drift_cannot_be_computed_without_values_or_with_an_unknown_method():
    values = pl.Series("x", [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no finite value"):
        column_drift("x", "wasserstein", values, pl.Series("x", [None, float("nan")]), 0.1, numeric=True)
    with pytest.raises(ValueError, match="'psi' is not computed here"):
        column_drift("x", "psi", values, values, 0.1, numeric=True)


def test_the_whole_window_is_judged_while_the_report_gets_a_sample(reference, monkeypatch):
    monkeypatch.setattr("evergreen.monitoring.evidently_adapter.REPORT_ROWS", 500)
    current = _log(temp_shift=0.05)
    summary, snapshot = adapter.compute_report(reference, current, _data(), _monitor())
    whole, _ = adapter.compute_report(reference, current, _data(), _monitor(), evidently_drift=True)  # all 2,000 rows
    metadata = snapshot.report.metadata
    assert (metadata["rows"], metadata["drift_rows"], metadata["report_rows"]) == (str(N), str(N), "500")
    assert _flags(summary) == _flags(whole)
    assert _scores(summary) == pytest.approx(_scores(whole), abs=1e-12)
    shown = {c: d.score for c, d in adapter.parse_drift(snapshot).items()}  # the report shows the sample's scores
    assert shown.keys() == _scores(summary).keys() and shown != pytest.approx(_scores(summary), abs=1e-6)


def test_empty_window_gives_a_summary_without_a_report(reference):
    summary, snapshot = adapter.compute_report(reference, _log().head(0), _data(), _monitor())
    assert snapshot is None
    assert summary.rows == 0 and summary.features == [] and summary.window_start is None


# ------------------------------------------------------------------------------------------------- persist
def test_report_is_saved_and_added_to_the_workspace(reference, tmp_path):
    summary, snapshot = adapter.compute_report(reference, _log(labelled=0.3), _data(), _monitor(), champion="v1")
    html, js = tmp_path / "reports" / "r.html", tmp_path / "reports" / "r.json"
    report_files.save_report(snapshot, html, js)
    assert html.stat().st_size > 10_000 and "<html" in html.read_text()[:1000].lower()
    saved = json.loads(js.read_text())
    drift = [m for m in saved["metrics"] if m["config"]["type"] == "evidently:metric_v2:ValueDrift"]
    assert {m["config"]["column"] for m in drift} == {"temp", "hum", "season", "weather", "prediction"}

    workspace = tmp_path / "workspace"
    assert report_files.list_snapshots(workspace, "evergreen") == []
    first = report_files.add_to_workspace(snapshot, workspace, "evergreen")
    _, later = adapter.compute_report(reference, _log(seed=9), _data(), _monitor(), champion="v1")
    second = report_files.add_to_workspace(later, workspace, "evergreen")
    assert sorted(report_files.list_snapshots(workspace, "evergreen")) == sorted([first, second])

    from evidently.ui.workspace import Workspace  # only to look at what the UI will read

    ws = Workspace(str(workspace))
    assert len(ws.search_project("evergreen")) == 1  # created once, reused by name
    project = ws.search_project("evergreen")[0]
    stored = ws.get_run(project.id, first)
    assert stored is not None and stored.metadata["champion"] == "v1"
    titles = [p.title for tab in [ws.get_dashboard(project.id)] for p in tab.panels]
    assert "Share of drifted features" in titles


# -------------------------------------------------------------------------------------------------- window
def _times(hours: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"time": [START + dt.timedelta(hours=h) for h in hours], "i": list(range(len(hours)))})


def test_window_last_rows_keeps_the_newest():
    log = _times([0, 1, 2, 3, 4])
    assert select_window(log, WindowConfig(last_rows=2))["i"].to_list() == [3, 4]
    assert select_window(log, WindowConfig(last_rows=None))["i"].to_list() == [0, 1, 2, 3, 4]


def test_window_last_hours_counts_back_from_the_newest_row_or_now():
    log = _times([0, 10, 20, 23, 24])
    by_log = WindowConfig(last_rows=None, last_hours=5)
    assert select_window(log, by_log)["i"].to_list() == [2, 3, 4]
    now = START + dt.timedelta(hours=22)
    assert select_window(log, by_log, now=now)["i"].to_list() == [2]
    naive = now.replace(tzinfo=None)  # taken in the log's zone (UTC)
    assert select_window(log, by_log, now=naive)["i"].to_list() == [2]


def test_window_rows_and_hours_together_and_unsorted_input():
    log = _times([24, 0, 23, 20, 10])
    both = WindowConfig(last_rows=2, last_hours=5)
    assert select_window(log, both)["i"].to_list() == [2, 0]
    assert select_window(log.head(0), both).height == 0


def test_window_needs_a_time_column():
    with pytest.raises(ValueError, match="no 'time' column"):
        select_window(pl.DataFrame({"t": [1]}), WindowConfig())
