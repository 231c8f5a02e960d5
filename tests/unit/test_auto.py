"""`model.type: auto`: candidates chosen on valid only, the leaderboard, and the stages on a tree model."""

from __future__ import annotations

import copy
import json

import numpy as np
import polars as pl
import pytest

from evergreen.config import parse_params
from evergreen.errors import ConfigError
from evergreen.inference import load_version, predict
from evergreen.model.auto import Entry, better, choose
from evergreen.model.candidates import load_candidate
from evergreen.stages import evaluate as evaluate_stage
from evergreen.stages import export as export_stage
from evergreen.stages import train as train_stage
from evergreen.workspace import Workspace
from tests.harness import TINY, synthetic


def _entry(family: str, valid: float | None) -> Entry:
    return Entry(family, candidate=None, valid=valid, seconds=1.0)  # type: ignore[arg-type]


def test_choose_takes_the_best_on_valid_in_the_metrics_direction():
    entries = [_entry("lightgbm", 10.0), _entry("mlp", 8.0), _entry("ensemble", None), _entry("tabm", 9.0)]
    assert choose(entries, "rmse").family == "mlp"
    assert choose(entries, "f1_macro").family == "lightgbm"  # higher is better
    assert not better("rmse", None, 1.0) and better("rmse", 1.0, None)
    assert choose([_entry("lightgbm", 5.0), _entry("mlp", 5.0)], "rmse").family == "lightgbm"  # a tie: first


def _steps(n: int, seed: int) -> pl.DataFrame:
    """A table trees fit at once and a network trained for two epochs does not: steps in temp and hour."""
    frame = synthetic(n, seed)
    step = 200 * (pl.col("temp") > 0.5).cast(pl.Int64) + 120 * pl.col("hr").is_between(7, 9).cast(pl.Int64)
    return frame.with_columns(y=(step + 10 * pl.col("weather")).cast(pl.Int64))


def _workspace(tmp_path, **train) -> Workspace:
    raw = copy.deepcopy(TINY)
    raw["model"] = {"type": "auto", "hidden": [8], "embedding_dim": 2}
    raw["train"] = {"epochs": 2, "batch_size": 64, "device": "cpu", "time_budget_s": 60, **train}
    raw["evaluate"] = {"baselines": ["mean", "lightgbm"]}
    raw["export"] = {"latency_runs": 10, "throughput_batch": 64}
    ws = Workspace(tmp_path, parse_params(raw))
    ws.split("train").parent.mkdir(parents=True)
    for name, (n, seed) in {"train": (800, 1), "valid": (200, 2), "test": (200, 3)}.items():
        _steps(n, seed).write_parquet(ws.split(name))
    return ws


@pytest.mark.slow
def test_auto_picks_the_trees_where_they_win_on_valid_and_every_stage_takes_them(tmp_path):
    ws = _workspace(tmp_path)
    train_stage.run(ws)
    index = json.loads((ws.candidates / "index.json").read_text())
    rows = {r["family"]: r for r in index["candidates"]}
    assert {"lightgbm", "mlp"} <= set(rows)
    assert rows["lightgbm"]["chosen"] and rows["lightgbm"]["valid"] < rows["mlp"]["valid"]
    assert min(r["valid"] for r in rows.values()) == rows["lightgbm"]["valid"]  # chosen: the best on valid
    assert load_candidate(ws.model).family == "lightgbm"
    assert (ws.models_dir / rows["mlp"]["file"]).exists()
    assert json.loads(ws.train_metrics.read_text())["model_type"] == "lightgbm"

    evaluate_stage.run(ws)
    board = json.loads(ws.leaderboard.read_text())
    assert board["metric"] == "rmse" and all(r["test"] is not None for r in board["candidates"])
    report = json.loads(ws.eval_metrics.read_text())
    assert board["candidates"][0]["test"] == report["model"]["rmse"]

    export_stage.run(ws)
    exported = json.loads(ws.export_metrics.read_text())
    assert exported["parity_max_abs_diff"] <= exported["parity_limit"]
    served = load_version(ws.models_dir, "challenger")
    test = pl.read_parquet(ws.split("test"))
    rmse = float(np.sqrt(np.mean((predict(served, test) - test["y"].to_numpy()) ** 2)))
    assert rmse == pytest.approx(report["model"]["rmse"], rel=1e-4)


def test_auto_refuses_a_distributed_run_by_name(tmp_path):
    ws = _workspace(tmp_path, distributed={"nproc_per_node": 2})
    with pytest.raises(ConfigError, match="model.type auto .* train.distributed"):
        train_stage.run(ws)
