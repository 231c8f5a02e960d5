"""The best trial, out of the study and into the project: a DVC experiment (`dvc exp show` lists it with its
params and metrics), and `evergreen tune --apply`, which writes its params into params.yaml for `dvc repro`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from evergreen import dvc_adapter
from evergreen.config import apply_overrides
from evergreen.errors import TuneError
from evergreen.tuning.study import open_study, storage_url, summarise
from evergreen.workspace import Workspace

# the experiment trains and evaluates: its params, valid and test metrics; nothing is exported or promoted
EXPERIMENT_STAGES = ("train", "evaluate")


def best_params(ws: Workspace) -> tuple[int, dict[str, Any]]:
    """The best trial's number and its params as params.yaml values ({} when the current params are best)."""
    study = open_study(ws, create=False)
    summary = summarise(study, ws.params, storage_url(ws))
    if summary.best is None:
        raise TuneError(f"study {study.study_name!r} has no completed trial yet: run `evergreen tune` first")
    return summary.best["number"], summary.best["params"]


def apply_best(ws: Workspace) -> dict[str, Any]:
    """Write the best trial's params into params.yaml in place (comments kept); returns what was set."""
    _, values = best_params(ws)
    apply_overrides(ws.params_file, values)
    return values


def experiment_name(study: str, number: int) -> str:
    """A name DVC accepts (a git ref component) for the experiment of trial `number`."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"tune-{study}-{number}").strip("-")


def run_experiment(root: Path, name: str, values: dict[str, Any]) -> str:
    """`dvc exp run --temp -s --name NAME -S key=value ... train evaluate` in the project; DVC's output."""
    # --temp: in a copy under .dvc/tmp, so the workspace (params.yaml, models/) is left as it was; writing
    # the params into params.yaml is `--apply`'s job, on request
    # --single-item: train and evaluate on the split the study used, without re-validating the data stages
    sets = {key: json.dumps(value) for key, value in values.items()}  # JSON is YAML, as `-S` reads it
    try:
        return dvc_adapter.exp_run(root, name, sets, EXPERIMENT_STAGES)
    except dvc_adapter.DvcCommandFailed as exc:
        raise TuneError(f"experiment {name}: {exc}") from exc


def record_best(ws: Workspace) -> str | None:
    """Run the best trial as a DVC experiment; its name, or None when the current params are the best."""
    number, values = best_params(ws)
    if not values:
        return None
    name = experiment_name(ws.params.tune.study, number)
    run_experiment(ws.root, name, values)
    return name
