"""`model.type: auto`: the candidates trained on the same split within one time budget, chosen on valid only.

The candidates are LightGBM (first: quick, so there is a result even when the networks use up the budget), each
deep family the config knows (`mlp`, and `tabm` where declared), and the weighted ensemble of the best network
and the trees (kept only when it beats both on valid). Each deep candidate gets an equal share of the time left
(`train.time_budget_s`, passed to `train_model`, which stops after the epoch that would end past it). Every
candidate is scored on the valid split by the gated metric, in target units, through its own predictions; the
test split is never read here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import polars as pl

from evergreen.config import DataConfig, ModelConfig, TrainConfig
from evergreen.model.candidates import Candidate, NetworkCandidate
from evergreen.model.ensemble import EnsembleModel, fit_weight, valid_metric
from evergreen.model.metrics import metric as metric_of
from evergreen.model.metrics import score
from evergreen.model.preprocess import Preprocessing, encode_target, fit_preprocessing
from evergreen.model.train import WarmStart, train_model
from evergreen.model.trees import fit_trees

AUTO_BUDGET_S = 300.0  # train.time_budget_s when none is declared: a few minutes on a laptop's CPU
TREE_SHARE = 0.25  # of the budget, at most, for LightGBM (it rarely needs it: early stopping ends it sooner)
DEEP_FAMILIES = ("mlp", "tabm")  # tried in this order, where `model.type` knows them


@dataclass
class Entry:
    """One candidate on the leaderboard: its valid metric (None when undefined) and fit seconds."""

    family: str
    candidate: Candidate
    valid: float | None
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


def deep_families() -> list[str]:
    """The deep families `model.type: auto` tries: those of `DEEP_FAMILIES` the config accepts."""
    known = get_args(ModelConfig.model_fields["type"].annotation)
    return [family for family in DEEP_FAMILIES if family in known]


def _units(frame: pl.DataFrame, prep: Preprocessing) -> np.ndarray:
    """The target as the metrics read it: target units (regression) or class indices."""
    if prep.task == "regression":
        return frame[prep.target].cast(pl.Float64).to_numpy()
    return encode_target(frame, prep)


def better(name: str, a: float | None, b: float | None) -> bool:
    """Whether metric value `a` is strictly better than `b` (an undefined value is never better)."""
    if a is None or not np.isfinite(a):
        return False
    if b is None or not np.isfinite(b):
        return True
    return a < b if metric_of(name).lower_is_better else a > b


def choose(entries: list[Entry], name: str) -> Entry:
    """The best entry on valid by metric `name`; the first listed wins a tie."""
    chosen = entries[0]
    for entry in entries[1:]:
        if better(name, entry.valid, chosen.valid):
            chosen = entry
    return chosen


def train_candidates(
    train: pl.DataFrame,
    valid: pl.DataFrame,
    data: DataConfig,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    metric: str,
    *,
    checkpoint: Any = None,
    on_epoch: Callable[[str, dict[str, float]], None] | None = None,
    params: dict[str, Any] | None = None,
    warm: WarmStart | None = None,
    families: list[str] | None = None,
) -> list[Entry]:
    """Train every candidate within `cfg.time_budget_s` (or `AUTO_BUDGET_S`); `on_epoch(family, record)`."""
    started = time.perf_counter()
    budget = cfg.time_budget_s or AUTO_BUDGET_S
    prep = fit_preprocessing(train, data, model_cfg)
    x_train, x_valid = prep.matrix(train), prep.matrix(valid)
    y_train, actual = _units(train, prep), _units(valid, prep)
    trees = fit_trees(prep, (x_train, y_train), (x_valid, actual), seed=cfg.seed, params=params,
                      deadline=started + TREE_SHARE * budget)  # fmt: skip
    trees_valid = trees.predict_matrix(x_valid)
    entries = [Entry("lightgbm", trees, valid_metric(prep, metric, actual, trees_valid), trees.info["seconds"],
                     {k: trees.info[k] for k in ("best_round", "stopped_by_deadline")})]  # fmt: skip
    deep = families if families is not None else deep_families()
    networks: list[tuple[Entry, np.ndarray]] = []
    for i, family in enumerate(deep):
        share = max(1.0, (started + budget - time.perf_counter()) / (len(deep) - i))
        family_cfg = model_cfg.model_copy(update={"type": family})

        def log(record: dict[str, float], family: str = family) -> None:
            if on_epoch is not None:
                on_epoch(family, record)

        result = train_model(train, valid, data, family_cfg, cfg.model_copy(update={"time_budget_s": share}),
                             checkpoint=checkpoint, on_epoch=log, params=params, warm=warm)  # fmt: skip
        net = NetworkCandidate(result.model, result.metrics)
        output = net.predict_matrix(x_valid)
        detail = {"best_epoch": result.metrics["best_epoch"], "epochs_run": result.metrics["epochs_run"],
                  "budget_s": round(share, 1)}  # fmt: skip
        entry = Entry(family, net, valid_metric(prep, metric, actual, output), result.metrics["seconds"], detail)
        entries.append(entry)
        networks.append((entry, output))
    if networks:
        entry, output = networks[0]
        for other, other_output in networks[1:]:
            if better(metric, other.valid, entry.valid):
                entry, output = other, other_output
        entries += _ensemble(prep, metric, actual, entry, output, entries[0], trees_valid)
    return entries


def _ensemble(
    prep: Preprocessing, metric: str, actual: np.ndarray, net: Entry, net_valid: np.ndarray, trees: Entry,
    trees_valid: np.ndarray,
) -> list[Entry]:  # fmt: skip
    """The ensemble of the best network and the trees, when its weight chosen on valid beats both there."""
    started = time.perf_counter()
    weight, value = fit_weight(prep, metric, actual, net_valid, trees_valid)
    if not (better(metric, value, net.valid) and better(metric, value, trees.valid)):
        return []
    model = EnsembleModel(net.candidate, trees.candidate, weight, {"weight": weight})
    seconds = net.seconds + trees.seconds + time.perf_counter() - started
    return [Entry("ensemble", model, value, round(seconds, 2), {"parts": model.parts})]


def valid_scores(entry: Entry, valid: pl.DataFrame) -> dict[str, Any]:
    """Every metric of the entry's candidate on the valid split (for `metrics/train.json`)."""
    prep = entry.candidate.prep
    output = entry.candidate.predict_matrix(prep.matrix(valid))
    return {k: v for k, v in score(prep.task, _units(valid, prep), output, prep.classes).items() if v is not None}
