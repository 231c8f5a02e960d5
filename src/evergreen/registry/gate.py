"""The promotion gate as pure functions: checks in, a decision with its reasons out.

A challenger replaces the champion only when every check passes:
- the data suites passed (no critical expectation failed on raw or clean data);
- ONNX parity held (onnxruntime agrees with torch within the declared tolerance);
- it trained on at least `promote.min_train_rows` rows (a model of 8 rows beats nothing worth beating);
- it is not worse than the best baseline (or the one `promote.baseline` names) by more than `baseline_margin`
  on the declared metric (`promote.metric`; its direction from `evergreen.model.metrics.METRICS`); the margin is
  0 unless declared, so a challenger worse than a baseline is not promoted: it would serve the worse model;
- it is not worse than the champion by more than `champion_margin` on test rows that neither model trained on.
  The relative difference comes with a paired bootstrap confidence interval, so a reader can tell noise from a
  change. When too few test rows lie outside the champion's training rows (`promote.min_compare_rows`, e.g.
  after a change of split), the comparison cannot be fair and the challenger is not promoted: the reason says so.
The very first model has no champion to beat; the other checks still apply.

The decision's types (`GateDecision`, `Check`, `Comparison`) are artefact types, defined in
`evergreen.artifacts.reports`: the promotion report and the model card carry them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evergreen.artifacts.reports import Check, Comparison, GateDecision
from evergreen.model.metrics import Weights, best, resampled, within_margin, worsening
from evergreen.model.metrics import metric as metric_of

__all__ = [
    "Check", "Comparison", "GateDecision", "align_classes", "align_weights", "champion_check", "compare", "decide"
]  # fmt: skip

_CELLS_PER_CHUNK = 4_000_000  # resampled rows held at once: bounds the bootstrap's memory on a large test split


def compare(
    metric: str,
    actual: np.ndarray,
    challenger_output: np.ndarray,
    champion_output: np.ndarray,
    samples: int,
    confidence: float,
    seed: int,
    excluded_rows: int = 0,
    weights: tuple[Weights, Weights] = (None, None),
) -> Comparison:
    """Challenger against champion on the same rows: `metric` for both, and the relative worsening of the
    challenger (positive is worse, whatever the metric's direction) with a paired bootstrap interval.

    `actual` holds target values (regression) or class indices; the outputs are predictions or probabilities,
    decided with each model's decision `weights` (challenger's, champion's), aligned like the outputs.
    """
    ours_w, theirs_w = weights
    n = len(actual)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // max(n, 1))
    relative: list[np.ndarray] = []
    for start in range(0, samples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, samples - start), n))
        ours = resampled(metric, actual, challenger_output, idx, ours_w)
        theirs = resampled(metric, actual, champion_output, idx, theirs_w)
        relative.append(np.array([worsening(metric, a, b) for a, b in zip(ours, theirs, strict=True)]))
    spread = np.concatenate(relative)
    spread = spread[np.isfinite(spread)]  # ROC AUC is undefined on a resample holding one class
    every = np.arange(n)[None, :]
    challenger = float(resampled(metric, actual, challenger_output, every, ours_w)[0])
    champion = float(resampled(metric, actual, champion_output, every, theirs_w)[0])
    alpha = (1 - confidence) / 2
    return Comparison(
        metric=metric,
        challenger=challenger,
        champion=champion,
        relative_difference=worsening(metric, challenger, champion),
        ci_low=float(np.quantile(spread, alpha)) if spread.size else float("nan"),
        ci_high=float(np.quantile(spread, 1 - alpha)) if spread.size else float("nan"),
        confidence=confidence,
        rows=n,
        excluded_rows=excluded_rows,
    )


def _baseline_check(metric: str, model_value: float | None, baselines: dict[str, float | None], margin: float) -> Check:
    chosen = best(metric, baselines)
    if model_value is None:
        return Check(name="baseline", passed=False, detail=f"{metric} is undefined for the model on the test split")
    if chosen is None:
        detail = f"no baseline has a {metric} on the test split (evaluate.baselines: {', '.join(baselines)})"
        return Check(name="baseline", passed=False, detail=detail)
    name, value = chosen
    label = "best baseline " + name if len(baselines) > 1 else name
    return Check(
        name="baseline",
        passed=within_margin(metric, model_value, value, margin),
        detail=f"{metric} {model_value:.4g} vs {label} {value:.4g} (margin {margin:.0%}, "
        f"{metric_of(metric).direction})",
    )


def align_classes(output: np.ndarray, classes: list[Any], every: list[Any]) -> np.ndarray:
    """Class probabilities over `every` class (columns of classes a model does not know are 0): two models'
    outputs made comparable column by column."""
    aligned = np.zeros((len(output), len(every)))
    aligned[:, [every.index(c) for c in classes]] = output
    return aligned


def align_weights(weights: list[float], classes: list[Any], every: list[Any]) -> list[float]:
    """A model's decision weights over `every` class, as `align_classes` aligns its probabilities (1 for a class
    it does not know: its probability there is 0); empty stays empty (the most probable class)."""
    if not weights:
        return []
    aligned = np.ones(len(every))
    aligned[[every.index(c) for c in classes]] = weights
    return aligned.tolist()


def champion_check(metric: str, champion: Comparison | str | None, margin: float, rows: str = "test rows") -> Check:
    """The check against the champion: passed when the challenger is at most `margin` worse (relative) on the
    rows compared (`rows` names them in the detail). Shared by the offline gate and the shadow gate."""
    if champion is None:
        return Check(
            name="champion", passed=True, detail="no champion yet: the first model is promoted when the rest pass"
        )
    if isinstance(champion, str):  # the comparison could not be made fairly: say why, and do not promote
        return Check(name="champion", passed=False, detail=champion)
    rows = f"{champion.rows} {rows}"
    if champion.excluded_rows:
        rows += f" ({champion.excluded_rows} the champion trained on left out)"
    return Check(
        name="champion",
        passed=champion.relative_difference <= margin,
        detail=f"{metric} {champion.challenger:.4g} vs champion {champion.champion:.4g} on {rows}: "
        f"{champion.relative_difference:+.1%} worse ({champion.confidence:.0%} CI "
        f"{champion.ci_low:+.1%} .. {champion.ci_high:+.1%}; margin {margin:.0%})",
    )


def decide(
    *,
    data_suites_passed: dict[str, bool],
    parity_diff: float,
    parity_limit: float,
    metric: str,
    model_value: float | None,
    baselines: dict[str, float | None],
    baseline_margin: float,
    train_rows: int,
    min_train_rows: int,
    champion: Comparison | str | None,
    champion_margin: float,
) -> GateDecision:
    """Apply every check; promote only when all pass.

    `baselines` maps each baseline the gate may compare with to its `metric` (the best one is used);
    `champion` is the comparison with the champion, None when there is none yet, or the reason it could not
    be compared fairly (which blocks promotion).
    """
    failed_suites = [name for name, ok in data_suites_passed.items() if not ok]
    checks = [
        Check(
            name="data_suites",
            passed=not failed_suites,
            detail="all data suites passed" if not failed_suites else f"failed suites: {', '.join(failed_suites)}",
        ),
        Check(
            name="onnx_parity",
            passed=parity_diff <= parity_limit,
            detail=f"max |onnx - torch| = {parity_diff:.3g} (limit {parity_limit:.3g})",
        ),
        Check(
            name="training_rows",
            passed=train_rows >= min_train_rows,
            detail=f"trained on {train_rows} rows (promote.min_train_rows {min_train_rows})",
        ),
        _baseline_check(metric, model_value, baselines, baseline_margin),
        champion_check(metric, champion, champion_margin),
    ]
    reasons = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
    return GateDecision(
        promote=all(c.passed for c in checks),
        checks=checks,
        comparison=champion if isinstance(champion, Comparison) else None,
        reasons=reasons or ["every check passed"],
    )
