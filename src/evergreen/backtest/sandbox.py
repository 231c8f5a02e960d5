"""The backtest's workspaces: real project folders that DVC runs, one per policy, all inside the output folder.

A sandbox is what a fresh clone of the project would be, with a smaller source: the project's `dvc.yaml` and
its `src/` tree (the code deps `dvc.yaml` lists), expectation suites generated from the declared schema, the
history before `simulate.start` as its source, a `params.yaml` with the replay's overrides and its own DVC
repository. A retrain lands the labelled feedback and brings the pipeline up to date with the same runner the
Prefect flow uses (`orchestration.dag.reproduce`), so DVC, not a list in Python, decides which stages run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

import evergreen
from evergreen import dvc_adapter
from evergreen.config import Params, parse_params, with_overrides
from evergreen.data import io
from evergreen.errors import EvergreenError
from evergreen.monitoring.feedback import land_feedback
from evergreen.orchestration.dag import reproduce
from evergreen.params_file import dump_plain, load_plain
from evergreen.prediction_log.read import read_log
from evergreen.registry.store import Registry
from evergreen.validation.suites import write_suites
from evergreen.workspace import Workspace

__all__ = [
    "STAGES_LOG",
    "SOURCE",
    "Retrained",
    "copy_sandbox",
    "create_sandbox",
    "retrain",
    "sandbox_params",
    "write_params",
]

SOURCE = "data/source/initial.parquet"  # the history before `simulate.start`, the sandbox's `data.source`
STAGES_LOG = "stages.log"  # every retrain's stage output, appended
# `model.type: auto`'s budget in each retrain (`auto_budget`): ~25 retrains at 30 s stay minutes, not hours
SANDBOX_AUTO_BUDGET_S = 30.0

# locations a sandbox writes to: an absolute one in the project's params would point outside the sandbox (at the
# project's own registry or prediction log), so the sandbox uses the config's default, inside itself, instead
_LOCATIONS = (
    "promote.registry_dir",
    "serve.log_path",
    "monitor.reports_dir",
    "monitor.workspace",
    "monitor.decisions",
    "validation.suites_dir",
    "validation.reports_dir",
)
_NOT_COPIED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


@contextlib.contextmanager
def _silenced_terminal() -> Iterator[None]:
    """Point this process's stdout and stderr descriptors at /dev/null while the block runs.

    DVC's stage commands inherit them; what they print reaches `stages.log` through the runner's `on_line`.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[Callable[[str], None]]:
    """Send DVC's messages, the stages' output and anything printed to the file at `path` (appended).

    DVC's log goes to the terminal by default; the backtest keeps its terminal for progress bars and its
    summary, and a sandbox's `stages.log` for what its pipeline said. Yields a function that appends one line.
    """
    # DVC's log first, while stdout is still the terminal its own handlers are bound to
    with path.open("a") as out, dvc_adapter.log_to(out), contextlib.redirect_stdout(out), _silenced_terminal():
        yield lambda line: print(line, file=out, flush=True)


def _inside(params: Params) -> dict[str, Any]:
    """Overrides that move every absolute location of `params` into the sandbox (its default, relative path)."""
    moved = {}
    for dotted in _LOCATIONS:
        section, name = dotted.split(".")
        config = getattr(params, section)
        if Path(getattr(config, name)).is_absolute():
            moved[dotted] = type(config).model_fields[name].default
    return moved


def replay_start(params: Params) -> dt.datetime:
    """`simulate.start`, or an error saying how to set it: the backtest replays time from there."""
    if params.data.timestamp is None:
        raise EvergreenError("simulate: the backtest replays time, and data.timestamp is not declared")
    if params.simulate.start is None:
        raise EvergreenError(
            "simulate.start is not set: give the date the replay starts from (the first model learns the data "
            "before it), e.g. `evergreen simulate` after setting simulate.start: 2012-01-01 in params.yaml"
        )
    return params.simulate.start


def auto_budget(params: Params) -> dict[str, Any]:
    """The replay's budget for `model.type: auto`: each of its ~25 retrains trains every candidate within
    `train.time_budget_s` (5 minutes when unset), so unless `simulate.overrides` names the budget or a family,
    the replay caps it at `SANDBOX_AUTO_BUDGET_S` (the quick candidates come first, whatever the budget)."""
    declared = params.simulate.overrides
    if params.model.type != "auto" or "model.type" in declared or "train.time_budget_s" in declared:
        return {}
    return {"train.time_budget_s": min(params.train.time_budget_s or SANDBOX_AUTO_BUDGET_S, SANDBOX_AUTO_BUDGET_S)}


