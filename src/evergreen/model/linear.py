"""The linear baseline (ridge or logistic regression) as a `model.type: auto` candidate, on the shared contract.

It is the same fit as the `linear` baseline of `evaluate` (`evergreen.model.baselines.fit_linear`: categorical
codes one-hot encoded, numerics imputed with the train median and standardised, the penalty chosen on valid), so
that the choice on valid can pick the model the gate compares against: on small tables it is often the best one.
Its ONNX graph is skl2onnx's conversion of that scikit-learn pipeline, adapted with a few nodes to the network's
contract: input `features` float32 [N, F] (NaN for missing), output `prediction` [N] in target units or
`probabilities` [N, C] over the model's classes (a class absent from the train split gets probability 0).

The saved form (`to_dict`) holds that graph, not the pipeline (`torch.load(weights_only=True)` reads tensors and
plain values only): a loaded model predicts through onnxruntime, which is what the service runs anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from evergreen.errors import ModelError
from evergreen.inference import INPUT_NAME
from evergreen.model.onnx_graph import keep_only, rename_value
from evergreen.model.preprocess import Preprocessing

if TYPE_CHECKING:  # onnx is imported where a graph is built: training never pays for it
    import onnx

FAMILY = "linear"
KIND = "linear"  # the saved form's `kind` (`evergreen.model.candidates.load_candidate`)
_CONVERTER_OPSET = 17  # default-domain opset skl2onnx writes; converted to the export's opset afterwards
_ML_OPSET = 3


@dataclass
class LinearModel:
    """The fitted linear pipeline (or, once loaded, its graph alone) with the preprocessing whose matrix it reads."""

    prep: Preprocessing
    pipeline: Any = None  # scikit-learn's fitted pipeline; None for a loaded model
    graph: bytes | None = None  # the converted graph, at `_CONVERTER_OPSET`
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    family = FAMILY

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Target units [N] or probabilities [N, C]: scikit-learn's own, or the graph's for a loaded model."""
        if self.pipeline is not None:
            from evergreen.model.baselines import predict_baseline

            return predict_baseline(self.pipeline, self.prep.task, x, len(self.prep.classes or []))
        from evergreen.model.export import onnx_session

        session = onnx_session(self._converted())
        return session.run(None, {INPUT_NAME: np.asarray(x, dtype=np.float32)})[0].astype(np.float64)

    def predict(self, frame: Any) -> np.ndarray:
        """Predictions for a polars frame, through the same input matrix the service builds."""
        return self.predict_matrix(self.prep.matrix(frame))

    def _converted(self) -> bytes:
        if self.graph is None:
            self.graph = linear_graph(self.pipeline, self.prep).SerializeToString()
        return self.graph

    def to_onnx(self, opset: int) -> bytes:
        """The graph at the export's `opset`, checked, serialised."""
        import onnx
        from onnx import version_converter

        model = version_converter.convert_version(onnx.load_from_string(self._converted()), opset)
        onnx.checker.check_model(model, full_check=True)
        return model.SerializeToString()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "graph": self._converted(),
            "preprocessing": self.prep.to_dict(),
            "params": self.params,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> LinearModel:
        prep = Preprocessing.from_dict(saved["preprocessing"])
        return cls(prep, None, saved["graph"], saved.get("params", {}), saved.get("info", {}))


def fit_linear_model(
    prep: Preprocessing,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    params: dict[str, Any] | None = None,
) -> LinearModel:
    """The `linear` baseline's fit (penalty chosen on `valid`) as a candidate; (x, y) as `fit_baselines` takes."""
    from evergreen.model.baselines import fit_linear

    started = time.perf_counter()
    if len(train[0]) == 0 or len(valid[0]) == 0:
        raise ModelError("the linear model needs rows in both the train and the valid split")
    pipeline = fit_linear(prep, train, valid)
    last = pipeline.steps[-1][1]
    penalty = float(last.alpha) if hasattr(last, "alpha") else float(1 / last.C)
    info = {"penalty": penalty, "seconds": round(time.perf_counter() - started, 2)}
    return LinearModel(prep, pipeline, None, params or {}, info)


def linear_graph(pipeline: Any, prep: Preprocessing) -> onnx.ModelProto:
    """skl2onnx's graph of the pipeline, adapted: input `features` [N, F]; output `prediction` [N] in target
    units or `probabilities` [N, C] in the model's class order."""
    import onnx
    from onnx import helper, numpy_helper
    from skl2onnx import convert_sklearn  # slow to import: only the export needs it
    from skl2onnx.common.data_types import FloatTensorType

    last = pipeline.steps[-1][1]
    converted = convert_sklearn(
        pipeline,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(prep.features)]))],
        target_opset={"": _CONVERTER_OPSET, "ai.onnx.ml": _ML_OPSET},
        options={id(last): {"zipmap": False}} if prep.task != "regression" else None,
    )
    graph = converted.graph
    if prep.task == "regression":
        raw = graph.output[0].name  # [N, 1]
        graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "eg_flat"))
        graph.node.append(helper.make_node("Reshape", [raw, "eg_flat"], ["prediction"]))
        output = helper.make_tensor_value_info("prediction", onnx.TensorProto.FLOAT, ["batch"])
    else:
        # the converter's outputs are (label, probabilities over the classes seen in train); a 0/1 matrix maps
        # them onto every class of the model, in its order
        raw = "eg_seen_probabilities"  # the converter's own name for it may be `probabilities`
        rename_value(graph, graph.output[-1].name, raw)
        seen = np.asarray(last.classes_, dtype=int)
        mapping = np.zeros((len(seen), len(prep.classes)), dtype=np.float32)
        mapping[np.arange(len(seen)), seen] = 1.0
        graph.initializer.append(numpy_helper.from_array(mapping, "eg_classes"))
        graph.node.append(helper.make_node("MatMul", [raw, "eg_classes"], ["probabilities"]))
        output = helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["batch", len(prep.classes)])
    del graph.output[:]
    graph.output.append(output)
    keep_only(graph, output.name)
    onnx.checker.check_model(converted, full_check=True)
    return converted
