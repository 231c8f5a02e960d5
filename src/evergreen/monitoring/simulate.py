"""`evergreen simulate`: replay the bundled history as production traffic and compare retraining policies.

The first model is trained on everything before `simulate.start` (2011 for the bike data). Then the rest of
the history arrives in windows (a week by default), in time order, through the same functions production uses:
the champion scores each window with the serving code path and every prediction goes to a prediction log;
labels are fed back after the window. Between windows a policy may retrain:

- `never`: the first model serves to the end;
- `periodic`: a retrain at the first window of every month;
- `drift`: the real monitor (Evidently) and the declared policy (`monitor.policy`) decide.

A retrain is the real one: labelled feedback lands as a new batch, the DVC stages run in order (ingest,
validation, clean, split, train, evaluate, export, promote) in the policy's own workspace, and the gate
decides whether the challenger replaces the champion. Errors are measured on every window's rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from evergreen.config import Params, with_overrides
from evergreen.data import io
from evergreen.data.clean import clean
from evergreen.data.ingest import combine
from evergreen.data.schema import EVENT_TIME
from evergreen.errors import EvergreenError
from evergreen.monitoring.feedback import STATE, land_feedback
from evergreen.registry.store import Registry
from evergreen.serving.log import TIME_FORMAT, PredictionLog, log_rows, read_log
from evergreen.serving.model import load_champion, predict
from evergreen.serving.schema import request_columns
from evergreen.validation.suites import write_suites

STAGES = ("ingest", "validate_raw", "clean", "validate_clean", "split", "train", "evaluate", "export", "promote")


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


@contextlib.contextmanager
def _inside(folder: Path, log_file: Path) -> Iterator[None]:
    """Run in `folder` (stages use project-relative paths) with their chatter sent to a log file."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        with log_file.open("a") as out, contextlib.redirect_stdout(out):
            yield
    finally:
        os.chdir(previous)


def history(params: Params) -> pl.DataFrame:
    """The whole bundled history, cleaned: what production would have seen, in time order."""
    files = io.resolve_source(params.data.source)
    raw = combine([io.read_text_table(f, params.data) for f in files], params.data.key).raw
    return clean(raw, params.data, params.clean).clean.sort(EVENT_TIME)


def _sandbox_params(params: Params, now: dt.datetime) -> Params:
    """Params for a retrain at `now`: gate on the latest `test_days`, validate on the days before."""
    sim = params.simulate
    test_from = now - dt.timedelta(days=sim.test_days)
    return with_overrides(
        params,
        {
            **sim.overrides,
            "data.source": "data/source/initial.parquet",
            "data.incoming": "data/incoming",
            "split.method": "time",
            "split.valid_from": (test_from - dt.timedelta(days=sim.valid_days)).isoformat(),
            "split.test_from": test_from.isoformat(),
        },
    )


def retrain(workspace: Path, params: Params, now: dt.datetime) -> str | None:
    """Land the labelled feedback and run every stage in order; returns the promoted version, if any."""
    sandbox = _sandbox_params(params, now)
    log = read_log(workspace / params.serve.log_path, data=sandbox.data)
    land_feedback(log, sandbox.data, workspace / sandbox.data.incoming, workspace / STATE)
    registry = Registry(workspace / sandbox.promote.registry_dir)
    before = registry.champion()
    with _inside(workspace, workspace / "stages.log"):
        for stage in STAGES:
            importlib.import_module(f"evergreen.stages.{stage}").run(sandbox)
    after = registry.champion()
    return after if after != before else None


def initial_workspace(params: Params, data: pl.DataFrame, folder: Path) -> None:
    """A workspace whose source is the history before `simulate.start`, with its first model promoted."""
    start = params.simulate.start
    folder.mkdir(parents=True)
    (folder / "data/incoming").mkdir(parents=True)
    first = data.filter(pl.col(EVENT_TIME) < start).select(params.data.names)
    io.write_parquet(first.with_columns(pl.all().cast(pl.String)), folder / "data/source/initial.parquet")
    write_suites(params.data, folder / params.validation.suites_dir, overwrite=True)
    if retrain(folder, params, start) is None:
        raise EvergreenError(f"simulate: the first model (data before {start.date()}) was not promoted; see {folder}")


