"""Scoring a packaged ONNX model (a folder with `model.onnx` and `signature.json`) on a polars frame.

This is the one code path from clean rows to predictions outside training: the gate, the service and batch
scoring all use it, so they run exactly the graph the export stage checked for parity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl

from evergreen.errors import EvergreenError
from evergreen.model.export import onnx_predict
from evergreen.model.preprocess import feature_matrix


@dataclass(frozen=True)
class PackagedModel:
    session: ort.InferenceSession
    signature: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return [c["name"] for c in self.signature["input"]["columns"]]

    @property
    def task(self) -> str:
        return self.signature["task"]

    @property
    def classes(self) -> list[Any] | None:
        return self.signature["output"].get("classes")

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Model output for each row: predictions (regression) or class probabilities (classification)."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise EvergreenError(f"the rows lack the model's input column(s): {', '.join(missing)}")
        return onnx_predict(self.session, feature_matrix(frame, self.features))


def load_packaged(folder: Path, onnx_name: str = "model.onnx", signature_name: str = "signature.json") -> PackagedModel:
    """Load the ONNX graph and its signature from a model folder (an export or a registry version)."""
    graph, sig = folder / onnx_name, folder / signature_name
    for path in (graph, sig):
        if not path.exists():
            raise EvergreenError(f"{path}: missing; a packaged model needs {onnx_name} and {signature_name}")
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return PackagedModel(session, json.loads(sig.read_text()))
