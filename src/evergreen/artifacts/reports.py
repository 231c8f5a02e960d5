"""The stages' metrics files that later steps read: `metrics/eval.json`, `metrics/export.json` and
`metrics/promotion.json`, and the gate's decision that the promotion report and the model card carry."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field

from evergreen.artifacts.base import Artifact, Record

__all__ = [
    "Check",
    "Comparison",
    "EvalReport",
    "ExportReport",
    "GateDecision",
    "PromotionReport",
    "Scores",
    "ShadowVerdict",
    "Timings",
]

Scores = dict[str, float | None]
"""Metric name -> value, the keys of `evergreen.model.metrics.METRICS` (ROC AUC is None on a one-class split)."""


class EvalReport(Artifact):
    """`metrics/eval.json`, written by the `evaluate` stage: the model and each baseline on the test split,
    and (classification) the model's precision, recall, F1 and support per class."""

    model: Scores
    baselines: dict[str, Scores] = Field(default_factory=dict)
    per_class: dict[str, dict[str, float]] | None = None  # class label -> precision, recall, f1, support
    # set only when the baselines fit on a sample of train (`evaluate.baseline_rows`): {"rows", "of"}
    baselines_fit_on: dict[str, int] | None = None

    def baseline_values(self, metric: str, only: str = "best") -> dict[str, float | None]:
        """Each baseline's `metric` (or only the one named; "best" keeps them all for the gate to pick from)."""
        return {name: scores.get(metric) for name, scores in self.baselines.items() if only in ("best", name)}


class Timings(Record):
    """Batch-1 latency and batched throughput of one runtime."""

    latency_p50_ms: float
    latency_p99_ms: float
    throughput_rows_per_s: float


class ExportReport(Artifact):
    """`metrics/export.json`, written by the `export` stage: ONNX parity with torch, and both runtimes' speed."""

    parity_max_abs_diff: float
    parity_tolerance: float  # as declared (relative to the target's scale for regression)
    parity_limit: float  # the tolerance in output units: what `parity_max_abs_diff` was held to
    parity_rows: int
    opset: int
    batch_size: int  # the rows of one throughput batch
    onnxruntime: Timings
    torch: Timings


class Check(Record):
    """One check of the promotion gate."""

    name: str
    passed: bool
    detail: str


class Comparison(Record):
    """Challenger against champion on the same rows: metric values and the relative difference with its CI."""

    metric: str
    challenger: float
    champion: float
    # the challenger's relative worsening, (challenger - champion) / |champion| signed so that > 0 is worse
    # whatever the metric's direction (`evergreen.model.metrics.worsening`)
    relative_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    rows: int  # test rows compared: those neither model trained on
    excluded_rows: int = 0  # test rows left out because the champion had trained on them


class GateDecision(Record):
    """The promotion gate's verdict (`evergreen.registry.gate.decide`): every check, and why."""

    promote: bool
    checks: list[Check]
    comparison: Comparison | None = None
    reasons: list[str] = Field(default_factory=list)


class ShadowVerdict(Record):
    """The shadow gate's verdict on a challenger scored beside the champion on live traffic
    (`evergreen.registry.shadow`): the evidence (labelled records, both metrics and the interval) and why.

    Besides the gate's own outcomes, a shadow can end unjudged: "rolled_back" (a rollback made its version the
    champion) or "replaced" (a newer challenger took the shadow, named in `replaced_by`)."""

    outcome: Literal["promoted", "discarded", "waiting", "rolled_back", "replaced"]
    version: str  # the shadow
    champion: str | None  # the champion it was compared with
    labelled_rows: int  # labelled live records both scored
    min_labels: int
    waited_hours: float  # since it went into the shadow
    max_wait_hours: float
    comparison: Comparison | None = None  # shadow (challenger) against champion on those records, once enough
    reasons: list[str] = Field(default_factory=list)
    time: str | None = None  # when the verdict was reached (ISO 8601, UTC)
    replaced_by: str | None = None  # the challenger that took its place (outcome "replaced")


class PassedOver(Record):
    """A candidate better on valid than the one promoted, which the gate refused, and why."""

    family: str
    reasons: list[str]


class PromotionReport(Artifact):
    """`metrics/promotion.json`, written by the `promote` stage whatever it decided; read by the retrain flow.

    The gate's fields (`promote`, `checks`, `comparison`) are absent when no gate ran (the challenger was
    byte-identical to the champion).
    """

    promoted: bool
    version: str | None = None  # the registry version the challenger became, when promoted or put in the shadow
    shadow: bool = False  # it passed but went to the shadow (`promote.shadow`), not yet the champion
    champion_before: str | None = None
    champion_after: str | None = None
    promote: bool | None = None  # the gate's verdict
    checks: list[Check] = Field(default_factory=list)
    comparison: Comparison | None = None
    reasons: list[str] = Field(default_factory=list)
    family: str | None = None  # the candidate judged last (the one promoted, when one was)
    # with `model.type: auto`: the candidates better on valid that the gate refused before `family`
    passed_over: list[PassedOver] = Field(default_factory=list)

    @classmethod
    def from_gate(
        cls,
        decision: GateDecision,
        version: str | None,
        champion_before: str | None,
        champion_after: str | None,
        shadow: bool = False,
        family: str | None = None,
        passed_over: list[PassedOver] | None = None,
    ) -> Self:
        """The report of a gate that ran; `shadow`: the challenger passed and went to the shadow."""
        return cls(
            **({"family": family} if family else {}),
            **({"passed_over": passed_over} if passed_over else {}),
            promoted=decision.promote and not shadow,
            version=version,
            **({"shadow": True} if shadow else {}),
            champion_before=champion_before,
            champion_after=champion_after,
            promote=decision.promote,
            checks=decision.checks,
            comparison=decision.comparison,
            reasons=decision.reasons,
        )
