"""The replay: serve each window with the champion, score it, and let a policy decide whether to retrain.

Every policy starts from a copy of one initial sandbox (the first model already promoted), so they all serve the
first window with the same model. A window is served the way the service serves it: the champion from the
registry, the inference core, every prediction (and, for classification, its class probabilities) written to
the prediction log, the labels fed back after.

Each window, and each policy over the whole replay, is scored on the metric monitoring judges by (the declared
`promote.metric`, see `monitoring.monitor.judged_metric`) with the functions evaluation uses
(`evergreen.model.metrics.score`): RMSE per window for the bike data, log loss or accuracy per window from the
served probabilities for a classifier.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from evergreen.backtest.plots import plot_backtest
from evergreen.backtest.sandbox import copy_sandbox, create_sandbox, replay_start, retrain
from evergreen.config import SimulateConfig, with_overrides
from evergreen.data import io
from evergreen.data.clean import clean
from evergreen.data.ingest import combine
from evergreen.data.schema import EVENT_TIME, request_columns
from evergreen.errors import EvergreenError
from evergreen.inference import load_champion, predict, predicted_labels
from evergreen.model.metrics import metric as metric_info
from evergreen.model.metrics import score
from evergreen.monitoring.monitor import judged_metric, monitor_once
from evergreen.prediction_log.base import TIME_FORMAT
from evergreen.prediction_log.writer import PredictionLog, log_rows
from evergreen.privacy import Redactor
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace

__all__ = ["PolicyRun", "Served", "Window", "backtest", "history", "score_rows", "summarise", "windows"]

PLOT = "error_over_time.png"
WARM = "_warm"  # a policy's variant that warm-starts its retrains from the champion


@dataclass
class Window:
    start: str
    end: str
    rows: int
    value: float | None  # the metric on the window's rows (None where undefined, e.g. ROC AUC of one class)
    champion: str
    retrain: str | None = None  # why a retrain ran after this window (None: no retrain)
    promoted: str | None = None  # the version it promoted, if any
    train_seconds: float | None = None  # the retrain's `train` stage, by its own clock


@dataclass(frozen=True)
class Served:
    """A window as the champion served it: the labels, the model's output (values, or class probabilities
    [N, C]) and, for classification, the champion's classes in output order."""

    actual: list[Any]
    output: np.ndarray
    classes: list[Any] = field(default_factory=list)
    decision_weights: list[float] = field(default_factory=list)  # the champion's (empty: the most probable)


def score_rows(task: str, metric: str, parts: list[Served]) -> float | None:
    """`metric` over the rows of `parts` together (the windows of a replay may be served by models with
    different classes: probabilities are aligned on their union; a label no model has is a column of zeros)."""
    if not parts:
        return None
    actual = [a for p in parts for a in p.actual]
    if task == "regression":
        values = score(task, np.asarray(actual, dtype=np.float64), np.concatenate([p.output for p in parts]))
        return _finite(values.get(metric))
    order: list[Any] = []
    for label in [c for p in parts for c in p.classes] + actual:
        if label not in order:
            order.append(label)
    index = {label: i for i, label in enumerate(order)}
    probabilities = np.zeros((len(actual), len(order)))
    row = 0
    for part in parts:
        columns = [index[c] for c in part.classes]
        output = part.output
        if part.decision_weights:
            # windows served by different models decide with different weights: each part's probabilities are
            # reweighted (p * w, renormalised) so that argmax gives the class it served. Weights exist only on a
            # model chosen for macro F1, the metric the replay then scores, which reads only those classes
            output = output * np.asarray(part.decision_weights)
            output = output / np.maximum(output.sum(axis=1, keepdims=True), 1e-12)
        probabilities[row : row + len(part.actual), columns] = output
        row += len(part.actual)
    values = score(task, np.array([index[a] for a in actual]), probabilities, order)
    return _finite(values.get(metric))


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


