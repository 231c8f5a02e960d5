"""`model.type: auto`: the candidates trained on the same split within one time budget, chosen on valid only.

The candidates are the quick ones first (`QUICK`: LightGBM and the linear model, the gate's own baselines, so
there is a result even when the networks use up the budget), each deep family the config knows (`mlp`, and
`tabm` where declared; TabM capped to CPU sizes on a CPU, `cpu_sized`), and the ensemble: the equal-weight
average of the subset of candidates that scores best on valid (kept only when it beats every single one there).
Each deep candidate gets an equal share of the time left (`train.time_budget_s`, passed to `train_model`, which
stops after the epoch that would end past it). Every candidate is scored on the valid split by the gated metric,
in target units, through its own predictions; the test split is never read here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import polars as pl

from evergreen.config import DataConfig, ModelConfig, TrainConfig
from evergreen.model.candidates import Candidate, NetworkCandidate, with_decision
from evergreen.model.ensemble import best_blend, equal_blend, valid_metric
from evergreen.model.linear import fit_linear_model
from evergreen.model.metrics import metric as metric_of
from evergreen.model.metrics import score
from evergreen.model.preprocess import Preprocessing, encode_target, fit_preprocessing
from evergreen.model.train import WarmStart, resolve_device, train_model
from evergreen.model.trees import fit_trees

AUTO_BUDGET_S = 300.0  # train.time_budget_s when none is declared: a few minutes on a laptop's CPU
TREE_SHARE = 0.25  # of the budget, at most, for LightGBM (it rarely needs it: early stopping ends it sooner)
DEEP_FAMILIES = ("mlp", "tabm")  # tried in this order, where `model.type` knows them
TABM_CPU = {"k": 8, "d_block": 256}  # TabM's caps on a CPU (`cpu_sized`)
MIN_EPOCHS = 5  # a network that ran fewer (its share of the budget ended it) is flagged on the leaderboard

Matrices = tuple[np.ndarray, np.ndarray]  # (x, y): the input matrix and the target as the metrics read it
QuickFit = Callable[[Preprocessing, Matrices, Matrices, int, "dict[str, Any] | None", float],
                    "tuple[Candidate, dict[str, Any]]"]  # fmt: skip


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


def _lightgbm(prep: Preprocessing, train: Matrices, valid: Matrices, seed: int, params: dict[str, Any] | None,
              deadline: float) -> tuple[Candidate, dict[str, Any]]:  # fmt: skip
    trees = fit_trees(prep, train, valid, seed=seed, params=params, deadline=deadline)
    return trees, {k: trees.info[k] for k in ("best_round", "stopped_by_deadline")}


def _linear(prep: Preprocessing, train: Matrices, valid: Matrices, seed: int, params: dict[str, Any] | None,
            deadline: float) -> tuple[Candidate, dict[str, Any]]:  # fmt: skip
    model = fit_linear_model(prep, train, valid, params)
    return model, {"penalty": model.info["penalty"]}


# the quick candidates, fitted first (seconds, even on a large table) so that there is a result whatever the
# networks do: LightGBM, and the linear model, which the gate's `linear` baseline is: on small tables it is
# often the best, and the choice on valid must be able to pick it
QUICK: tuple[tuple[str, QuickFit], ...] = (("lightgbm", _lightgbm), ("linear", _linear))


def cpu_sized(family: str, model_cfg: ModelConfig, cfg: TrainConfig) -> tuple[ModelConfig, dict[str, Any]]:
    """The family's config for this run, and what was changed (for the leaderboard): on a CPU, TabM at its GPU
    sizes (k 32, blocks of 512) runs about 85 s an epoch on 14k rows on one core, so it would stop after an
    epoch or two of its share; it is capped at `TABM_CPU` (about 16x fewer operations a row)."""
    family_cfg = model_cfg.model_copy(update={"type": family})
    if family != "tabm" or resolve_device(cfg.device).type != "cpu":
        return family_cfg, {}
    sized = {k: min(getattr(model_cfg, k), v) for k, v in TABM_CPU.items()}
    changed = {k: v for k, v in sized.items() if v != getattr(model_cfg, k)}
    return family_cfg.model_copy(update=sized), ({"cpu_sized": changed} if changed else {})


def _too_short(epochs: int, share: float, declared: int) -> dict[str, str]:
    """A leaderboard note when a network's share of the budget ended it after too few epochs to judge the family
    (TabM on a loaded 2-core CPU: one epoch of hotel_rates' 9.6k rows took 86 s, at CPU sizes)."""
    if epochs >= min(MIN_EPOCHS, declared):
        return {}
    return {"note": f"{epochs} epoch(s) in its {share:.0f} s share: too few to judge it; give train.time_budget_s "
                    "more, or a GPU"}  # fmt: skip


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
    spent_s: float = 0.0,
) -> list[Entry]:
    """Train every candidate within `cfg.time_budget_s` (or `AUTO_BUDGET_S`); `on_epoch(family, record)`.

    The budget is the whole stage's: `spent_s` (the stage's start-up before this call) and `finish_reserve`
    (writing the candidates afterwards) come out of it. Counted from the first fit only, a 120 s budget ended
    with a 139-148 s stage on 50k rows."""
    started = time.perf_counter()
    budget = cfg.time_budget_s or AUTO_BUDGET_S
    fits_end = started + max(budget - spent_s - finish_reserve(budget), 0.0)
    prep = fit_preprocessing(train, data, model_cfg)
    x_valid = prep.matrix(valid)
    train_xy, actual = (prep.matrix(train), _units(train, prep)), _units(valid, prep)
    outputs: list[tuple[Entry, np.ndarray]] = []
    for family, fit in QUICK:
        candidate, detail = fit(prep, train_xy, (x_valid, actual), cfg.seed, params,
                                started + TREE_SHARE * budget)  # fmt: skip
        candidate = with_decision(candidate, metric, x_valid, actual)
        output = candidate.predict_matrix(x_valid)
        entry = Entry(family, candidate, valid_metric(prep, metric, actual, output),
                      getattr(candidate, "info", {}).get("seconds", 0.0), detail)  # fmt: skip
        outputs.append((entry, output))
    deep = families if families is not None else deep_families()
    for i, family in enumerate(deep):
        share = max(1.0, (fits_end - time.perf_counter()) / (len(deep) - i))
        family_cfg, sized = cpu_sized(family, model_cfg, cfg)

        def log(record: dict[str, float], family: str = family) -> None:
            if on_epoch is not None:
                on_epoch(family, record)

        result = train_model(train, valid, data, family_cfg, cfg.model_copy(update={"time_budget_s": share}),
                             checkpoint=checkpoint, on_epoch=log, params=params, warm=warm)  # fmt: skip
        net = with_decision(NetworkCandidate(result.model, result.metrics), metric, x_valid, actual)
        output = net.predict_matrix(x_valid)
        epochs = result.metrics["epochs_run"]
        detail = {"best_epoch": result.metrics["best_epoch"], "epochs_run": epochs, "budget_s": round(share, 1),
                  **sized, **_too_short(epochs, share, cfg.epochs)}  # fmt: skip
        entry = Entry(family, net, valid_metric(prep, metric, actual, output), result.metrics["seconds"], detail)
        outputs.append((entry, output))
    return [entry for entry, _ in outputs] + _blend(prep, metric, x_valid, actual, outputs)


