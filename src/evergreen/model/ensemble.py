"""A weighted average of two candidates as ONE ONNX graph; nested, the equal-weight blend of several.

`model.type: auto`'s ensemble is the equal-weight average of the subset of its candidates (2 to `MAX_BLEND`)
that scores best on valid (`best_blend`, `equal_blend`); it is a candidate only when it beats every single one
there. `fit_weight` chooses one weight on valid from a grid (w in 0, 0.05, ..., 1), for a two-part mix.
Its graph is the two parts' graphs side by side (every name prefixed), reading the one shared input and
returning `w * a + (1 - w) * b`: predictions in target units [N], or probabilities [N, C], which stay
probabilities. Torch-free: the parts bring their own graphs."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from evergreen.inference import INPUT_NAME
from evergreen.model.metrics import decision_for, score
from evergreen.model.metrics import metric as metric_of
from evergreen.model.preprocess import Preprocessing

if TYPE_CHECKING:  # onnx is imported where a graph is built: training never pays for it
    import onnx

FAMILY = "ensemble"
KIND = "ensemble"
WEIGHT_STEP = 0.05
MAX_BLEND = 4  # members of `model.type: auto`'s equal-weight blend (`best_blend`), at most


class Part(Protocol):
    """What the ensemble needs of each part: its family, preprocessing, predictions, graph and saved form."""

    family: str
    prep: Preprocessing

    def predict_matrix(self, x: np.ndarray) -> np.ndarray: ...

    def to_onnx(self, opset: int) -> bytes: ...

    def to_dict(self) -> dict[str, Any]: ...


def valid_metric(prep: Preprocessing, name: str, actual: np.ndarray, output: np.ndarray) -> float | None:
    """The metric `name` of `output` against `actual` (target units, or class indices), a classifier's classes
    decided as its model will decide them: with the decision weights fitted on these rows (`decision_for`)."""
    weights = decision_for(name, prep.task, actual, output, len(prep.classes))
    return score(prep.task, actual, output, prep.classes, weights).get(name)


def fit_weight(
    prep: Preprocessing, name: str, actual: np.ndarray, first: np.ndarray, second: np.ndarray,
    step: float = WEIGHT_STEP,
) -> tuple[float, float]:  # fmt: skip
    """The weight of `first` (the rest is `second`'s) that scores best on `actual` by metric `name`, from a grid
    0, step, ..., 1; with its score. Ties go to the weight nearest an even mix, the least committed choice."""
    better = -1.0 if metric_of(name).lower_is_better else 1.0
    grid = np.round(np.linspace(0.0, 1.0, int(round(1 / step)) + 1), 6)
    scored = []
    for w in grid:
        value = valid_metric(prep, name, actual, w * first + (1 - w) * second)
        if value is not None and np.isfinite(value):
            scored.append((better * value, -abs(w - 0.5), float(w), float(value)))
    if not scored:
        return 0.5, float("nan")
    _, _, weight, value = max(scored)
    return weight, value


def best_blend(
    prep: Preprocessing, name: str, actual: np.ndarray, outputs: dict[str, np.ndarray], max_members: int = MAX_BLEND,
) -> tuple[list[str], float] | None:  # fmt: skip
    """The members (2 to `max_members` of `outputs`' keys, in their order) whose equal-weight average of valid
    predictions scores best on `actual` by metric `name`, with that score; None when no subset scores.

    Equal weights, not weights fitted on valid: on a few hundred valid rows fitted weights overfit them (issue
    21: sacramento, 139 valid rows, the fitted mix of mlp and LightGBM beat both on valid and lost to LightGBM on
    test), while an even average of diverse models rarely loses to its parts. Ties go to fewer members."""
    sign = -1.0 if metric_of(name).lower_is_better else 1.0
    names, best = list(outputs), None
    for size in range(2, min(max_members, len(names)) + 1):
        for members in itertools.combinations(names, size):
            value = valid_metric(prep, name, actual, sum(outputs[m] for m in members) / size)
            if value is not None and np.isfinite(value) and (best is None or sign * (value - best[1]) > 0):
                best = (list(members), float(value))
    return best


def equal_blend(parts: list[Part]) -> EnsembleModel:
    """The even average of `parts` (at least two) as nested two-part ensembles: the k-th part joins the mean of
    those before it with weight 1/k, so each part weighs 1/len(parts) and the graph stays one graph."""
    blend: Part = parts[0]
    for k, part in enumerate(parts[1:], start=2):
        blend = EnsembleModel(blend, part, (k - 1) / k)
    assert isinstance(blend, EnsembleModel)
    blend.info = {"members": [p.family for p in parts], "weights": "equal"}
    return blend


class EnsembleModel:
    """`weight * first + (1 - weight) * second`, over two candidates fitted on the same preprocessing."""

    family = FAMILY

    def __init__(self, first: Part, second: Part, weight: float, info: dict[str, Any] | None = None) -> None:
        if first.prep.features != second.prep.features:
            raise ValueError("the ensemble's parts read different input columns")
        self.first, self.second, self.weight = first, second, float(weight)
        self.prep = replace(first.prep, decision_weights=[])  # its own decision (`candidates.with_decision`)
        self.params: dict[str, Any] = getattr(first, "params", {})
        self.info = info or {}

    @property
    def parts(self) -> str:
        if "members" in self.info:  # an equal-weight blend (`equal_blend`)
            return " + ".join(self.info["members"]) + " (equal weights)"
        return f"{self.first.family} x {self.weight:g} + {self.second.family} x {1 - self.weight:g}"

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        return self.weight * self.first.predict_matrix(x) + (1 - self.weight) * self.second.predict_matrix(x)

    def predict(self, frame: Any) -> np.ndarray:
        return self.predict_matrix(self.prep.matrix(frame))

    def to_onnx(self, opset: int) -> bytes:
        import onnx

        a = onnx.load_from_string(self.first.to_onnx(opset))
        b = onnx.load_from_string(self.second.to_onnx(opset))
        return combine_graphs(a, b, self.weight).SerializeToString()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "weight": self.weight,
            "first": self.first.to_dict(),
            "second": self.second.to_dict(),
            "info": self.info,
            "decision_weights": self.prep.decision_weights,  # its own: the parts keep theirs
        }


def combine_graphs(first: onnx.ModelProto, second: onnx.ModelProto, weight: float) -> onnx.ModelProto:
    """One graph computing `weight * first + (1 - weight) * second` from the shared input `features`.

    Both graphs take `features` and return one output of the same name (`prediction` or `probabilities`);
    every name is prefixed (`a_`, `b_`) so the two cannot collide, and each prefixed input reads `features`.
    """
    import onnx
    from onnx import compose, helper, numpy_helper

    out = first.graph.output[0]
    a, b = compose.add_prefix(first, "a_"), compose.add_prefix(second, "b_")
    constants = [
        numpy_helper.from_array(np.array(weight, dtype=np.float32), "ensemble_w"),
        numpy_helper.from_array(np.array(1 - weight, dtype=np.float32), "ensemble_1_w"),
    ]
    nodes = [
        helper.make_node("Identity", [INPUT_NAME], ["a_" + INPUT_NAME]),
        helper.make_node("Identity", [INPUT_NAME], ["b_" + INPUT_NAME]),
        *a.graph.node,
        *b.graph.node,
        helper.make_node("Mul", ["a_" + out.name, "ensemble_w"], ["ensemble_a"]),
        helper.make_node("Mul", ["b_" + out.name, "ensemble_1_w"], ["ensemble_b"]),
        helper.make_node("Add", ["ensemble_a", "ensemble_b"], [out.name]),
    ]
    graph = helper.make_graph(
        nodes,
        "ensemble",
        [first.graph.input[0]],
        [out],
        initializer=[*a.graph.initializer, *b.graph.initializer, *constants],
    )
    opsets: dict[str, int] = {}
    for model in (first, second):
        for entry in model.opset_import:
            opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    merged = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()]
    )
    merged.ir_version = max(first.ir_version, second.ir_version)
    onnx.checker.check_model(merged, full_check=True)
    return merged