@dataclass
class PolicyRun:
    name: str
    task: str = "regression"
    metric: str = "rmse"
    windows: list[Window] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": score_rows(self.task, self.metric, self.served),
            "retrains": sum(w.retrain is not None for w in self.windows),
            "promotions": sum(w.promoted is not None for w in self.windows),
            # the cost a warm start saves: seconds the retrains spent in the `train` stage, all together
            "train_seconds": round(sum(w.train_seconds or 0.0 for w in self.windows), 2),
            "windows": [asdict(w) for w in self.windows],
        }


def history(ws: Workspace) -> pl.DataFrame:
    """The project's whole source, cleaned: what production would have seen, in time order."""
    data = ws.params.data
    frames = [io.read_text_table(f, data) for f in io.resolve_source(ws.source)]
    raw = combine(frames, data.key, types=data.types).raw
    return clean(raw, data, ws.params.clean).clean.sort(EVENT_TIME)


def windows(data: pl.DataFrame, sim: SimulateConfig) -> Iterator[tuple[dt.datetime, dt.datetime, pl.DataFrame]]:
    """The replayed history in consecutive windows of `simulate.window_days`, from `simulate.start`."""
    end = sim.end or data[EVENT_TIME].max() + dt.timedelta(hours=1)
    step = dt.timedelta(days=sim.window_days)
    start = sim.start
    while start < end:
        stop = min(start + step, end)
        yield start, stop, data.filter((pl.col(EVENT_TIME) >= start) & (pl.col(EVENT_TIME) < stop))
        start = stop


def serve_window(ws: Workspace, rows: pl.DataFrame) -> tuple[str, Served]:
    """Score a window with the champion as the service does, log it, then feed the labels back (a day per request).

    Returns the champion's version and what it served: the labels, its output and its classes.
    """
    data = ws.params.data
    model = load_champion(Registry(ws.registry))
    outputs = predict(model, rows)
    predictions = predicted_labels(model, outputs)
    probabilities = None if model.task == "regression" else outputs.tolist()
    features, annotations = request_columns(data)
    annotate = [c.name for c in [*features, *annotations]]
    redactor = Redactor(data)  # the sandbox's log keeps personal columns as the service's does
    log = PredictionLog(ws.prediction_log_location)  # the sandbox's own SQLite file (`sandbox_params`)
    try:
        days = rows.with_columns(_day=pl.col(EVENT_TIME).dt.date()).partition_by("_day", maintain_order=True)
        offset = 0
        for day in days:
            request_id = f"sim-{day[EVENT_TIME][0].isoformat()}"
            records = day.select(annotate).to_dicts()
            time = day[EVENT_TIME].max().strftime(TIME_FORMAT)  # the replayed clock, in the log's format
            part = slice(offset, offset + day.height)
            log.write(
                log_rows(
                    request_id,
                    time,
                    model.version,
                    records,
                    predictions[part],
                    None if probabilities is None else probabilities[part],
                    redactor,
                )
            )
            log.attach_labels(request_id, day[data.target.name].to_list())
            offset += day.height
    finally:
        log.close()
    served = Served(rows[data.target.name].to_list(), np.asarray(outputs), list(model.classes),
                    list(model.decision_weights))  # fmt: skip
    return model.version, served


def should_retrain(
    policy: str, ws: Workspace, previous: dt.datetime | None, start: dt.datetime, stop: dt.datetime
) -> str | None:
    """Why `policy` retrains after the window [start, stop), or None; `previous` is the last window's start.

    A `_warm` variant retrains when its base policy does."""
    policy = policy.removesuffix(WARM)
    if policy == "periodic":
        return "a new month" if previous is not None and start.month != previous.month else None
    if policy == "drift":
        # the monitor looks at exactly the window just served
        hours = 24 * ws.params.simulate.window_days
        window = with_overrides(ws.params, {"monitor.window.last_rows": None, "monitor.window.last_hours": hours})
        decision = monitor_once(Workspace(ws.root, window), now=stop, save_reports=False)
        return "; ".join(decision.reasons) if decision.action == "retrain" else None
    return None