def windows(data: pl.DataFrame, params: Params) -> Iterator[tuple[dt.datetime, dt.datetime, pl.DataFrame]]:
    """The replayed history in consecutive windows of `simulate.window_days`."""
    sim = params.simulate
    end = sim.end or data[EVENT_TIME].max() + dt.timedelta(hours=1)
    step = dt.timedelta(days=sim.window_days)
    start = sim.start
    while start < end:
        stop = min(start + step, end)
        yield start, stop, data.filter((pl.col(EVENT_TIME) >= start) & (pl.col(EVENT_TIME) < stop))
        start = stop


def serve_window(workspace: Path, params: Params, rows: pl.DataFrame) -> tuple[str, np.ndarray]:
    """Score a window with the champion as the service does, log it, then feed the labels back (a day per request)."""
    model = load_champion(Registry(workspace / params.promote.registry_dir))
    outputs = predict(model, rows)
    predictions = [float(v) for v in outputs]
    features, annotations = request_columns(params.data)
    annotate = [c.name for c in [*features, *annotations]]
    log = PredictionLog(workspace / params.serve.log_path)
    try:
        target = params.data.target.name
        days = rows.with_columns(_day=pl.col(EVENT_TIME).dt.date()).partition_by("_day", maintain_order=True)
        offset = 0
        for day in days:
            request_id = f"sim-{day[EVENT_TIME][0].isoformat()}"
            records = day.select(annotate).to_dicts()
            time = day[EVENT_TIME].max().strftime(TIME_FORMAT)  # the replayed clock, in the log's format
            log.write(log_rows(request_id, time, model.version, records, predictions[offset : offset + day.height]))
            log.attach_labels(request_id, day[target].to_list())
            offset += day.height
    finally:
        log.close()
    return model.version, np.asarray(outputs) - rows[params.data.target.name].to_numpy()


def _should_retrain(
    policy: str, workspace: Path, params: Params, previous: dt.datetime | None, start: dt.datetime, stop: dt.datetime
) -> str | None:
    if policy == "periodic":
        return "a new month" if previous is not None and start.month != previous.month else None
    if policy == "drift":
        from evergreen.monitoring.monitor import monitor_once

        # the monitor looks at exactly the window just served
        window = {"monitor.window.last_rows": None, "monitor.window.last_hours": 24 * params.simulate.window_days}
        with _inside(workspace, workspace / "monitor.log"):
            decision = monitor_once(with_overrides(params, window), Path("."), now=stop, save_reports=False)
        return "; ".join(decision.reasons) if decision.action == "retrain" else None
    return None


def run_policy(policy: str, base: Path, folder: Path, data: pl.DataFrame, params: Params, progress: bool) -> PolicyRun:
    """Replay every window under one policy, in its own copy of the initial workspace."""
    shutil.copytree(base, folder)
    run = PolicyRun(policy)
    previous = None
    all_windows = list(windows(data, params))
    for start, stop, rows in tqdm(all_windows, desc=f"simulate {policy}", unit="window", disable=not progress):
        if rows.height == 0:
            continue
        champion, errors = serve_window(folder, params, rows)
        run.squared_errors.extend((errors**2).tolist())
        window = Window(start.isoformat(), stop.isoformat(), rows.height, float(np.sqrt(np.mean(errors**2))), champion)
        window.retrain = _should_retrain(policy, folder, params, previous, start, stop)
        if window.retrain:
            window.promoted = retrain(folder, params, stop)
        run.windows.append(window)
        previous = start
    return run


def backtest(params: Params, output_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Run every declared policy; returns (and writes) `summary.json` and the error-over-time plot."""
    from evergreen.monitoring.plots import plot_backtest

    output_dir = output_dir.resolve()  # the stages run inside each policy's workspace (a changed cwd)
    data = history(params)
    work = output_dir / "work"
    if work.exists():
        shutil.rmtree(work)
    base = work / "initial"
    initial_workspace(params, data, base)
    runs = {p: run_policy(p, base, work / p, data, params, progress) for p in params.simulate.policies}
    summary: dict[str, Any] = {"policies": {name: run.summary() for name, run in runs.items()}}
    policies = summary["policies"]
    if {"never", "periodic", "drift"} <= policies.keys():
        gain = policies["never"]["rmse"] - policies["periodic"]["rmse"]
        summary["drift_recovers"] = (policies["never"]["rmse"] - policies["drift"]["rmse"]) / gain if gain else None
    summary["plot"] = "error_over_time.png"  # next to summary.json
    io.write_json(summary, output_dir / "summary.json")
    plot_backtest(summary, output_dir / "error_over_time.png")
    return summary
