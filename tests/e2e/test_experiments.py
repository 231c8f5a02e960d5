"""`dvc exp run -S ...` on a fresh copy of the project: an experiment runs, and `dvc exp show` lists it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

# the project copy starts with its data stages run (`data_stages_run`): the experiment trains and evaluates
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("data_stages_run")]

# small and fast: two epochs of one narrow member, on the real bundled data (17k rows), and the one baseline the
# test reads (gradient boosting and the others took most of `evaluate`'s time)
OVERRIDES = {"train.lr": "0.01", "train.epochs": "2", "model.ensemble": "1", "model.hidden": "[16]",
             "evaluate.baselines": "[mean]"}  # fmt: skip


def _experiments(shown: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The experiments in `dvc exp show --json`, by name: each one's params and metrics under `data`."""
    return {rev["name"]: rev["data"] for row in shown for exp in row.get("experiments") or [] for rev in exp["revs"]}


def test_an_experiment_with_set_params_runs_and_is_listed_with_its_metrics(project, run):
    overrides = [arg for key, value in OVERRIDES.items() for arg in ("-S", f"{key}={value}")]
    ran = run("dvc", "exp", "run", "--name", "tiny-lr", *overrides, "evaluate").stdout
    assert "Running stage 'evaluate'" in ran
    # the output is captured, not a terminal: one plain line per epoch, no per-step progress bar
    assert re.search(r"^epoch 2/2: train loss [\d.]+, valid rmse [\d.]+$", ran, re.MULTILINE), ran
    assert not re.search(r"epoch \d+/2:\s+\d+%", ran)
    trained = json.loads((project / "metrics/train.json").read_text())
    assert trained["epochs_run"] == 2
    evaluated = json.loads((project / "metrics/eval.json").read_text())
    assert evaluated["model"]["rmse"] < evaluated["baselines"]["mean"]["rmse"]  # it learnt something

    shown = json.loads(run("dvc", "exp", "show", "--json").stdout)
    experiments = _experiments(shown)
    assert list(experiments) == ["tiny-lr"]
    params = experiments["tiny-lr"]["params"]["params.yaml"]["data"]
    assert params["train"]["lr"] == 0.01 and params["train"]["epochs"] == 2
    assert params["model"]["ensemble"] == 1 and params["model"]["hidden"] == [16]
    baseline = next(row for row in shown if row.get("experiments"))["data"]["params"]["params.yaml"]["data"]
    assert baseline["train"]["lr"] != 0.01  # the commit keeps its params; only the experiment has the new ones
    # the experiment's own commit must hold its metrics (not only the workspace), or exp show has nothing to list
    metrics = experiments["tiny-lr"]["metrics"]["metrics/eval.json"]
    assert "data" in metrics, metrics
    assert metrics["data"] == evaluated