def run_policy(
    policy: str, project: Workspace, base: Path, folder: Path, data: pl.DataFrame, progress: bool
) -> PolicyRun:
    """Replay every window under one policy, in its own copy of the initial sandbox.

    A `_warm` policy retrains with `train.init: champion`: from the champion's weights, fine-tuned."""
    copy_sandbox(base, folder)
    params = with_overrides(project.params, {"train.init": "champion"}) if policy.endswith(WARM) else project.params
    run = PolicyRun(policy, task=project.params.data.task, metric=judged_metric(project.params))
    previous = None
    replayed = list(windows(data, project.params.simulate))
    for start, stop, rows in tqdm(replayed, desc=f"simulate {policy}", unit="window", disable=not progress):
        if rows.height == 0:
            continue
        ws = Workspace.open(folder)  # its params.yaml: the sandbox params of its latest retrain
        champion, served = serve_window(ws, rows)
        run.served.append(served)
        value = score_rows(run.task, run.metric, [served])
        window = Window(start.isoformat(), stop.isoformat(), rows.height, value, champion)
        window.retrain = should_retrain(policy, ws, previous, start, stop)
        if window.retrain:
            done = retrain(ws.root, params, stop)
            window.promoted, window.train_seconds = done.promoted, done.train_seconds
        run.windows.append(window)
        previous = start
    return run


def summarise(runs: dict[str, PolicyRun]) -> dict[str, Any]:
    """Each policy's summary on the judged metric; with all three, how much of periodic's gain over never the
    drift policy recovers (a ratio of differences: the same for a metric where higher is better); for each
    `_warm` variant, its metric and training time against the cold policy's (`warm_vs_cold`)."""
    policies = {name: run.summary() for name, run in runs.items()}
    name = next(iter(runs.values())).metric if runs else None
    summary: dict[str, Any] = {"metric": name}
    if name is not None:
        info = metric_info(name)
        summary |= {"metric_label": info.label, "lower_is_better": info.lower_is_better}
    summary["policies"] = policies
    if {"never", "periodic", "drift"} <= policies.keys():
        never, periodic, drift = (policies[p]["value"] for p in ("never", "periodic", "drift"))
        gain = never - periodic if None not in (never, periodic) else None
        summary["drift_recovers"] = (never - drift) / gain if gain and drift is not None else None
    # each warm variant against its cold policy on the same replay: the metric, and the training time it took
    summary["warm_vs_cold"] = {
        cold: _warm_against_cold(policies[cold], policies[cold + WARM]) for cold in policies if cold + WARM in policies
    }
    summary["plot"] = PLOT  # next to summary.json
    return summary


def _warm_against_cold(cold: dict[str, Any], warm: dict[str, Any]) -> dict[str, Any]:
    both = None not in (cold["value"], warm["value"])
    return {
        "value_cold": cold["value"],
        "value_warm": warm["value"],
        "value_difference": warm["value"] - cold["value"] if both else None,  # warm minus cold
        "train_seconds_cold": cold["train_seconds"],
        "train_seconds_warm": warm["train_seconds"],
        "train_seconds_ratio": warm["train_seconds"] / cold["train_seconds"] if cold["train_seconds"] else None,
    }


def backtest(project: Workspace, output_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Run every declared policy; returns (and writes) `summary.json` and the metric-over-time plot.

    The sandboxes live under `output_dir/work`: `initial` (the first model, trained on the history before
    `simulate.start`) and one copy per policy. The project itself is only read.
    """
    output_dir = output_dir.resolve()
    start = replay_start(project.params)
    data = history(project)
    work = output_dir / "work"
    if work.exists():
        shutil.rmtree(work)
    base = work / "initial"
    create_sandbox(project, base, data.filter(pl.col(EVENT_TIME) < start).select(project.params.data.names))
    if retrain(base, project.params, start).promoted is None:
        raise EvergreenError(f"simulate: the first model (data before {start.date()}) was not promoted; see {base}")
    runs = {p: run_policy(p, project, base, work / p, data, progress) for p in project.params.simulate.policies}
    summary = summarise(runs)
    io.write_json(summary, output_dir / "summary.json")
    plot_backtest(summary, output_dir / PLOT)
    return summary
