"""`evergreen tune` end to end on the bundled data: two worker processes sharing one study in a real PostgreSQL
server, and a study in the project's SQLite file whose best trial becomes a DVC experiment and then params.yaml.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from evergreen.orchestration.overrides import apply_overrides
from tests.harness import run_command

from .workspace import FAST_TRAINING, copy_built

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# a few epochs of one narrow network: each trial takes about a second on the 14k training rows
# (and the mean baseline alone: the experiment's evaluate stage need not fit gradient boosting)
LIGHT = {
    **FAST_TRAINING,
    "train.epochs": 3,
    "train.patience": 3,
    "model.hidden": [32, 32],
    "evaluate.baselines": ["mean"],
}


@pytest.fixture(scope="module")
def split_project(tmp_path_factory, data_stages_run: Path) -> Path:
    """A project copy with light training, split once (a copy of the session's `data_stages_run`: the light
    params are no data stage's) for the tests to copy."""
    root = copy_built(data_stages_run, tmp_path_factory.mktemp("tune") / "project")
    apply_overrides(root / "params.yaml", LIGHT)
    return root


def _copy(split_project: Path, dest: Path, overrides: dict) -> Path:
    shutil.copytree(split_project, dest, symlinks=True)
    apply_overrides(dest / "params.yaml", overrides)
    return dest


def test_two_workers_share_one_postgres_study_and_the_pruner_prunes(split_project, tmp_path, postgres):
    postgres.create_database("tune_two_workers")
    url = postgres.url("tune_two_workers", driver="psycopg")
    tune = {
        "tune.n_trials": 6,
        "tune.prune_warmup_epochs": 0,
        "tune.prune_startup_trials": 1,
        # the project's own lr (0.003) is the baseline trial; every suggestion is a rate that barely learns, so
        # once the baseline has finished each later trial is worse than the median at its first epoch
        "tune.space": {"train.lr": {"low": 1e-7, "high": 1e-6, "log": True}, "model.dropout": {"low": 0, "high": 0.2}},
    }
    root = _copy(split_project, tmp_path / "project", tune)
    # the URL comes from an environment variable, as a password would on a shared server
    out = run_command(
        root, "evergreen", "tune", "--workers", "2", "--storage", "TUNE_DB", "--no-exp", env={"TUNE_DB": url}
    ).stdout
    assert "by 2 worker(s)" in out, out

    study = optuna.load_study(study_name="evergreen", storage=url)
    trials = study.get_trials()
    # two workers each check the count before asking for a trial: the last ask can race (as with Optuna's
    # MaxTrialsCallback), so a study may end one trial past n_trials, never short of it
    assert len(trials) in (6, 7), len(trials)
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids, pids  # two worker processes ran trials of this one study
    assert any(t.state == TrialState.PRUNED for t in trials), [t.state for t in trials]
    assert trials[0].user_attrs.get("baseline") and trials[0].state == TrialState.COMPLETE
    assert study.best_trial.number == 0  # nothing in this space beats the hand-set rate
    best = json.loads((root / "tune/best.json").read_text())
    assert best["storage"].startswith("postgresql+psycopg://") and best["trials"]["pruned"] >= 1
    assert (root / "tune/history.png").exists() and not (root / "tune/study.db").exists()  # the study is on the server

    # stopped and rerun with a larger budget: one worker (as on another machine) resumes the same study
    out = run_command(root, "evergreen", "tune", "--worker", "--trials", "9", "--storage", url, "--no-exp").stdout
    assert f"ran {9 - len(trials)} trial(s)" in out, out
    assert [t.number for t in optuna.load_study(study_name="evergreen", storage=url).get_trials()] == list(range(9))


def test_a_local_study_becomes_a_dvc_experiment_and_then_the_params(split_project, tmp_path):
    tune = {
        "train.lr": 1e-6,  # hand-set params that barely learn: any trial of the space beats them
        "tune.n_trials": 2,
        "tune.space": {"train.lr": {"low": 0.003, "high": 0.01, "log": True}},
    }
    root = _copy(split_project, tmp_path / "project", tune)
    run_command(root, "git", "commit", "-qam", "light params and a tune space")
    out = run_command(root, "evergreen", "tune").stdout  # SQLite in the project: no server
    assert (root / "tune/study.db").exists()
    best = json.loads((root / "tune/best.json").read_text())
    assert best["best"]["number"] == 1 and best["best"]["value"] < best["baseline"]["value"], best
    lr = best["best"]["params"]["train.lr"]
    assert "experiment tune-evergreen-1" in out, out

    shown = json.loads(run_command(root, "dvc", "exp", "show", "--json").stdout)
    experiments = {rev["name"]: rev["data"] for row in shown for e in row.get("experiments") or [] for rev in e["revs"]}
    listed = experiments["tune-evergreen-1"]
    assert listed["params"]["params.yaml"]["data"]["train"]["lr"] == pytest.approx(lr)
    assert "rmse" in listed["metrics"]["metrics/eval.json"]["data"]["model"]

    before = (root / "params.yaml").read_text()
    assert yaml.safe_load(before)["train"]["lr"] == 1e-6  # the experiment ran aside: the workspace is as it was
    out = run_command(root, "evergreen", "tune", "--apply").stdout
    after = (root / "params.yaml").read_text()
    assert yaml.safe_load(after)["train"]["lr"] == pytest.approx(lr)
    changed = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(changed) == 1 and changed[0].lstrip().startswith("lr: "), changed
    assert "# peak learning rate of the one-cycle schedule" in changed[0]  # the comment kept on its line


def test_the_tune_flow_runs_its_workers_as_prefect_tasks_on_dask(split_project, tmp_path):
    tune = {"tune.n_trials": 3, "tune.workers": 2, "tune.space": {"train.lr": {"low": 0.001, "high": 0.01}}}
    root = _copy(split_project, tmp_path / "project", tune)
    out = run_command(root, "python", "flows/tune.py", env={"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}).stdout
    assert "Task run 'tune_worker" in out and "Flow run" in out, out  # run by Prefect, as tasks
    storage = f"sqlite:///{root / 'tune/study.db'}"
    trials = optuna.load_study(study_name="evergreen", storage=storage).get_trials()
    assert len(trials) in (3, 4)
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # two Dask worker processes ran trials
