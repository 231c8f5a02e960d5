"""The one module that imports Evidently: run a report, parse it, and read and write Evidently's own files.

Compute, then parse, then persist (STYLE.md, Monitoring): `compute_report` runs one Evidently 0.7 `Report`
over the champion's reference sample and the current window of the prediction log and returns the typed
summary with the snapshot; `parse_drift` reads a snapshot's drift back. Persisting is
`evergreen.monitoring.report_files` (where the files go, the lock, damaged files set aside), which reaches
Evidently's snapshot files and local workspace only through the functions at the end of this module. Nothing
else in Evergreen knows Evidently's API (it changed a lot between 0.4 and 0.7).

What the report holds:
- data drift of every declared feature (`DataDriftPreset`), with the method pinned per column to Evidently's
  large-data defaults (Wasserstein distance for numeric columns with more than five values, Jensen-Shannon
  distance otherwise) and the threshold from `monitor.policy` (`feature_threshold`, overridden per feature by
  `feature_thresholds`; the key `prediction` overrides the prediction's);
- prediction drift (`ValueDrift` on the `prediction` column);
- data quality: missing values per column (`MissingValueCount`); the summary's `null_share` is computed with
  polars on the whole window;
- when labels have arrived through feedback, Evidently's `RegressionPreset` or `ClassificationPreset` on the
  labelled rows (current) against the reference rows (in-sample). For classification the preset gets the
  class probabilities too (log loss, ROC AUC) when both frames carry them (`probabilities`, a JSON list in the
  model's class order, as the prediction log keeps it).

The summary's drift decisions are not parsed from the report: each column's distance is computed once, on every
row the check looks at, by `evergreen.monitoring.drift` (Evidently's definitions, the same methods and
thresholds), while the report draws its distributions from a sample of at most `REPORT_ROWS` (issue 12: 17 s for
Evidently on a 1M-row window, mostly each column's drift computed three times on pandas copies).

Performance per model version (the summary's `performance`) is not Evidently's either: it is
`evergreen.monitoring.performance`, scored with the project's own metric functions.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Regression, Report
from evidently.core.report import Snapshot
from evidently.core.serialization import SnapshotModel
from evidently.metrics import MissingValueCount, ValueDrift
from evidently.presets import ClassificationPreset, DataDriftPreset, RegressionPreset
from evidently.sdk.models import PanelMetric
from evidently.sdk.panels import line_plot_panel
from evidently.ui.workspace import Workspace

from evergreen.config import METRICS, MONITORED, Column, DataConfig, MonitorConfig
from evergreen.data.schema import EVENT_TIME
from evergreen.monitoring.drift import column_drift
from evergreen.monitoring.performance import class_text, probability_matrix, score_versions
from evergreen.monitoring.summary import ColumnDrift, MonitorSummary
from evergreen.prediction_log.base import LogColumns

__all__ = [
    "REPORT_ROWS",
    "Snapshot",
    "Workspace",
    "add_run",
    "compute_report",
    "damaged_files",
    "list_runs",
    "load_workspace",
    "parse_drift",
    "write_snapshot",
]

PREDICTION = LogColumns.PREDICTION
PROBABILITIES = LogColumns.PROBABILITIES
LABEL = LogColumns.LABEL
VERSION = LogColumns.MODEL_VERSION
TIME = LogColumns.TIME
# columns the prediction log adds to the features (evergreen.prediction_log.read.read_log): never "unexpected"
LOG_METADATA = LogColumns.METADATA
_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"
# Evidently's name of each metric Evergreen can judge by (its dashboards plot Evidently's value over the window)
_EVIDENTLY_METRIC = {
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R2Score",
    "accuracy": "Accuracy",
    "f1_macro": "F1Score",
    "log_loss": "LogLoss",
    "roc_auc": "RocAuc",
}
_MAX_CATEGORICAL_NUMERIC = 5  # Evidently treats numeric columns with this many values or fewer as categorical
# Evidently's report costs about 2 s of CPU at 50k rows, 3.4 s at 100k and 17 s at 1M (pandas copies, each
# column's drift three times, plots), while its binned distributions look the same on more rows: it draws them
# from a sample of the rows the decisions are computed on (issue 12, BENCHMARKS.md)
REPORT_ROWS = 50_000
_SNAPSHOTS, _PROJECT_FILE = "snapshots", "metadata.json"  # Evidently 0.7's local layout: <project>/snapshots/


# ------------------------------------------------------------------------------------------------ compute
def compute_report(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    data: DataConfig,
    config: MonitorConfig,
    champion: str | None = None,
    reference_metrics: dict[str, Any] | None = None,
    seed: int = 0,
    metric: str | None = None,
    classes: Mapping[str, Sequence[Any]] | None = None,
    evidently_drift: bool = False,
) -> tuple[MonitorSummary, Snapshot | None]:
    """Compare the current window of the prediction log with the champion's reference sample.

    `reference` is the registry's `reference.parquet` (clean layout plus `prediction`, and for classification
    `probabilities` when the caller added them); `current` is a window of `read_log` (features plus request
    metadata, `label` null until feedback). Windows (and references) longer than `config.max_rows` are sampled
    with `seed` before the drift check. The per-column drift is computed on those rows (all of them) with
    `evergreen.monitoring.drift`, exactly as Evidently defines it; Evidently's report, the UI, is run on at most
    `REPORT_ROWS` of them (the same rows when there are no more), so its scores can differ from the summary's by
    the sampling error (0.013 at most on the benchmark's windows). `evidently_drift=True` takes the
    decisions from Evidently's report on all `max_rows` rows instead: the path before issue 12, kept for the
    benchmark and as the reference the tests compare with. Declared features absent from the window, or without
    a single value in it, are listed in `missing_columns` and not judged. An empty window gives a summary with
    `rows=0` and no snapshot.

    `metric` is the metric monitoring judges by (the declared `promote.metric`; the task's default when None).
    `classes` maps a model version to its class labels in output order (its signature): how the log's
    probabilities are read. A version without them is judged on its predicted labels only.
    """
    classes = classes or {}
    features = [c for c in data.features if _judgeable(c.name, reference, current)]
    base = _window_facts(reference, current, data, features, champion, reference_metrics, metric, classes)
    if current.height == 0 or not features:
        return MonitorSummary(**base), None

    ref, cur = _sample(reference, config.max_rows, seed), _sample(current, config.max_rows, seed)
    judged = _judged_columns(features, data.task, ref, cur)
    methods = {name: _method(name, numeric, ref, cur) for name, numeric in judged}
    policy = config.policy
    thresholds = {name: policy.feature_thresholds.get(name, policy.feature_threshold) for name, _ in judged}

    # the report (the UI) draws its distributions from a sample; the decisions use every row of `ref`, `cur`
    rows = config.max_rows if evidently_drift else min(config.max_rows, REPORT_ROWS)
    ref_report, cur_report = _sample(ref, rows, seed), _sample(cur, rows, seed)
    metadata = {
        "champion": champion or "",
        "task": data.task,
        "rows": str(current.height),
        "drift_rows": str(cur.height),  # the rows the decisions were computed on
        "report_rows": str(cur_report.height),  # the rows this report's distributions and scores come from
        "metric": base["metric"],
    }
    window = base["window_end"]
    # numpy and polars release the GIL: the distances run on a second core while Evidently builds its report
    with ThreadPoolExecutor(max_workers=1) as pool:
        exact = pool.submit(_drifts, ref, cur, judged, methods, thresholds) if not evidently_drift else None
        snapshot = _run_report(
            ref_report,
            cur_report,
            data,
            features,
            methods,
            thresholds,
            policy.drift_share,
            classes,
            metadata,
            _naive_utc(window) if window else None,
        )
    drifts = exact.result() if exact is not None else parse_drift(snapshot)
    summary = MonitorSummary(
        **base,
        features=[drifts[c.name] for c in features if c.name in drifts],
        prediction=drifts.get(PREDICTION) if PREDICTION in methods else None,
    )
    return summary, snapshot


def _window_facts(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    data: DataConfig,
    features: list[Column],
    champion: str | None,
    reference_metrics: dict[str, Any] | None,
    metric: str | None,
    classes: Mapping[str, Sequence[Any]],
) -> dict[str, Any]:
    """What the summary says of the whole window besides drift: its size and bounds, the schema's changes,
    missing values and each version's performance (an empty window, or one without features, stops here)."""
    known = set(data.names) | LOG_METADATA | {EVENT_TIME}
    return {
        "rows": current.height,
        "reference_rows": reference.height,
        **_window_bounds(current),
        "champion": champion,
        "missing_columns": [c.name for c in data.features if c not in features],
        "unexpected_columns": [c for c in current.columns if c not in known],
        "null_share": _null_share(current, [c.name for c in data.features if c.name in current.columns]),
        "performance": score_versions(current, data.task, classes),
        "reference_metrics": _floats(reference_metrics or {}),
        "metric": metric or MONITORED[data.task],
    }


def _judged_columns(features: list[Column], task: str, ref: pl.DataFrame, cur: pl.DataFrame) -> list[tuple[str, bool]]:
    """(name, numeric) of each column the drift check judges: the features, then the prediction when both
    frames hold one."""
    judged = [(c.name, c.kind == "numeric") for c in features]
    return judged + ([(PREDICTION, task == "regression")] if _judgeable(PREDICTION, ref, cur) else [])


def _drifts(
    ref: pl.DataFrame,
    cur: pl.DataFrame,
    judged: list[tuple[str, bool]],
    methods: dict[str, str],
    thresholds: dict[str, float],
) -> dict[str, ColumnDrift]:
    """Each judged column's drift on every row of `ref` and `cur`, computed once (`evergreen.monitoring.drift`)."""
    return {
        name: column_drift(name, methods[name], ref[name], cur[name], thresholds[name], numeric)
        for name, numeric in judged
    }


def _run_report(
    ref: pl.DataFrame,
    cur: pl.DataFrame,
    data: DataConfig,
    features: list[Column],
    methods: dict[str, str],
    thresholds: dict[str, float],
    drift_share: float,
    classes: Mapping[str, Sequence[Any]],
    metadata: dict[str, str],
    timestamp: dt.datetime | None,
) -> Snapshot:
    """Evidently's report on (a sample of) the window: drift with the pinned methods and thresholds, missing
    values, and the task's preset when labels have arrived."""
    champion = metadata["champion"] or None
    target = data.target.name
    labelled = LABEL in cur.columns and cur[LABEL].null_count() < cur.height and target in ref.columns
    has_prediction = PREDICTION in methods
    cur = cur.rename({LABEL: target}) if labelled else cur
    columns = [c.name for c in features] + ([PREDICTION] if has_prediction else []) + ([target] if labelled else [])
    ref_pd = _to_pandas(ref, columns, features, data)
    cur_pd = _to_pandas(cur, columns, features, data)
    labels = _classes(data, ref_pd, cur_pd) if labelled and data.task == "classification" else []
    probas = _probability_columns(ref, cur, champion, classes, labels, columns) if labels else []
    if probas:
        ref_pd, cur_pd = (_with_probabilities(f, p, probas) for f, p in ((ref, ref_pd), (cur, cur_pd)))
    definition = _definition(features, data, has_prediction, labelled, labels, probas)

    feature_names = [c.name for c in features]
    metrics: list[Any] = [
        DataDriftPreset(
            columns=feature_names,
            per_column_method={name: methods[name] for name in feature_names},
            per_column_threshold={name: thresholds[name] for name in feature_names},
            drift_share=drift_share,
        )
    ]
    if has_prediction:
        metrics.append(ValueDrift(column=PREDICTION, method=methods[PREDICTION], threshold=thresholds[PREDICTION]))
    metrics += [MissingValueCount(column=name) for name in columns if name != target]
    if labelled and has_prediction:
        if data.task == "regression":
            metrics.append(RegressionPreset())
        elif _evidently_can_classify(ref_pd, cur_pd, target, labels):
            metrics.append(ClassificationPreset())

    report = Report(
        metrics,
        metadata=metadata,
        tags=[champion] if champion else [],
        include_tests=True,  # the ValueDrift tests carry Evidently's drift decision per column
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn/scipy chatter on small groups; results are parsed below
        return report.run(
            Dataset.from_pandas(cur_pd, data_definition=definition),
            Dataset.from_pandas(ref_pd, data_definition=definition),
            timestamp=timestamp,
        )


def _judgeable(name: str, reference: pl.DataFrame, current: pl.DataFrame) -> bool:
    """A feature can be judged when both frames hold it with at least one value."""
    return all(name in f.columns and f.height > f[name].null_count() for f in (reference, current))


def _window_bounds(current: pl.DataFrame) -> dict[str, str | None]:
    if TIME not in current.columns or current.height == 0:
        return {"window_start": None, "window_end": None}
    start, end = current[TIME].min(), current[TIME].max()
    return {"window_start": _iso(start), "window_end": _iso(end)}


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else None


def _naive_utc(iso: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(iso)
    return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when


def _null_share(frame: pl.DataFrame, columns: list[str]) -> dict[str, float]:
    """Share of missing values (null, or NaN in float columns) per column, over the whole window."""
    columns = [*columns, *([PREDICTION] if PREDICTION in frame.columns else [])]
    if frame.height == 0:
        return {c: 0.0 for c in columns}

    def missing(name: str) -> pl.Expr:
        col = pl.col(name)
        return (col.is_null() | col.is_nan()) if frame.schema[name].is_float() else col.is_null()

    row = frame.select(missing(c).mean().alias(c) for c in columns).row(0, named=True)
    return {c: float(v) for c, v in row.items()}


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _sample(frame: pl.DataFrame, max_rows: int, seed: int) -> pl.DataFrame:
    """At most `max_rows` rows, drawn without replacement (seeded): enough to estimate a distance well."""
    return frame.sample(n=max_rows, seed=seed) if frame.height > max_rows else frame


def _method(name: str, numeric: bool, reference: pl.DataFrame, current: pl.DataFrame) -> str:
    """Evidently's default on large data, pinned so that small windows keep the same method and threshold.

    (On 1,000 reference rows or fewer Evidently would switch to p-value tests, whose threshold means the
    opposite: a feature threshold of 0.1 has to mean the same thing in every run.)
    """
    if not numeric:
        return "jensenshannon"
    # the reference alone is enough (and ten times cheaper than both) when it already has more values
    for frames in ((reference,), (reference, current)):
        values = pl.concat([f[name].cast(pl.Float64) for f in frames])
        if values.drop_nulls().n_unique() > _MAX_CATEGORICAL_NUMERIC:
            return "wasserstein"
    return "jensenshannon"


def _classes(data: DataConfig, reference: Any, current: Any) -> list[str]:
    """The class labels as text (how `_to_pandas` passes them), declared order first."""
    declared = [class_text(v) for v in data.target.allowed or []]
    target = data.target.name
    seen = set(reference[target].dropna()) | set(current[target].dropna())
    seen |= set(reference[PREDICTION].dropna()) | set(current[PREDICTION].dropna())
    return declared + sorted(seen - set(declared))


def _evidently_can_classify(reference: Any, current: Any, target: str, classes: list[str]) -> bool:
    """Whether Evidently 0.7.23's `ClassificationPreset` can score these frames (checked by hand).

    It raises (`KeyError`, or "Cannot compute TPR") on windows a small or skewed stream produces every day:
    binary, when a frame's labels hold one class only; multiclass, when the window holds two classes or fewer
    (labels and predictions together), or when a class appears that the reference's labels lack. Such a
    window's report leaves the preset out; the per-version performance in the summary is computed anyway.
    """
    seen = [set(f[target].dropna()) | set(f[PREDICTION].dropna()) for f in (reference, current)]
    if len(classes) == 2:
        return all(set(f[target].dropna()) == set(classes) for f in (reference, current))
    return len(seen[1]) > 2 and seen[0] | seen[1] <= set(reference[target].dropna())


def _probability_columns(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    champion: str | None,
    classes: Mapping[str, Sequence[Any]],
    labels: list[str],
    columns: list[str],
) -> list[str]:
    """The class labels (as text) to pass Evidently as probability columns, or [] when it cannot have them.

    Both frames must carry `probabilities` for every row, every labelled row of the window must come from a
    version with the champion's classes (one column per class means one class order), every label must be
    one of them, and no class may share its name with a column Evidently already has: Evidently names a
    multiclass probability column after its class.
    """
    order = [class_text(c) for c in classes.get(champion or "", [])]
    if not order or not set(labels) <= set(order) or set(order) & set(columns):
        return []
    versions = set(current[VERSION].unique().to_list()) if VERSION in current.columns else set()
    if any([class_text(c) for c in classes.get(str(v), [])] != order for v in versions):
        return []
    for frame in (reference, current):
        if PROBABILITIES not in frame.columns or frame[PROBABILITIES].null_count():
            return []
    return order


def _with_probabilities(frame: pl.DataFrame, pandas_frame: Any, order: list[str]) -> Any:
    """`pandas_frame` plus one column per class (named after it) from `frame`'s probabilities."""
    matrix = probability_matrix(frame[PROBABILITIES], len(order))
    out = pandas_frame.copy()
    for i, name in enumerate(order):
        out[name] = matrix[:, i]
    return out


def _definition(
    features: list[Column],
    data: DataConfig,
    prediction: bool,
    labelled: bool,
    classes: list[str],
    probas: list[str],
) -> DataDefinition:
    numeric = [c.name for c in features if c.kind == "numeric"] + probas
    categorical = [c.name for c in features if c.kind != "numeric"]
    outcome = ([PREDICTION] if prediction else []) + ([data.target.name] if labelled else [])
    if data.task == "regression":
        numeric += outcome
    else:
        categorical += outcome
    tasks: dict[str, Any] = {}
    if labelled and prediction:
        target = data.target.name
        if data.task == "regression":
            tasks["regression"] = [Regression(target=target, prediction=PREDICTION)]
        else:
            # two classes are binary for Evidently, which then needs the positive one: the last declared
            # (the model's last class when probabilities come with the labels: its probability column is used)
            if len(classes) == 2:
                positive = probas[-1] if probas else classes[-1]
                probability = positive if probas else None
                task = BinaryClassification(
                    target=target, prediction_labels=PREDICTION, pos_label=positive, prediction_probas=probability
                )
            else:
                task = MulticlassClassification(
                    target=target, prediction_labels=PREDICTION, prediction_probas=probas or None
                )
            tasks["classification"] = [task]
    return DataDefinition(numerical_columns=numeric, categorical_columns=categorical, **tasks)


def _to_pandas(frame: pl.DataFrame, columns: list[str], features: list[Column], data: DataConfig) -> Any:
    """The columns Evidently needs, numeric as float and categorical as text, so both frames agree on types
    (a categorical int column with nulls would otherwise turn float in one frame and stay int in the other)."""
    kinds = {c.name: c.kind for c in features}
    outcome_numeric = data.task == "regression"

    def cast(name: str) -> pl.Expr:
        numeric = kinds[name] == "numeric" if name in kinds else outcome_numeric
        return pl.col(name).cast(pl.Float64 if numeric else pl.String)

    return frame.select(cast(c) for c in columns).to_pandas()


# -------------------------------------------------------------------------------------------------- parse
def parse_drift(snapshot: Snapshot) -> dict[str, ColumnDrift]:
    """Per-column drift from a snapshot's `ValueDrift` results: method, score, threshold and Evidently's
    own decision (its drift test failed)."""
    result = snapshot.dict()
    failed = {
        t["metric_config"]["metric_id"]: t["status"] == "FAIL"
        for t in result["tests"]
        if t.get("metric_config", {}).get("params", {}).get("type") == _VALUE_DRIFT
    }
    drifts = {}
    for metric in result["metrics"]:
        config = metric.get("config", {})
        if config.get("type") != _VALUE_DRIFT:
            continue
        score, threshold = float(metric["value"]), float(config["threshold"])
        drifts[config["column"]] = ColumnDrift(
            column=config["column"],
            method=str(config["method"]),
            score=score,
            threshold=threshold,
            drifted=failed.get(metric["id"], score >= threshold),
        )
    return drifts


# --------------------------------------------------------------------- Evidently's files and workspace
def write_snapshot(snapshot: Snapshot, html_path: Path, json_path: Path) -> None:
    """Write the report as a standalone HTML page and as Evidently's JSON (metrics and tests)."""
    snapshot.save_html(str(html_path))  # Evidently writes only when given a str
    snapshot.save_json(str(json_path))


def load_workspace(root: Path) -> Workspace:
    """Evidently's local workspace at `root` (created when absent).

    Evidently reads every project's metadata and every snapshot here, and raises a `ValueError`
    (JSONDecodeError, its own "malformed", pydantic's ValidationError) when one of them cannot be read:
    `damaged_files` says which.
    """
    return Workspace.create(str(root))


def damaged_files(root: Path, skip: str) -> list[Path]:
    """Project folders with unreadable metadata, and snapshot files Evidently cannot parse, under `root`
    (a folder named `skip` left out)."""
    damaged: list[Path] = []
    for project in sorted(p for p in root.iterdir() if p.is_dir() and p.name != skip):
        metadata = project / _PROJECT_FILE
        if metadata.exists() and not _parses(metadata):
            damaged.append(project)
            continue
        snapshots = project / _SNAPSHOTS
        files = sorted(snapshots.glob("*.json")) if snapshots.is_dir() else []
        damaged += [f for f in files if not _parses(f, SnapshotModel)]
    return damaged


def _parses(path: Path, model: Any = None) -> bool:
    try:
        payload = json.loads(path.read_bytes())
        if model is not None:
            model.parse_obj(payload)  # Evidently's own model of a snapshot (pydantic v1 API, as Evidently uses)
    except (OSError, ValueError):
        return False
    return True


def add_run(workspace: Workspace, project_name: str, snapshot: Snapshot) -> str:
    """Add the snapshot to the project named `project_name`; return the snapshot id.

    The project (with a dashboard of drift and quality over time) is created on first use and found by name
    afterwards.
    """
    found = workspace.search_project(project_name)
    if found:
        project = found[0]
    else:
        project = workspace.create_project(project_name, description="Evergreen: the champion's monitoring")
        _add_panels(project, snapshot)
    return str(workspace.add_run(project.id, snapshot).id)


def list_runs(workspace: Workspace, project_name: str) -> list[str]:
    """Ids of the snapshots the project holds (empty when the project does not exist)."""
    found = workspace.search_project(project_name)
    return [str(s) for s in workspace.list_runs(found[0].id)] if found else []


def _add_panels(project: Any, snapshot: Snapshot) -> None:
    columns = [c for c in parse_drift(snapshot) if c != PREDICTION]
    task = snapshot.report.metadata.get("task", "regression")
    quality = METRICS[snapshot.report.metadata.get("metric") or MONITORED[task]]
    panels = [
        line_plot_panel(
            "Share of drifted features",
            [PanelMetric(legend="share", metric=_DRIFTED_COUNT, metric_labels={"value_type": "share"})],
            size="half",
        ),
        line_plot_panel(
            "Prediction drift",
            [PanelMetric(legend=PREDICTION, metric=_VALUE_DRIFT, metric_labels={"column": PREDICTION})],
            size="half",
        ),
        line_plot_panel(
            "Feature drift scores",
            [PanelMetric(legend=c, metric=_VALUE_DRIFT, metric_labels={"column": c}) for c in columns],
        ),
        line_plot_panel(
            f"{quality.label} on labelled predictions",
            [PanelMetric(legend=quality.name, metric=_EVIDENTLY_METRIC[quality.name])],
        ),
    ]
    for panel in panels:
        project.dashboard.add_panel(panel)
