"""Gradient-boosted trees (LightGBM) as a candidate beside the networks, on the same input and output contract.

The trees read the network's input matrix as it is (`inference.feature_matrix`: raw values, string categories
as vocabulary codes, NaN for missing; LightGBM routes NaN natively), with the categorical features declared to
LightGBM where their train codes are small non-negative integers. They fit the model's target transform (log1p
fitted, expm1 applied inside the graph) and stop early on the valid split. The ONNX graph (onnxmltools, zipmap
off) is adapted with a few helper nodes so that it returns what the network's graph returns: predictions [N] in
target units, or class probabilities [N, C] in the model's class order. Torch-free.
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
from evergreen.model.threads import openmp_threads

if TYPE_CHECKING:  # imported where they are used: a network's training never pays for them (about 5 s)
    import lightgbm as lgb
    import onnx

FAMILY = "lightgbm"
KIND = "lightgbm"  # the saved form's `kind` (`evergreen.model.candidates.load_candidate`)
_CONVERTER_OPSET = 15  # the highest default-domain opset onnxmltools 1.16 writes; converted up afterwards
_MAX_CATEGORY_CODE = 2**30  # LightGBM takes categorical values as non-negative int32; larger ones stay numeric


@dataclass(frozen=True)
class TreeSettings:
    """LightGBM's knobs: common defaults for tabular data; the rounds are chosen on valid (`patience`)."""

    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.9
    lambda_l2: float = 1.0
    max_rounds: int = 2000
    patience: int = 50


def tree_categoricals(prep: Preprocessing, x: np.ndarray) -> list[int]:
    """The categorical features LightGBM can take as such: every train code a non-negative integer (a negative
    or fractional code would be read as missing, or truncated); the others are split on as numbers."""
    chosen = []
    for i in prep.categorical:
        values = x[:, i][~np.isnan(x[:, i])]
        if values.size and values.min() >= 0 and values.max() < _MAX_CATEGORY_CODE and (values % 1 == 0).all():
            chosen.append(i)
    return chosen


def _objective(prep: Preprocessing) -> dict[str, Any]:
    if prep.task == "regression":
        return {"objective": "regression", "metric": "l2"}
    if len(prep.classes) == 2:
        return {"objective": "binary", "metric": "binary_logloss"}
    return {"objective": "multiclass", "metric": "multi_logloss", "num_class": len(prep.classes)}


def fit_target(prep: Preprocessing, y: np.ndarray) -> np.ndarray:
    """What the trees fit: the transformed target (regression) or the class indices as they are."""
    if prep.task == "regression" and prep.target_transform == "log1p":
        return np.log1p(y)
    return y


class _Stopper:
    """Early stopping on the valid loss, and a deadline: stops `patience` rounds after the best round, or when
    the time is up, and remembers the best round (the model keeps only the rounds up to it)."""

    order = 30

    def __init__(self, patience: int, deadline: float | None) -> None:
        self.patience, self.deadline = patience, deadline
        self.best_round, self.best_loss, self.rounds, self.out_of_time = 0, np.inf, 0, False

    def __call__(self, env: Any) -> None:
        loss = env.evaluation_result_list[0][2]
        self.rounds = env.iteration + 1
        if loss < self.best_loss:
            self.best_loss, self.best_round = loss, self.rounds
        self.out_of_time = self.deadline is not None and time.perf_counter() > self.deadline
        if self.rounds - self.best_round >= self.patience or self.out_of_time:
            import lightgbm as lgb

            raise lgb.callback.EarlyStopException(self.best_round - 1, env.evaluation_result_list)


@dataclass
class TreeModel:
    """A fitted LightGBM booster with the preprocessing whose input matrix it reads; owns predict, ONNX,
    and its saved form (`to_dict` / `from_dict`)."""

    prep: Preprocessing
    booster: lgb.Booster
    categorical: list[int]
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # rounds, best round, seconds, stopped by the deadline

    family = FAMILY

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """LightGBM's own predictions for an input matrix: target units [N] or probabilities [N, C]."""
        raw = self.booster.predict(x)
        if self.prep.task == "regression":
            return np.expm1(raw) if self.prep.target_transform == "log1p" else raw
        return np.column_stack([1 - raw, raw]) if raw.ndim == 1 else raw

    def predict(self, frame: Any) -> np.ndarray:
        """Predictions for a polars frame, through the same input matrix the service builds."""
        return self.predict_matrix(self.prep.matrix(frame))

    def to_onnx(self, opset: int) -> bytes:
        """The booster as an ONNX graph on the network's contract, checked, serialised."""
        return tree_graph(self.booster, self.prep, opset).SerializeToString()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "booster": self.booster.model_to_string(),
            "preprocessing": self.prep.to_dict(),
            "categorical": self.categorical,
            "params": self.params,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TreeModel:
        import lightgbm as lgb

        booster = lgb.Booster(model_str=saved["booster"])
        prep = Preprocessing.from_dict(saved["preprocessing"])
        return cls(prep, booster, list(saved["categorical"]), saved.get("params", {}), saved.get("info", {}))