def sandbox_params(params: Params, now: dt.datetime) -> Params:
    """Params for a retrain at `now`: gate on the latest `test_days`, validate on the days before.

    The source is the sandbox's initial history plus its landing folder; `simulate.overrides` (lighter
    training) apply, and `model.type: auto` gets a small budget (`auto_budget`); every location stays inside
    the sandbox.
    """
    sim = params.simulate
    test_from = now - dt.timedelta(days=sim.test_days)
    return with_overrides(
        params,
        {
            **_inside(params),
            **auto_budget(params),
            **sim.overrides,
            "data.source": SOURCE,
            "data.incoming": "data/incoming",
            # a project whose log is on PostgreSQL: the replay logs to its own SQLite file, never production
            "serve.log_url": None,
            "serve.log_url_env": None,
            # ... and never names production's study storage: the sandbox's params.yaml is a file on disk
            "tune.storage": None,
            # the replay has no live traffic to judge a shadow by: challengers are promoted or not, at once
            "promote.shadow": None,
            "split.method": "time",
            "split.valid_from": (test_from - dt.timedelta(days=sim.valid_days)).isoformat(),
            "split.test_from": test_from.isoformat(),
        },
    )


def write_params(params: Params, path: Path) -> None:
    """Write `params` as a params file that reads back (`load_params`) to the same config."""
    raw = params.model_dump(mode="json")  # secrets masked: a masked one does not round-trip, and is refused below
    text = dump_plain(raw)
    if parse_params(load_plain(text), source=str(path)) != params:  # a field that does not survive YAML
        raise EvergreenError(f"{path}: the backtest's params do not round-trip through YAML")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by the backtest (evergreen simulate): the project's params with its overrides\n" + text)


def _code(project: Workspace) -> tuple[Path, Path]:
    """Where the running project's code is, and where it goes in a sandbox (dvc.yaml lists it as deps)."""
    if (project.root / "src").is_dir():
        return project.root / "src", Path("src")
    return Path(evergreen.__file__).parent, Path("src/evergreen")  # an installed package, no source checkout


def create_sandbox(project: Workspace, folder: Path, first: pl.DataFrame) -> Workspace:
    """A new project at `folder` whose source is `first` (rows of the declared dataset), ready for `retrain`.

    Nothing is trained yet; `params.yaml` holds the sandbox params for `simulate.start`.
    """
    if not project.dvc_yaml.is_file():
        raise EvergreenError(f"{project.dvc_yaml}: missing; the backtest runs the project's pipeline")
    if folder.exists():
        raise EvergreenError(f"{folder}: already exists; the backtest builds its workspaces from scratch")
    params = sandbox_params(project.params, replay_start(project.params))
    ws = Workspace(folder.resolve(), params)
    folder.mkdir(parents=True)
    shutil.copy2(project.dvc_yaml, ws.dvc_yaml)
    code, into = _code(project)
    shutil.copytree(code, ws.root / into, ignore=_NOT_COPIED)
    io.write_parquet(first.with_columns(pl.all().cast(pl.String)), ws.at(SOURCE))
    ws.incoming.mkdir(parents=True, exist_ok=True)
    write_suites(params.data, ws.suites_dir, overwrite=True, default_missing=params.clean.missing)
    write_params(params, ws.params_file)
    with _output_to(ws.root / STAGES_LOG):
        dvc_adapter.init_repo(ws.root)
    return ws


def copy_sandbox(source: Path, folder: Path) -> None:
    """A copy of a sandbox (its outputs, `dvc.lock`, DVC cache and registry) that evolves on its own."""

    def skip(directory: str, names: list[str]) -> set[str]:
        # DVC's locks and temporary files belong to one repository; the copy starts without them
        return {"tmp"} & set(names) if Path(directory).name == ".dvc" else set()

    shutil.copytree(source, folder, ignore=skip)


@dataclass(frozen=True)
class Retrained:
    """What a retrain did: the version it promoted (None: the champion stayed) and the `train` stage's own
    seconds (`metrics/train.json`; None when DVC found the model up to date and did not train)."""

    promoted: str | None
    train_seconds: float | None


def retrain(root: Path, params: Params, now: dt.datetime) -> Retrained:
    """Land the labelled feedback and bring the sandbox's pipeline up to date.

    `params` are the project's; the sandbox's `params.yaml` is rewritten for `now` first (the split dates move).
    """
    ws = Workspace(root, sandbox_params(params, now))
    write_params(ws.params, ws.params_file)
    log = read_log(ws.prediction_log_location, data=ws.params.data)
    land_feedback(log, ws.params.data, ws.incoming, ws.feedback_state)
    registry = Registry(ws.registry)
    before = registry.champion()
    with _output_to(ws.root / STAGES_LOG) as append:
        append(f"--- retrain at {now.isoformat()}")
        trained_before = _modified(ws.train_metrics)
        reproduce(ws.root, on_line=append)
    after = registry.champion()
    trained = _modified(ws.train_metrics) != trained_before and ws.train_metrics.exists()
    seconds = json.loads(ws.train_metrics.read_text())["seconds"] if trained else None
    return Retrained(after if after != before else None, seconds)


def _modified(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None
