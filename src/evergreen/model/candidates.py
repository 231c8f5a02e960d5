"""One small interface over every model family, so that evaluate and export need no branch per family.

A candidate has a `family`, the `prep` whose input matrix it reads, and `predict_matrix(x)` (its own framework's
predictions: target units [N] or probabilities [N, C]), `predict(frame)`, `to_onnx(opset)` and `to_dict()`.
`save_candidate` / `load_candidate` write and read the stage's model artefact, `models/model.pt`: for a network
exactly the file `TabularNet.save` writes (so `model.type: mlp` runs are unchanged, and a warm start reads a
network champion as before); for trees, linear models and ensembles a torch-serialised dict with a `kind`,
holding LightGBM's text model (or the linear model's ONNX graph) and the preprocessing (tensors and plain values
only: `torch.load(weights_only=True)` reads it).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from evergreen.config import ModelConfig
from evergreen.errors import ModelError
from evergreen.model import ensemble, linear, trees
from evergreen.model.export import export_onnx, torch_predict
from evergreen.model.metrics import decision_for
from evergreen.model.network import TabularNet
from evergreen.model.preprocess import Preprocessing


class Candidate(Protocol):
    """A fitted model of any family, on the shared input and output contract."""

    family: str
    prep: Preprocessing
    params: dict[str, Any]

    def predict_matrix(self, x: np.ndarray) -> np.ndarray: ...

    def predict(self, frame: pl.DataFrame) -> np.ndarray: ...

    def to_onnx(self, opset: int) -> bytes: ...

    def to_dict(self) -> dict[str, Any]: ...


class NetworkCandidate:
    """A `TabularNet` seen as a candidate: its torch eager predictions are what the ONNX graph must match."""

    def __init__(self, net: TabularNet, info: dict[str, Any] | None = None) -> None:
        self.net, self.info = net.cpu().eval(), info or {}
        self.family: str = net.config.type
        self.prep, self.params = net.prep, net.params

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0,) if self.prep.task == "regression" else (0, len(self.prep.classes)))
        return torch_predict(self.net, x).astype(np.float64)

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        return self.net.predict(frame)

    def to_onnx(self, opset: int) -> bytes:
        return export_onnx(self.net, opset)

    def to_dict(self) -> dict[str, Any]:
        # the same fields `TabularNet.save` writes
        return {
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "config": self.net.config.model_dump(mode="json"),
            "preprocessing": self.prep.to_dict(),
            "params": self.params,
        }


def _network(saved: dict[str, Any]) -> TabularNet:
    net = TabularNet(Preprocessing.from_dict(saved["preprocessing"]), ModelConfig(**saved["config"]), saved["params"])
    state = saved["state_dict"]
    state.setdefault("temperature", torch.ones(()))  # saved before temperature scaling existed
    net.load_state_dict(state)
    return net.eval()


def from_dict(saved: dict[str, Any]) -> Candidate:
    """A candidate from its saved form (`Candidate.to_dict`)."""
    kind = saved.get("kind", "network")  # a network's file has no kind: it is `TabularNet.save`'s format
    if kind == "network":
        return NetworkCandidate(_network(saved))
    if kind == trees.KIND:
        return trees.TreeModel.from_dict(saved)
    if kind == linear.KIND:
        return linear.LinearModel.from_dict(saved)
    if kind == ensemble.KIND:
        first, second = from_dict(saved["first"]), from_dict(saved["second"])
        blend = ensemble.EnsembleModel(first, second, saved["weight"], saved.get("info"))
        blend.prep = replace(blend.prep, decision_weights=saved.get("decision_weights", []))
        return blend
    raise ModelError(f"unknown model kind {kind!r} in a saved model: written by a newer Evergreen?")


def save_candidate(candidate: Candidate, path: Path) -> None:
    """Write the candidate to `path` (one file)."""
    if isinstance(candidate, NetworkCandidate):
        candidate.net.save(path)  # byte for byte what the network stage always wrote
    else:
        torch.save(candidate.to_dict(), path)


def load_candidate(path: Path) -> Candidate:
    """Read a model written by `save_candidate` (or by `TabularNet.save`), on CPU."""
    if not Path(path).exists():
        raise ModelError(f"{path}: no such model file (run `evergreen stage train` first)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not one of its own
        raise ModelError(f"{path} is not a model Evergreen wrote: {exc}") from None
    if not isinstance(saved, dict):
        raise ModelError(f"{path} is not a model Evergreen wrote (it holds a {type(saved).__name__})")
    return from_dict(saved)


def network_of(candidate: Candidate) -> TabularNet | None:
    """The network inside a candidate (itself, or an ensemble's part), for a warm start; None for trees."""
    if isinstance(candidate, NetworkCandidate):
        return candidate.net
    if isinstance(candidate, ensemble.EnsembleModel):
        for part in (candidate.first, candidate.second):  # a blend of several nests ensembles: look inside
            net = network_of(part)
            if net is not None:
                return net
    return None


def with_decision(candidate: Candidate, metric: str, x_valid: np.ndarray, actual: np.ndarray) -> Candidate:
    """The candidate with its classifier's decision weights fitted on the valid rows for the gated `metric`
    (`metrics.decision_for`), kept in its preprocessing so that evaluation, export and serving decide alike."""
    prep = candidate.prep
    if prep.task != "classification":
        return candidate
    output = candidate.predict_matrix(x_valid)
    weights = decision_for(metric, prep.task, actual, output, len(prep.classes or []))
    decided = replace(prep, decision_weights=weights)
    if isinstance(candidate, NetworkCandidate):
        candidate.net.prep = decided  # what `TabularNet.save` writes
    candidate.prep = decided
    return candidate
