"""Data-parallel training end to end: the `train` stage relaunched through torchrun with 2 CPU processes (gloo).

The project is the bundled one with its real splits (read, cleaned and split by the project's own functions);
training is lighter than params.yaml (one network, fewer epochs) so both runs fit in about a minute on 2 cores.
Both the 1-process and the 2-process run must beat HistGradientBoosting on the test split, and agree with each
other: `batch_size` is the global batch, so both take the same optimiser steps on the same batches and differ
only by dropout masks and the order of floating-point sums (TOLERANCE).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
import torch
import yaml

from evergreen.config import load_params, with_overrides
from evergreen.config.train import DistributedConfig
from evergreen.data.clean import clean
from evergreen.data.io import read_text_table, resolve_source
from evergreen.data.split import split
from evergreen.errors import ModelError
from evergreen.inference import feature_matrix
from evergreen.model.baselines import fit_baselines, predict_baseline
from evergreen.model.distributed import launch
from evergreen.model.metrics import score
from evergreen.model.network import TabularNet
from evergreen.model.preprocess import fit_preprocessing
from evergreen.stages.train import run
from evergreen.workspace import Workspace
from tests.harness import ROOT, SMALL_MODEL, SMALL_TRAIN, TINY, synthetic, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# lighter than params.yaml: one network of the declared family and width, 8 epochs
LIGHT = {"model.ensemble": 1, "train.epochs": 8, "train.patience": 8}
# the test RMSEs of the two runs may differ by this share of the 1-process one (measured: see BENCHMARKS.md)
TOLERANCE = 0.05


def make_project(folder: Path, overrides: dict) -> Workspace:
    """The bundled project's params (with `overrides`), dvc.yaml and real train/valid/test splits in `folder`."""
    params = with_overrides(load_params(ROOT / "params.yaml"), overrides)
    folder.mkdir(parents=True)
    shutil.copy2(ROOT / "dvc.yaml", folder / "dvc.yaml")
    (folder / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    ws = Workspace.open(folder)
    data = params.data
    raw = pl.concat([read_text_table(path, data) for path in resolve_source(str(ROOT / data.source))])
    for name, part in split(clean(raw, data, params.clean).clean, data, params.split).items():
        ws.split(name).parent.mkdir(parents=True, exist_ok=True)
        part.write_parquet(ws.split(name))
    return ws


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def served_rmse(ws: Workspace) -> float:
    test = pl.read_parquet(ws.split("test"))
    actual = test[ws.params.data.target.name].cast(pl.Float64).to_numpy()
    return score("regression", actual, TabularNet.load(ws.model).predict(test))["rmse"]


def hgb_test_rmse(ws: Workspace) -> float:
    """HistGradientBoosting as the evaluate stage fits it: trees chosen on valid, scored on test."""
    p = ws.params
    parts = {name: pl.read_parquet(ws.split(name)) for name in ("train", "valid", "test")}
    prep = fit_preprocessing(parts["train"], p.data, p.model)

    def xy(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return feature_matrix(frame, prep.features, prep.string_vocabularies, prep.derived), frame[
            p.data.target.name
        ].cast(pl.Float64).to_numpy()

    hgb = fit_baselines(prep, xy(parts["train"]), xy(parts["valid"]), ["hgb"], p.evaluate.hgb_max_iter,
                        p.evaluate.hgb_patience, p.promote.seed)["hgb"]  # fmt: skip
    x, y = xy(parts["test"])
    return score("regression", y, predict_baseline(hgb, "regression", x))["rmse"]


def train_stage(ws: Workspace) -> subprocess.CompletedProcess:
    """`evergreen stage train` in the project, as DVC runs it."""
    return subprocess.run(
        [sys.executable, "-m", "evergreen.cli", "stage", "train"],
        cwd=ws.root, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def kill_after_epoch(ws: Workspace, epoch: int) -> None:
    """Start `evergreen stage train` and kill its whole process tree once the checkpoint has `epoch` epochs."""
    process = subprocess.Popen(
        [sys.executable, "-m", "evergreen.cli", "stage", "train"],
        cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # fmt: skip

    def reached() -> bool:
        if process.poll() is not None:
            return True  # ended: the assertion below says so
        with contextlib.suppress(Exception):  # absent, or being replaced: read it again
            return torch.load(ws.checkpoint, weights_only=True)["epoch"] >= epoch
        return False

    try:
        wait_until(reached, 120, f"a checkpoint of {epoch} epoch(s)", interval=0.05)
        assert process.poll() is None, "training ended before it could be killed"
    finally:
        # everything at once, as a crash would: torchrun's workers run in sessions of their own
        tree = [process, *psutil.Process(process.pid).children(recursive=True)]
        for each in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                each.kill()
        process.wait()


def test_one_and_two_processes_beat_gradient_boosting_and_agree(tmp_path: Path) -> None:
    single = make_project(tmp_path / "single", LIGHT)
    run(single)  # in this process: the default path, no torchrun
    assert _json(single.train_metrics)["processes"] == 1

    two_settings = {**LIGHT, "train.distributed": {"nproc_per_node": 2, "backend": "gloo"}}
    two = make_project(tmp_path / "two", two_settings)
    done = train_stage(two)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = _json(two.train_metrics)
    assert metrics["processes"] == 2
    assert metrics["n_train"] == _json(single.train_metrics)["n_train"]  # every row, split over the ranks
    # rank 0 alone writes: one epoch line per epoch, not one per rank
    assert done.stdout.count("epoch 1/8:") == 1, done.stdout
    assert two.checkpoint.exists() and two.model.exists()
    assert (two.dvclive / "metrics.json").exists()

    hgb, one_rmse, two_rmse = hgb_test_rmse(single), served_rmse(single), served_rmse(two)
    assert one_rmse < hgb and two_rmse < hgb, (one_rmse, two_rmse, hgb)
    assert abs(two_rmse - one_rmse) <= TOLERANCE * one_rmse, (one_rmse, two_rmse)

    # killed after a few epochs (launcher, torchrun and both ranks), then rerun: it resumes from rank 0's
    # checkpoint and ends exactly where the uninterrupted 2-process run did (each rank's RNG state is saved)
    killed = make_project(tmp_path / "killed", two_settings)
    kill_after_epoch(killed, 3)
    done = train_stage(killed)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from" in done.stdout, done.stdout
    assert done.stdout.count("epoch 1/8:") == 0
    assert _json(killed.train_metrics)["valid"] == metrics["valid"]
    assert served_rmse(killed) == two_rmse


def test_a_failing_rank_is_named(tmp_path: Path) -> None:
    """A rank that fails stops the run with torchrun's status and that rank's error, not a hang."""
    ws = make_project(tmp_path / "p", {**LIGHT, "train.distributed": {"nproc_per_node": 2, "backend": "gloo"}})
    ws.split("valid").unlink()  # every rank fails reading it
    done = train_stage(ws)
    assert done.returncode != 0
    out = done.stderr + done.stdout
    assert "data-parallel training failed (torchrun exit status" in out
    # the first rank to fail is named with its error (torchrun stops the other, which may not get that far)
    assert re.search(r"rank [01]: DataError: \S*valid.parquet: no such split", out), out[-3000:]
    assert not ws.model.exists()


def test_a_rank_that_fails_before_training_is_said_to_have_left_no_error(tmp_path: Path) -> None:
    """A rank that dies before it could record an error (here: its module does not exist) is a `ModelError`
    that says where its own message is, not a hang and not a bare exit status."""
    with pytest.raises(ModelError, match=r"no rank recorded an error: .*its own message is in the output above"):
        launch(DistributedConfig(nproc_per_node=1, backend="gloo"), tmp_path, ["evergreen_no_such_module"])


def test_a_classifier_trains_data_parallel_and_is_calibrated_on_rank_0(tmp_path: Path) -> None:
    """Not only regression: a declared classification table (the tests' tiny one, about one row in eight of
    class 1) trains with 2 gloo processes, is calibrated once (temperature on rank 0's valid pass), and beats
    predicting the majority class (macro F1 about 0.47 here)."""
    raw = {
        **copy.deepcopy(TINY),
        "model": {**SMALL_MODEL.model_dump(mode="json"), "target_transform": "none"},
        "train": {**SMALL_TRAIN.model_dump(mode="json"), "epochs": 8,
                  "distributed": {"nproc_per_node": 2, "backend": "gloo"}},
    }  # fmt: skip
    raw["data"]["task"] = "classification"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    ws = Workspace.open(tmp_path)
    for seed, (name, rows) in enumerate([("train", 1200), ("valid", 300), ("test", 300)], start=1):
        ws.split(name).parent.mkdir(parents=True, exist_ok=True)
        synthetic(rows, seed, "classification").write_parquet(ws.split(name))
    done = train_stage(ws)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = _json(ws.train_metrics)
    assert metrics["processes"] == 2
    assert done.stdout.count("temperature ") == 1, done.stdout  # calibrated once, by rank 0
    assert metrics["calibration"]["valid_log_loss_after"] <= metrics["calibration"]["valid_log_loss_before"]
    test = pl.read_parquet(ws.split("test"))
    probabilities = TabularNet.load(ws.model).predict(test)
    assert probabilities.shape == (300, 2)
    f1 = score("classification", test["y"].to_numpy(), probabilities, [0, 1])["f1_macro"]
    assert f1 > 0.7, f1
