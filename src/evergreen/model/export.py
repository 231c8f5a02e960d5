"""ONNX export of the network, the parity gate against torch, latency figures and the input signature.

The TorchScript exporter (`dynamo=False`) is chosen on purpose: torch 2.13's default dynamo exporter needs
`onnxscript`, which the project does not depend on. The graph has one input, `features` float32 [N, F] of
raw values in declared order, and one output: `prediction` [N] in target units, or `probabilities` [N, C].
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from evergreen.errors import ParityFailed
from evergreen.inference import INPUT_NAME, onnx_predict
from evergreen.model.network import TabularNet


def output_name(model: TabularNet) -> str:
    return "prediction" if model.prep.task == "regression" else "probabilities"


def export_onnx(model: TabularNet, opset: int) -> bytes:
    """The model as a checked ONNX graph with a dynamic batch axis, serialised."""
    import onnx  # here: training imports this module for `torch_predict`, and onnx costs it about 1.5 s

    model = model.cpu().eval()
    example = torch.zeros((2, len(model.prep.features)), dtype=torch.float32)
    buffer = io.BytesIO()
    out = output_name(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
        # the tabm package checks shapes in Python (k, widths: constants of the graph); the batch axis stays
        # dynamic, which the export tests check at several batch sizes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[out],
            dynamic_axes={INPUT_NAME: {0: "batch"}, out: {0: "batch"}},
        )
    graph = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(graph), full_check=True)
    return graph


def onnx_session(graph: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"])


@torch.no_grad()
def torch_predict(model: TabularNet, x: np.ndarray, rows: int = 65_536) -> np.ndarray:
    """torch eager on `x`, `rows` at a time and without autograd: a whole test split of millions of rows at
    once would hold every layer's activations for all of them."""
    model.eval()
    with torch.inference_mode():
        if len(x) <= rows:
            return model(torch.from_numpy(x)).numpy()
        return np.concatenate([model(torch.from_numpy(x[i : i + rows])).numpy() for i in range(0, len(x), rows)])


def _reference(model: TabularNet | Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], Any]:
    """What the graph is held to: torch eager for a network, else the candidate's own `predict_matrix`."""
    if isinstance(model, TabularNet):
        return lambda a: torch_predict(model, a)
    return model


def parity(
    session: ort.InferenceSession, model: TabularNet | Callable[[np.ndarray], np.ndarray], x: np.ndarray
) -> float:
    """Max absolute difference between onnxruntime and the model's own framework (torch eager for a network,
    or a candidate's `predict_matrix`: LightGBM's predict for trees) over the rows of `x`."""
    if len(x) == 0:
        return 0.0
    diff = np.abs(onnx_predict(session, x).astype(np.float64) - np.asarray(_reference(model)(x), dtype=np.float64))
    return float(np.nanmax(diff)) if not np.isnan(diff).all() else float("inf")


def check_parity(max_abs_diff: float, tolerance: float, scale: float) -> None:
    """Raise `ParityFailed` when the difference exceeds `tolerance` times the target's scale."""
    limit = tolerance * scale
    if not max_abs_diff <= limit:  # also fails on NaN
        raise ParityFailed(
            f"ONNX and torch disagree: max |difference| {max_abs_diff:.3g} exceeds "
            f"export.parity_tolerance {tolerance:g} x target scale {scale:.4g} = {limit:.3g}"
        )


def _timings(predict: Callable[[np.ndarray], Any], row: np.ndarray, batch: np.ndarray, runs: int) -> dict:
    predict(row)  # warm-up: first calls allocate
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        predict(row)
        seconds.append(time.perf_counter() - start)
    start, repeats = time.perf_counter(), max(3, runs // 50)
    for _ in range(repeats):
        predict(batch)
    throughput = repeats * len(batch) / (time.perf_counter() - start)
    ms = np.array(seconds) * 1000
    return {
        "latency_p50_ms": float(np.percentile(ms, 50)),
        "latency_p99_ms": float(np.percentile(ms, 99)),
        "throughput_rows_per_s": float(throughput),
    }


def benchmark(
    session: ort.InferenceSession, model: TabularNet | Callable[[np.ndarray], np.ndarray], x: np.ndarray,
    runs: int, batch: int,
) -> dict:  # fmt: skip
    """Latency at batch 1 (p50, p99 in ms) and throughput at `batch` rows, onnxruntime vs the model's own
    framework (under the key `torch`: torch eager for a network, a candidate's `predict_matrix` otherwise)."""
    native = (lambda a: model(torch.from_numpy(a))) if isinstance(model, TabularNet) else model
    rows = np.resize(x, (max(batch, 1), x.shape[1])).astype(np.float32)  # repeat the rows up to `batch`
    one = rows[:1]
    with torch.inference_mode():
        return {
            "batch_size": batch,
            "onnxruntime": _timings(lambda a: session.run(None, {INPUT_NAME: a}), one, rows, runs),
            "torch": _timings(native, one, rows, runs),
        }


def signature(model: TabularNet) -> dict[str, Any]:
    """What the graph takes and returns: the serving side builds its request model from this."""
    prep = model.prep
    vocab = {
        prep.features[i]: [int(v) if prep.types[i] in ("int", "bool") else v for v in values]
        for i, values in zip(prep.categorical, prep.vocabularies, strict=True)
    }
    # a string feature's vocabulary is its strings: the service turns each into its position (its code)
    vocab |= prep.string_vocabularies
    columns = [
        {
            "name": name,
            "type": kind_type,
            "kind": kind,
            **({"vocabulary": vocab[name]} if name in vocab else {}),
        }
        for name, kind_type, kind in zip(prep.features, prep.types, prep.kinds, strict=True)
    ]
    output: dict[str, Any] = {"name": output_name(model), "dtype": "float32"}
    if prep.task == "regression":
        output |= {"shape": ["batch"], "meaning": f"predicted {prep.target}, in target units"}
    else:
        output |= {
            "shape": ["batch", len(prep.classes)],
            "meaning": f"probability of each class of {prep.target}",
            "classes": prep.classes,
            # the decision: the class of largest p * w (w chosen on valid for macro F1); absent: the most probable
            **({"decision_weights": prep.decision_weights} if prep.decision_weights else {}),
        }
    return {
        "task": prep.task,
        "target": prep.target,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", len(prep.features)],
            "columns": columns,
            # calendar features computed from the timestamp by `inference.derive_features`, never sent
            "derived": prep.derived,
            "notes": "raw values in this column order; categoricals as their code values; strings as their "
            "position in the column's vocabulary; derived columns computed from their timestamp; NaN for missing "
            "(numeric: imputed with the train median; categorical: the unknown bucket, as are unseen values)",
        },
        "output": output,
    }