def finish_reserve(budget: float) -> float:
    """Seconds of a budget kept for after the fits: the blend's search, saving every candidate, DVC's hashing
    (about 9 s on 50k rows); a tenth of the budget, at most 15 s."""
    return min(0.1 * budget, 15.0)


def _blend(
    prep: Preprocessing, metric: str, x_valid: np.ndarray, actual: np.ndarray, outputs: list[tuple[Entry, np.ndarray]]
) -> list[Entry]:
    """The equal-weight blend of the candidates whose average scores best on valid (`ensemble.best_blend`),
    when it beats every single candidate there."""
    started = time.perf_counter()
    scored = {e.family: (e, o) for e, o in outputs if e.valid is not None and np.isfinite(e.valid)}
    found = best_blend(prep, metric, actual, {family: o for family, (_, o) in scored.items()})
    if found is None or not all(better(metric, found[1], e.valid) for e, _ in scored.values()):
        return []
    members = [scored[family][0] for family in found[0]]
    model = with_decision(equal_blend([e.candidate for e in members]), metric, x_valid, actual)
    seconds = sum(e.seconds for e in members) + time.perf_counter() - started
    return [Entry("ensemble", model, found[1], round(seconds, 2), {"parts": model.parts})]


def valid_scores(entry: Entry, valid: pl.DataFrame) -> dict[str, Any]:
    """Every metric of the entry's candidate on the valid split (for `metrics/train.json`)."""
    prep = entry.candidate.prep
    output = entry.candidate.predict_matrix(prep.matrix(valid))
    scores = score(prep.task, _units(valid, prep), output, prep.classes, prep.decision_weights)
    return {k: v for k, v in scores.items() if v is not None}
