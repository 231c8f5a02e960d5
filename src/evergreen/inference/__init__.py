"""The inference core: an exported graph loaded for scoring, and the one scoring path shared by the service,
`evergreen predict`, the promotion gate, monitoring and the backtest.

It imports onnxruntime, numpy and polars only (never torch), so the service starts without loading a training
framework. Scoring runs exactly what evaluation checked: the same `feature_matrix` (raw values in signature order,
float32, NaN for missing; string features as codes of their train vocabulary; calendar features derived from the
timestamp) fed to the exported graph, whose parity with the evaluated torch model the export stage gated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import onnxruntime as ort
import polars as pl

from evergreen.config import DataConfig, DerivedFeature
from evergreen.data.schema import required_inputs
from evergreen.errors import ModelError, RegistryError

if TYPE_CHECKING:  # the registry is passed in; importing it here would make every model stage depend on it
    from evergreen.registry.store import Registry

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)  # rows in memory, or a lazy query over Parquet files

__all__ = [
    "INPUT_NAME",
    "ONNX_FILE",
    "SIGNATURE_FILE",
    "ServingModel",
    "check_compatible",
    "derive_features",
    "encode_strings",
    "servable",
    "feature_matrix",
    "load_champion",
    "load_version",
    "onnx_predict",
    "predict",
    "predicted_labels",
]

INPUT_NAME = "features"  # the graph's one input: raw feature values, float32 [N, F], in signature order
ONNX_FILE = "model.onnx"
SIGNATURE_FILE = "signature.json"
CARD_FILE = "model_card.json"  # the registry writes it under the same name


_CALENDAR: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "year": lambda t: t.dt.year(),
    "month": lambda t: t.dt.month(),
    "day_of_week": lambda t: t.dt.weekday(),  # Monday 1 ... Sunday 7
    "day_of_year": lambda t: t.dt.ordinal_day(),
    "hour": lambda t: t.dt.hour(),
}


def _spec(feature: DerivedFeature | dict[str, Any]) -> tuple[str, str, str]:
    if isinstance(feature, DerivedFeature):
        return feature.name, feature.from_, feature.part
    return feature["name"], feature["from"], feature["part"]


def derive_features(frame: Frame, derived: Sequence[DerivedFeature | dict[str, Any]]) -> Frame:
    """`frame` with the declared calendar features added (Int32; null where the timestamp is null).

    The one computation of derived features: training, evaluation, export parity, the service and batch
    scoring all reach it through `feature_matrix`. `derived` holds `DerivedFeature`s or their signature form
    (`{"name", "from", "part"}`).
    """
    if not derived:
        return frame
    specs = [_spec(d) for d in derived]
    schema = frame.collect_schema()  # a DataFrame's, or a LazyFrame's (a streamed train split) without reading it
    missing = sorted({source for _, source, _ in specs if source not in schema})
    if missing:
        raise ModelError(f"derived features need the timestamp column(s) {', '.join(missing)}, which the rows lack")
    for name, source, part in specs:
        dtype = schema[source]
        if not dtype.is_temporal() or (part == "hour" and dtype == pl.Date):
            raise ModelError(f"derived feature {name!r} ({part} of {source!r}) needs a date or datetime, not {dtype}")
    return frame.with_columns(_CALENDAR[part](pl.col(src)).cast(pl.Int32).alias(name) for name, src, part in specs)


def encode_strings(frame: Frame, vocabularies: Mapping[str, Sequence[str]]) -> Frame:
    """String feature columns replaced by their codes: a value's position in its vocabulary (learnt on the
    train split), as Float32. An unseen value and a missing one become null: NaN in the input matrix, which
    the network sends to the unknown bucket like any categorical code it did not see in training."""
    codes = {}
    columns = frame.collect_schema().names()
    for name, vocabulary in vocabularies.items():
        if name not in columns:
            continue  # `feature_matrix` names a missing feature column
        # an Enum's physical value is the position in its categories; a value outside them becomes null. Unlike
        # `replace_strict`, polars' streaming engine runs it in bounded memory (a streamed train split)
        codes[name] = (
            pl.col(name).cast(pl.String).cast(pl.Enum(list(vocabulary)), strict=False).to_physical().cast(pl.Float32)
            if vocabulary
            else pl.lit(None, dtype=pl.Float32)
        )
    return frame.with_columns(**codes) if codes else frame


def feature_matrix(
    frame: pl.DataFrame,
    features: list[str],
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    derived: Sequence[DerivedFeature | dict[str, Any]] = (),
) -> np.ndarray:
    """The model's input: float32 [N, F] in the order of `features`; missing values are NaN.

    The one input builder, shared by training, evaluation, export parity, the service and batch scoring:
    derived calendar features are computed from the timestamp (`derive_features`), string features become
    codes through their train vocabularies (`encode_strings`), and every other feature is its raw value.
    """
    frame = encode_strings(derive_features(frame, derived), vocabularies or {})
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise ModelError(f"the rows lack feature column(s): {', '.join(missing)}")
    unencoded = [name for name in features if frame.schema[name] == pl.String]
    if unencoded:
        raise ModelError(
            f"feature(s) {', '.join(unencoded)} hold strings but the model has no vocabulary for them: "
            "was the model trained with these columns declared as type str?"
        )
    return frame.select(pl.col(name).cast(pl.Float32) for name in features).to_numpy().astype(np.float32)


def onnx_predict(session: ort.InferenceSession, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Run the graph over `x` [N, F] in batches."""
    parts = [session.run(None, {INPUT_NAME: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0,))


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
    def vocabularies(self) -> dict[str, list[str]]:
        """The train vocabulary of each string feature: a value's code is its position."""
        return {c["name"]: c["vocabulary"] for c in self.signature["input"]["columns"] if c.get("type") == "str"}

    @property
    def derived(self) -> list[dict[str, Any]]:
        """The derived calendar features the graph takes, as `{"name", "from", "part"}`."""
        return self.signature["input"].get("derived", [])

    @property
    def request_columns(self) -> list[str]:
        """The columns a row must carry to be scored: the non-derived features, then the timestamp(s) that
        derived features come from."""
        return required_inputs(self.features, [(d["name"], d["from"]) for d in self.derived])

    @property
    def task(self) -> str:
        return self.signature["task"]

    @property
    def classes(self) -> list[Any]:
        return self.signature["output"].get("classes", [])

    @property
    def decision_weights(self) -> list[float]:
        """The classifier's decision weights (`model.metrics.predicted_classes`); empty: the most probable class."""
        return self.signature["output"].get("decision_weights", [])


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
    card = json.loads((folder / CARD_FILE).read_text()) if (folder / CARD_FILE).is_file() else {}
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
    declared = set(data.model_inputs)
    unknown = [name for name in model.features if name not in declared]
    if unknown:
        raise ModelError(
            f"model version {model.version} takes feature(s) {', '.join(unknown)} that params.yaml does not "
            "declare as features: serve it with the params it was trained with"
        )


def servable(data: DataConfig) -> Callable[[Path, str], None]:
    """The registry's check before a version becomes champion: its graph loads and fits the declared features.

    Pass it as `Registry.promote(..., verify=servable(data))`; it raises `ModelError` naming the file.
    """

    def verify(folder: Path, version: str) -> None:
        check_compatible(load_version(folder, version), data)

    return verify


def predict(model: ServingModel, frame: pl.DataFrame) -> np.ndarray:
    """Predictions for the rows of `frame`: target units [N] (regression) or class probabilities [N, C]."""
    return onnx_predict(model.session, feature_matrix(frame, model.features, model.vocabularies, model.derived))


def predicted_classes(probabilities: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """The class index decided for each row: the most probable class, or with decision weights w the class of
    largest p * w. Weights chosen on valid (`fit_decision_weights`) let a rare class be predicted where macro
    F1 gains, while the probabilities themselves stay as the model gave them."""
    probabilities = np.asarray(probabilities)
    if weights is None or len(weights) == 0:
        return probabilities.argmax(axis=1)
    return (probabilities * np.asarray(weights, dtype=np.float64)).argmax(axis=1)


def predicted_labels(model: ServingModel, output: np.ndarray) -> list[Any]:
    """The prediction per row: the value (regression) or the class the model decides (classification: the most
    probable one, or with decision weights the largest p * w)."""
    if model.task == "regression":
        return [float(v) for v in output]
    return [model.classes[i] for i in predicted_classes(output, model.decision_weights)]
