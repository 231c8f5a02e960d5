"""The promotion gate as pure functions: checks in, a decision with its reasons out.

A challenger replaces the champion only when every check passes:
- the data suites passed (no critical expectation failed on raw or clean data);
- ONNX parity held (onnxruntime agrees with torch within the declared tolerance);
- it is not worse than the declared baseline by more than `baseline_margin` on the task's gated metric
  (`evergreen.model.metrics.GATED`, its direction from the same table);
- it is not worse than the champion by more than `champion_margin`, scored on the same frozen rows. The
  relative difference comes with a bootstrap confidence interval, so a reader can tell noise from a change.
The very first model has no champion to beat; the other checks still apply.

The decision's types (`GateDecision`, `Check`, `Comparison`) are artefact types, defined in
`evergreen.artifacts.reports`: the promotion report and the model card carry them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evergreen.artifacts.reports import Check, Comparison, GateDecision
from evergreen.model.metrics import GATED, within_margin

__all__ = ["Check", "Comparison", "GateDecision", "compare", "decide", "per_row_loss"]


def per_row_loss(task: str, actual: np.ndarray, output: np.ndarray, classes: list[Any] | None = None) -> np.ndarray:
    """Squared error (regression) or negative log-likelihood of the true class (classification), per row.

    Aggregated (`_aggregate`), these are the task's gated metric: RMSE, or log loss.
    """
    if task == "regression":
        return (np.asarray(output, dtype=np.float64) - np.asarray(actual, dtype=np.float64)) ** 2
    index = {c: i for i, c in enumerate(classes or [])}
    rows = np.array([index.get(a, -1) for a in actual])
    probs = np.clip(np.asarray(output, dtype=np.float64), 1e-15, 1)
    picked = np.where(rows >= 0, probs[np.arange(len(rows)), np.clip(rows, 0, None)], 1e-15)
    return -np.log(picked)


def _aggregate(task: str, losses: np.ndarray, axis: int = -1) -> np.ndarray:
    mean = losses.mean(axis=axis)
    return np.sqrt(mean) if task == "regression" else mean


def compare(
    task: str, challenger_loss: np.ndarray, champion_loss: np.ndarray, samples: int, confidence: float, seed: int
) -> Comparison:
    """Relative difference of the primary metric on the same rows, with a paired bootstrap interval."""
    n = len(challenger_loss)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    ours, theirs = _aggregate(task, challenger_loss[idx]), _aggregate(task, champion_loss[idx])
    relative = ours / np.maximum(theirs, 1e-12) - 1
    alpha = (1 - confidence) / 2
    challenger, champion = float(_aggregate(task, challenger_loss)), float(_aggregate(task, champion_loss))
    return Comparison(
        metric=GATED[task],
        challenger=challenger,
        champion=champion,
        relative_difference=challenger / max(champion, 1e-12) - 1,
        ci_low=float(np.quantile(relative, alpha)),
        ci_high=float(np.quantile(relative, 1 - alpha)),
        confidence=confidence,
        rows=n,
    )


def decide(
    *,
    data_suites_passed: dict[str, bool],
    parity_diff: float,
    parity_limit: float,
    metric: str,
    model_value: float,
    baseline_name: str,
    baseline_value: float,
    baseline_margin: float,
    comparison: Comparison | None,
    champion_margin: float,
) -> GateDecision:
    """Apply every check; promote only when all pass. `metric`'s direction comes from the metrics table; the
    champion check compares per-row losses, where lower is always better."""
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
            name="baseline",
            passed=within_margin(metric, model_value, baseline_value, baseline_margin),
            detail=f"{metric} {model_value:.4g} vs {baseline_name} {baseline_value:.4g} (margin {baseline_margin:.0%})",
        ),
    ]
    if comparison is None:
        first = "no champion yet: the first model is promoted when the rest pass"
        checks.append(Check(name="champion", passed=True, detail=first))
    else:
        checks.append(
            Check(
                name="champion",
                passed=comparison.relative_difference <= champion_margin,
                detail=f"{metric} {comparison.challenger:.4g} vs champion {comparison.champion:.4g}: "
                f"{comparison.relative_difference:+.1%} ({comparison.confidence:.0%} CI "
                f"{comparison.ci_low:+.1%} .. {comparison.ci_high:+.1%}; margin {champion_margin:.0%})",
            )
        )
    reasons = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
    return GateDecision(
        promote=all(c.passed for c in checks),
        checks=checks,
        comparison=comparison,
        reasons=reasons or ["every check passed"],
    )
