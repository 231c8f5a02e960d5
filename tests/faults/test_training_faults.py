"""Rerunning training: a forced rerun of a finished run trains again; a killed run still resumes.

`dvc repro -f -s train` used to "resume" the finished checkpoint in seconds and train nothing. The
checkpoint now records whether its run finished (all epochs, or stopped early); only an unfinished one
resumes. Epochs that really run print one line each when stderr is not a terminal, which these tests read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from evergreen.config import Params, with_overrides
from evergreen.errors import ConfigError
from evergreen.model import distributed
from evergreen.model.train import TrainResult, train_model
from evergreen.stages import train as train_stage
from evergreen.workspace import Workspace
from tests.harness import SMALL_MODEL, SMALL_TRAIN, synthetic

pytestmark = pytest.mark.slow  # each trains a small network a few times: about 25 s in all
CFG = SMALL_TRAIN.model_copy(update={"epochs": 3})


def _train(params: Params, checkpoint: Path, cfg=CFG, **kwargs: Any) -> TrainResult:
    train, valid = synthetic(300, 1), synthetic(100, 2)
    return train_model(train, valid, params.data, SMALL_MODEL, cfg, checkpoint=checkpoint, **kwargs)


def _epochs_run(out: str) -> list[str]:
    return [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch ")]


def _same(a: TrainResult, b: TrainResult) -> bool:
    drop = {"seconds"}
    return {k: v for k, v in a.metrics.items() if k not in drop} == {
        k: v for k, v in b.metrics.items() if k not in drop
    } and a.history == b.history


def test_a_forced_rerun_of_a_finished_run_trains_from_scratch(tiny, tmp_path, capsys):
    """With the checkpoint of a run that did all its epochs, training runs every epoch again (one line says
    why), rewrites the checkpoint, and ends exactly where the first run did."""
    checkpoint = tmp_path / "checkpoint.pt"
    first = _train(tiny, checkpoint)
    assert _epochs_run(capsys.readouterr().out) == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    written = checkpoint.stat().st_mtime_ns

    rerun = _train(tiny, checkpoint)
    out = capsys.readouterr().out
    assert f"{checkpoint} is a finished run (ran all epochs, epoch 3): training from scratch" in out
    assert "resuming" not in out
    assert _epochs_run(out) == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert checkpoint.stat().st_mtime_ns > written
    assert _same(rerun, first)


def test_a_forced_rerun_of_an_early_stopped_run_trains_from_scratch(tiny, tmp_path, capsys):
    """A run that stopped early (patience ran out) is finished too: its rerun trains again from epoch 1."""
    cfg = SMALL_TRAIN.model_copy(update={"epochs": 40, "patience": 1, "lr": 0.05})
    checkpoint = tmp_path / "checkpoint.pt"
    first = _train(tiny, checkpoint, cfg=cfg)
    assert first.metrics["stopped_early"]  # the premise: patience 1 stops well before 40 epochs
    epochs = len(_epochs_run(capsys.readouterr().out))

    rerun = _train(tiny, checkpoint, cfg=cfg)
    out = capsys.readouterr().out
    assert f"is a finished run (stopped early, epoch {epochs}): training from scratch" in out
    assert len(_epochs_run(out)) == epochs and _epochs_run(out)[0] == "epoch 1/40"
    assert _same(rerun, first)


class _Killed(Exception):
    pass


def test_a_killed_run_still_resumes_to_the_same_result(tiny, tmp_path, capsys):
    """A checkpoint of an unfinished run (killed after epoch 2 of 3) is resumed, not restarted: only epoch 3
    runs, and the result equals an uninterrupted run's."""
    uninterrupted = _train(tiny, tmp_path / "a.pt")

    def kill_after_2(record: dict[str, float]) -> None:
        if record["epoch"] == 2:
            raise _Killed

    checkpoint = tmp_path / "b.pt"
    with pytest.raises(_Killed):
        _train(tiny, checkpoint, on_epoch=kill_after_2)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    capsys.readouterr()
    resumed = _train(tiny, checkpoint)
    out = capsys.readouterr().out
    assert f"resuming from {checkpoint} after epoch 2" in out and "finished run" not in out
    assert _epochs_run(out) == ["epoch 3/3"]
    assert _same(resumed, uninterrupted)


def test_a_checkpoint_that_is_not_a_dict_is_ignored(tiny, tmp_path, capsys):
    """A file torch loads but that is no checkpoint (a bare tensor) is ignored with one line, not a crash."""
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save(torch.zeros(3), checkpoint)
    result = _train(tiny, checkpoint)
    assert "it is not a training checkpoint" in capsys.readouterr().out
    assert result.metrics["epochs_run"] == 3


@pytest.mark.parametrize(
    ("distributed", "named"),
    [
        ({"nproc_per_node": 0}, "train.distributed.nproc_per_node"),
        ({"nproc_per_node": 2, "backend": "mpi"}, "train.distributed.backend"),
        ({"nproc_per_node": 2, "nnodes": 2}, "rdzv_endpoint"),
        ({"nproc_per_node": 2, "processes": 4}, "train.distributed.processes"),
    ],
)
def test_a_bad_distributed_declaration_names_the_key(tiny, distributed, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        with_overrides(tiny, {"train.distributed": distributed})


def test_nccl_without_cuda_stops_before_any_process_starts(tiny, tmp_path, monkeypatch):
    """The backend is checked where the stage runs: NCCL on a machine without CUDA is a clear ConfigError."""
    for name in distributed.LAUNCHED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    params = with_overrides(tiny, {"train.distributed": {"nproc_per_node": 2, "backend": "nccl"}})
    with pytest.raises(ConfigError, match="backend is 'nccl', which needs CUDA"):
        train_stage.run(Workspace(tmp_path, params))
    assert not (tmp_path / "models").exists()
