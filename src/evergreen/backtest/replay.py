"""The replay: serve each window with the champion, score it, and let a policy decide whether to retrain.

Every policy starts from a copy of one initial sandbox (the first model already promoted), so they all serve the
first window with the same model. A window is served the way the service serves it: the champion from the
registry, the inference core, every prediction written to the prediction log, the labels fed back after.
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
from evergreen.backtest.sandbox import copy_sandbox, create_sandbox, retrain
from evergreen.config import SimulateConfig, with_overrides
from evergreen.data import io
from evergreen.data.clean import clean
from evergreen.data.ingest import combine
from evergreen.data.schema import EVENT_TIME
from evergreen.errors import EvergreenError
from evergreen.inference import load_champion, predict
from evergreen.monitoring.monitor import monitor_once
from evergreen.registry.store import Registry
from evergreen.serving.log import TIME_FORMAT, PredictionLog, log_rows
from evergreen.serving.schema import request_columns
from evergreen.workspace import Workspace

__all__ = ["PolicyRun", "Window", "backtest", "history", "summarise", "windows"]

PLOT = "error_over_time.png"


@dataclass
class Window:
    start: str
    end: str
    rows: int
    rmse: float
    champion: str
    retrain: str | None = None  # why a retrain ran after this window (None: no retrain)
    promoted: str | None = None  # the version it promoted, if any


@dataclass
class PolicyRun:
    name: str
    windows: list[Window] = field(default_factory=list)
    squared_errors: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "rmse": float(np.sqrt(np.mean(self.squared_errors))) if self.squared_errors else None,
            "retrains": sum(w.retrain is not None for w in self.windows),
            "promotions": sum(w.promoted is not None for w in self.windows),
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


def serve_window(ws: Workspace, rows: pl.DataFrame) -> tuple[str, np.ndarray]:
    """Score a window with the champion as the service does, log it, then feed the labels back (a day per request).

    Returns the champion's version and the errors (prediction minus label) of the window's rows.
    """
    data = ws.params.data
    model = load_champion(Registry(ws.registry))
    outputs = predict(model, rows)
    predictions = [float(v) for v in outputs]
    features, annotations = request_columns(data)
    annotate = [c.name for c in [*features, *annotations]]
    log = PredictionLog(ws.prediction_log)
    try:
        days = rows.with_columns(_day=pl.col(EVENT_TIME).dt.date()).partition_by("_day", maintain_order=True)
        offset = 0
        for day in days:
            request_id = f"sim-{day[EVENT_TIME][0].isoformat()}"
            records = day.select(annotate).to_dicts()
            time = day[EVENT_TIME].max().strftime(TIME_FORMAT)  # the replayed clock, in the log's format
            log.write(log_rows(request_id, time, model.version, records, predictions[offset : offset + day.height]))
            log.attach_labels(request_id, day[data.target.name].to_list())
            offset += day.height
    finally:
        log.close()
    return model.version, np.asarray(outputs) - rows[data.target.name].to_numpy()


def should_retrain(
    policy: str, ws: Workspace, previous: dt.datetime | None, start: dt.datetime, stop: dt.datetime
) -> str | None:
    """Why `policy` retrains after the window [start, stop), or None; `previous` is the last window's start."""
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
    """Replay every window under one policy, in its own copy of the initial sandbox."""
    copy_sandbox(base, folder)
    run = PolicyRun(policy)
    previous = None
    replayed = list(windows(data, project.params.simulate))
    for start, stop, rows in tqdm(replayed, desc=f"simulate {policy}", unit="window", disable=not progress):
        if rows.height == 0:
            continue
        ws = Workspace.open(folder)  # its params.yaml: the sandbox params of its latest retrain
        champion, errors = serve_window(ws, rows)
        run.squared_errors.extend((errors**2).tolist())
        window = Window(start.isoformat(), stop.isoformat(), rows.height, float(np.sqrt(np.mean(errors**2))), champion)
        window.retrain = should_retrain(policy, ws, previous, start, stop)
        if window.retrain:
            window.promoted = retrain(ws.root, project.params, stop)
        run.windows.append(window)
        previous = start
    return run


def summarise(runs: dict[str, PolicyRun]) -> dict[str, Any]:
    """Each policy's summary; with all three, how much of periodic's gain over never the drift policy recovers."""
    policies = {name: run.summary() for name, run in runs.items()}
    summary: dict[str, Any] = {"policies": policies}
    if {"never", "periodic", "drift"} <= policies.keys():
        never, periodic, drift = (policies[p]["rmse"] for p in ("never", "periodic", "drift"))
        gain = never - periodic if None not in (never, periodic) else None
        summary["drift_recovers"] = (never - drift) / gain if gain and drift is not None else None
    summary["plot"] = PLOT  # next to summary.json
    return summary


def backtest(project: Workspace, output_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Run every declared policy; returns (and writes) `summary.json` and the error-over-time plot.

    The sandboxes live under `output_dir/work`: `initial` (the first model, trained on the history before
    `simulate.start`) and one copy per policy. The project itself is only read.
    """
    output_dir = output_dir.resolve()
    sim = project.params.simulate
    data = history(project)
    work = output_dir / "work"
    if work.exists():
        shutil.rmtree(work)
    base = work / "initial"
    create_sandbox(project, base, data.filter(pl.col(EVENT_TIME) < sim.start).select(project.params.data.names))
    if retrain(base, project.params, sim.start) is None:
        raise EvergreenError(f"simulate: the first model (data before {sim.start.date()}) was not promoted; see {base}")
    runs = {p: run_policy(p, project, base, work / p, data, progress) for p in sim.policies}
    summary = summarise(runs)
    io.write_json(summary, output_dir / "summary.json")
    plot_backtest(summary, output_dir / PLOT)
    return summary