def fit_trees(
    prep: Preprocessing,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    *,
    seed: int,
    deadline: float | None = None,
    settings: TreeSettings | None = None,
    params: dict[str, Any] | None = None,
) -> TreeModel:
    """Boost on `train` (x, y: target units or class indices), stop early on `valid`, keep the best round.

    `deadline` (a `time.perf_counter()` value) stops boosting when passed: the best round so far is kept.
    """
    import lightgbm as lgb

    settings = settings or TreeSettings()
    started = time.perf_counter()
    (x_train, y_train), (x_valid, y_valid) = train, valid
    if len(x_train) == 0 or len(x_valid) == 0:
        raise ModelError("the trees need rows in both the train and the valid split")
    categorical = tree_categoricals(prep, x_train)
    config = {
        **_objective(prep),
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_data_in_leaf": settings.min_data_in_leaf,
        "feature_fraction": settings.feature_fraction,
        "lambda_l2": settings.lambda_l2,
        "seed": seed,
        "deterministic": True,  # with force_row_wise: the same data and seed give the same trees
        # the process's CPU allowance (affinity, cgroup quota, OMP_NUM_THREADS), not the host's cores; not reduced
        # for load as torch's threads are: the candidate and the `lightgbm` baseline must be the same fit on one
        # machine
        "num_threads": openmp_threads(),
        "force_row_wise": True,
        "verbose": -1,
    }
    names = [f"f{i}" for i in range(len(prep.features))]  # column names could hold characters LightGBM refuses
    dataset = lgb.Dataset(x_train, fit_target(prep, y_train), feature_name=names, categorical_feature=categorical,
                          free_raw_data=False)  # fmt: skip
    valid_set = dataset.create_valid(x_valid, fit_target(prep, y_valid))
    stopper = _Stopper(settings.patience, deadline)
    booster = lgb.train(config, dataset, settings.max_rounds, valid_sets=[valid_set], callbacks=[stopper])
    best = max(stopper.best_round, 1)
    # a booster of the best rounds only: what is saved, exported and served is the model that scored best, with
    # thresholds a float32 graph compares exactly (`float32_thresholds`)
    booster = lgb.Booster(model_str=float32_thresholds(booster.model_to_string(num_iteration=best)))
    info = {
        "rounds_run": stopper.rounds,
        "best_round": best,
        "stopped_by_deadline": stopper.out_of_time,
        "categorical": [prep.features[i] for i in categorical],
        "settings": settings.__dict__,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return TreeModel(prep, booster, categorical, params or {}, info)


def _floor32(threshold: float) -> float:
    """The largest float32 at or below `threshold` (as a double, which holds it exactly)."""
    rounded = np.float32(threshold)
    if float(rounded) > threshold:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def float32_thresholds(model: str) -> str:
    """LightGBM's text model with every numeric split threshold t replaced by the largest float32 at or below it.

    The input matrix is float32, and for a float32 x, `x <= t` exactly when `x <= floor32(t)`: the booster
    predicts the same. But the ONNX graph stores thresholds as float32 rounded to nearest, which can land above
    t, so a row whose value lies between the two went the other way in the graph: with features of four
    decimals (a 50k-row generated table), parity failed by 0.39 against a limit of 0.0018. Categorical splits
    (decision_type bit 0) keep their thresholds: those index category sets."""
    trees = model.split("\nTree=")
    for i, tree in enumerate(trees[1:], start=1):
        lines = tree.split("\n")
        at = {line.split("=", 1)[0]: j for j, line in enumerate(lines) if "=" in line}
        if "threshold" not in at or "decision_type" not in at:
            continue
        values = lines[at["threshold"]].split("=", 1)[1].split()
        kinds = [int(k) for k in lines[at["decision_type"]].split("=", 1)[1].split()]
        fixed = [v if kind & 1 else repr(_floor32(float(v))) for v, kind in zip(values, kinds, strict=True)]
        lines[at["threshold"]] = "threshold=" + " ".join(fixed)
        trees[i] = "\n".join(lines)
    # the header's `tree_sizes` are byte counts of the trees as they were: dropped, LightGBM reads the trees in turn
    header = "\n".join(line for line in trees[0].split("\n") if not line.startswith("tree_sizes="))
    return "\nTree=".join([header, *trees[1:]])


def tree_graph(booster: lgb.Booster, prep: Preprocessing, opset: int) -> onnx.ModelProto:
    """onnxmltools' graph of `booster`, adapted to the contract: input `features` [N, F]; output `prediction`
    [N] in target units (expm1 applied for log1p) or `probabilities` [N, C]."""
    import onnx
    from onnx import helper, numpy_helper, version_converter
    from onnxmltools import convert_lightgbm  # slow to import: only the export needs it
    from onnxmltools.convert.common.data_types import FloatTensorType

    converted = convert_lightgbm(
        booster,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(prep.features)]))],
        zipmap=False,
        target_opset=_CONVERTER_OPSET,
    )
    model = version_converter.convert_version(converted, opset)
    graph = model.graph
    if prep.task == "regression":
        raw = graph.output[0].name  # [N, 1]: the transformed target
        nodes, value = [], raw
        if prep.target_transform == "log1p":
            # Exp then Sub 1, as the network's graph does: ONNX has no expm1
            graph.initializer.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "eg_one"))
            nodes += [helper.make_node("Exp", [raw], ["eg_exp"]), helper.make_node("Sub", ["eg_exp", "eg_one"],
                                                                                    ["eg_units"])]  # fmt: skip
            value = "eg_units"
        graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "eg_flat"))
        nodes.append(helper.make_node("Reshape", [value, "eg_flat"], ["prediction"]))
        graph.node.extend(nodes)
        output = helper.make_tensor_value_info("prediction", onnx.TensorProto.FLOAT, ["batch"])
    else:
        # the converter's outputs are (label, probabilities); the contract is the probabilities alone, whose
        # columns are the class indices 0..C-1, which are the positions in the model's classes
        rename_value(graph, graph.output[-1].name, "probabilities")
        output = helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["batch", len(prep.classes)])
        keep_only(graph, "probabilities")
    del graph.output[:]
    graph.output.append(output)
    onnx.checker.check_model(model, full_check=True)
    return model
