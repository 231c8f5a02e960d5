"""A registry version loaded for scoring, and the one scoring function shared by the service and
`evergreen predict`.

Scoring runs exactly what evaluation checked: the same `feature_matrix` (raw values in signature order,
float32, NaN for missing) fed to the exported graph, whose parity with the evaluated torch model the export
stage gated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl

from evergreen.config import DataConfig
from evergreen.errors import ModelError
from evergreen.model.export import INPUT_NAME, onnx_predict
from evergreen.model.preprocess import feature_matrix
from evergreen.registry.store import CARD, Registry, RegistryError

ONNX_FILE = "model.onnx"
SIGNATURE_FILE = "signature.json"


@dataclass(frozen=True)
class ServingModel:
    """One registry version, ready to score: its session, signature and card."""

    version: str
    session: ort.InferenceSession
    signature: dict[str, Any]
    card: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return [c["name"] for c in self.signature["input"]["columns"]]

    @property
    def task(self) -> str:
        return self.signature["task"]

    @property
    def classes(self) -> list[Any]:
        return self.signature["output"].get("classes", [])


def _session(graph: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads is not None:
        # the service gets its parallelism from concurrent requests; intra-op threads would fight over cores
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def load_version(folder: Path, version: str, threads: int | None = None) -> ServingModel:
    """Load a version folder (`model.onnx`, `signature.json`, the card); `ModelError` says what is wrong."""
    missing = [name for name in (ONNX_FILE, SIGNATURE_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"model version {version} in {folder} lacks {', '.join(missing)}")
    signature = json.loads((folder / SIGNATURE_FILE).read_text())
    card = json.loads((folder / CARD).read_text()) if (folder / CARD).is_file() else {}
    try:
        session = _session(folder / ONNX_FILE, threads)
    except Exception as exc:  # onnxruntime raises its own exception types for a corrupt graph
        raise ModelError(f"model version {version}: {folder / ONNX_FILE} cannot be loaded: {exc}") from None
    inputs = [i.name for i in session.get_inputs()]
    if inputs != [INPUT_NAME]:
        raise ModelError(f"model version {version}: the graph takes {inputs}, not [{INPUT_NAME!r}]")
    return ServingModel(version, session, signature, card)


def load_champion(registry: Registry, threads: int | None = None, version: str | None = None) -> ServingModel:
    """The champion (or the given version) of a registry, loaded."""
    version = version or registry.champion()
    if version is None:
        raise RegistryError(
            f"no champion in the registry {registry.root}: promote a model first "
            "(`dvc repro` runs the promote stage; `evergreen models promote VERSION` does it by hand)"
        )
    return load_version(registry.path(version), version, threads)


def check_compatible(model: ServingModel, data: DataConfig) -> None:
    """Raise `ModelError` when the graph wants a feature the declaration does not send it."""
    declared = {c.name for c in data.features}
    unknown = [name for name in model.features if name not in declared]
    if unknown:
        raise ModelError(
            f"model version {model.version} takes feature(s) {', '.join(unknown)} that params.yaml does not "
            "declare as features: serve it with the params it was trained with"
        )


def predict(model: ServingModel, frame: pl.DataFrame) -> np.ndarray:
    """Predictions for the rows of `frame`: target units [N] (regression) or class probabilities [N, C]."""
    return onnx_predict(model.session, feature_matrix(frame, model.features))


def predicted_labels(model: ServingModel, output: np.ndarray) -> list[Any]:
    """The prediction per row: the value (regression) or the most probable class (classification)."""
    if model.task == "regression":
        return [float(v) for v in output]
    return [model.classes[i] for i in output.argmax(axis=1)]
