"""Preprocessing fitted on the training split only; the network carries it as buffers (no train/serve skew).

The model's input is one float32 matrix of feature values in declared order (`inference.feature_matrix`): numeric
columns as they are, categorical columns as their code values, string columns as their position in the train
vocabulary (or in the declared `order`), then the calendar features derived from the timestamp.
`fit_preprocessing` learns what the network needs to turn that matrix into model inputs: means, standard
deviations and fill values of numeric columns, the vocabulary of each categorical column (unseen values fall
into an unknown bucket), and the target transform.

The preprocessing contract every model family shares (the input matrix is the same for all):
- a missing cell is NaN in the matrix; `clean` leaves `impute_median` / `impute_mode` cells null, so the fill
  value is learnt here, on the train split only: `numeric_fill` (the train median, or the train mode for an
  `impute_mode` column) and `categorical_fill` (the train mode's code for an `impute_mode` categorical, None:
  the unknown bucket). A network applies them in its encode step; gradient-boosted trees take NaN natively;
- a string column with a declared `order` is one numeric feature, its rank in the order (0, 1, ...): the
  network normalises it like any numeric, a tree splits on it; a value outside the order is NaN (clean
  quarantines it first, as its out-of-range policy says).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import polars as pl

from evergreen.config import DataConfig, ModelConfig
from evergreen.data.parquet_rows import ParquetRows
from evergreen.data.schema import required_inputs
from evergreen.errors import ModelError
from evergreen.inference import derive_features, encode_strings, feature_matrix
from evergreen.model.moments import Moments, column_moments

Task = Literal["regression", "classification"]


@dataclass(frozen=True)
class Preprocessing:
    """Everything learnt from the training split that the network needs to go from raw values to outputs."""

    task: Task
    target: str
    features: list[str]  # input columns, in the order of the input matrix
    kinds: list[str]  # "numeric" | "categorical", per feature
    types: list[str]  # declared column types, per feature (for the signature)
    numeric_mean: list[float]
    numeric_std: list[float]
    numeric_fill: list[float]  # train median (train mode for `impute_mode`): what a missing numeric becomes
    vocabularies: list[list[float]]  # per categorical feature, sorted; index 0 is reserved for unknown
    crosses: list[list[int]] = field(default_factory=list)  # positions among the categorical features
    target_transform: str = "none"
    target_mean: float = 0.0  # of the transformed target (regression)
    target_std: float = 1.0  # of the transformed target (regression)
    target_scale: float = 1.0  # std of the raw train target, the unit of the export parity gate
    classes: list[Any] = field(default_factory=list)  # class labels (classification), output order
    # per string feature, its sorted train values: a value's code is its position (`inference.encode_strings`)
    string_vocabularies: dict[str, list[str]] = field(default_factory=dict)
    # calendar features computed from the timestamp, as {"name", "from", "part"} (`inference.derive_features`)
    derived: list[dict[str, str]] = field(default_factory=list)
    # numeric features with one value in the train split (std 0, normalised with 1): a warm start refits them
    constant: list[str] = field(default_factory=list)
    # per categorical feature, the code a missing value becomes (train mode, `impute_mode`), or None: the
    # unknown bucket. Empty in a model saved before it existed: every missing value goes to the unknown bucket
    categorical_fill: list[float | None] = field(default_factory=list)
    # classification: per-class weights w of the decision argmax(p * w), chosen on valid for macro F1
    # (`metrics.fit_decision_weights`); empty: the most probable class. The probabilities stay the model's own
    decision_weights: list[float] = field(default_factory=list)

    @property
    def numeric(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == "numeric"]

    @property
    def categorical(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == "categorical"]

    @property
    def input_columns(self) -> list[str]:
        """The columns rows must carry to be scored: non-derived features, then the derived ones' timestamp."""
        return required_inputs(self.features, [(d["name"], d["from"]) for d in self.derived])

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        """The network's input for `frame`: `inference.feature_matrix` with this model's vocabularies and
        derived features, the same call the service makes with the exported signature."""
        return feature_matrix(frame, self.features, self.string_vocabularies, self.derived)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def schema_differences(self, other: Preprocessing) -> list[str]:
        """What makes `other` (fitted on newer data) a different schema: the fields that decide the network's
        inputs and outputs (not the fitted statistics, which may move while the schema stays)."""
        fields = ["task", "target", "features", "kinds", "types", "crosses", "derived", "target_transform"]
        fields += ["classes"] if self.task == "classification" else []
        differences = [name for name in fields if getattr(self, name) != getattr(other, name)]
        if self.string_vocabularies.keys() != other.string_vocabularies.keys():
            differences.append("string features")
        return differences

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Preprocessing:
        return cls(**raw)


Rows = pl.DataFrame | pl.LazyFrame  # a split in memory, or a lazy query over its Parquet pieces (streamed)
Found = dict[str, Moments]  # a streamed split's means and spreads: `feature:NAME`, `target:value`, `target:moved`


def select(frame: Rows, *exprs: pl.Expr) -> pl.DataFrame:
    """`exprs` over the rows: in memory as they are, or one pass of polars' streaming engine over the pieces.
    Aggregations only (a mean, a count): a list-valued one (`implode`) would hold the column in memory."""
    if isinstance(frame, pl.DataFrame):
        return frame.select(*exprs)
    return _collect(frame.select(*exprs), frame)


def _collect(query: pl.LazyFrame, rows: Rows) -> pl.DataFrame:
    """`query` over `rows`: streamed when the rows are Parquet pieces, in memory when they are."""
    return query.collect(engine="streaming" if isinstance(rows, pl.LazyFrame) else "in-memory")


def distinct(frame: Rows, value: pl.Expr) -> list[Any]:
    """The distinct present values of `value` over the rows, sorted: a group-by, which polars' streaming engine
    runs in memory bounded by the values, not the rows."""
    found = _collect(frame.lazy().select(value.drop_nulls()).unique(), frame)
    return sorted(found.to_series().to_list())


def counts(frame: Rows, name: str) -> dict[Any, int]:
    """Rows per present value of column `name` (a group-by, streamed like `distinct`)."""
    found = _collect(frame.lazy().drop_nulls(name).group_by(name).len(name="n"), frame)
    return dict(zip(found[name].to_list(), found["n"].to_list(), strict=True))


def check_frame(frame: Rows, needed: list[str], split: str) -> None:
    """Raise `ModelError` when a split is empty or lacks one of the `needed` columns."""
    if select(frame, pl.len()).item() == 0:
        raise ModelError(f"the {split} split is empty: nothing to train or evaluate on")
    columns = frame.collect_schema().names()
    missing = [name for name in needed if name not in columns]
    if missing:
        raise ModelError(f"the {split} split lacks declared column(s): {', '.join(missing)}")


def fit_preprocessing(
    split: pl.DataFrame | ParquetRows, data: DataConfig, model: ModelConfig, median_sample: pl.DataFrame | None = None
) -> Preprocessing:
    """Learn normalisation, vocabularies and target transform from the training split.

    `split` is in memory, or its Parquet pieces when training streams it. Then every statistic is a pass in
    bounded memory: vocabularies, counts and ranges by polars' streaming engine, means and spreads batch by
    batch in a fixed order (`moments`: the engine's sums vary in the last bit from run to run). An exact
    median holds a whole column in memory, so a streamed split's come from `median_sample`, a seeded sample
    of its rows (`stream.sample_rows`)."""
    derived = [{"name": d.name, "from": d.from_, "part": d.part} for d in data.derived]
    frame: Rows = split.lazy() if isinstance(split, ParquetRows) else split
    _check_train_split(frame, data)
    string_vocabularies = _string_vocabularies(frame, data)

    def encoded(rows: Rows) -> Rows:  # strings as codes, calendar features computed: every input a number
        return encode_strings(derive_features(rows, derived), string_vocabularies)

    frame = encoded(frame)
    features = _input_features(data)
    names = [name for name, _, _ in features]
    numeric = [name for name, kind, _ in features if kind == "numeric"]
    found = None
    if isinstance(split, ParquetRows):  # one pass over the pieces for every mean and spread (`moments`)
        exprs = {f"feature:{n}": pl.col(n) for n in numeric}
        if data.task == "regression":
            y = pl.col(data.target.name).cast(pl.Float64)
            exprs |= {"target:value": y, "target:moved": y.log1p() if model.target_transform == "log1p" else y}
        found = column_moments((encoded(b) for b in split.read()), exprs)
    categorical = [name for name, kind, _ in features if kind == "categorical"]
    by_mode = {c.name for c in data.features if c.missing == "impute_mode"}
    medians_from = frame if median_sample is None else encoded(median_sample)
    numeric_statistics = _numeric_statistics(frame, found, medians_from, numeric, by_mode)
    vocabularies = [[float(v) for v in distinct(frame, pl.col(n).cast(pl.Float32))] for n in categorical]
    crosses = _cross_positions(model, categorical)
    _check_additive(model, names)
    target = _fit_target(frame, found, data.target.name, data.task, model.target_transform)
    return Preprocessing(
        task=data.task,
        target=data.target.name,
        features=names,
        kinds=[kind for _, kind, _ in features],
        types=[column_type for _, _, column_type in features],
        **numeric_statistics,
        categorical_fill=[_mode(frame, n) if n in by_mode else None for n in categorical],
        vocabularies=vocabularies,
        crosses=crosses,
        string_vocabularies=string_vocabularies,
        derived=derived,
        **target,
    )


def _check_train_split(frame: Rows, data: DataConfig) -> None:
    """The train split holds every declared column, and every feature has a type the model can take."""
    sources = [d.from_ for d in data.derived]
    check_frame(frame, list(dict.fromkeys([c.name for c in data.features] + sources + [data.target.name])), "train")
    for column in data.features:
        if column.type not in ("int", "float", "bool", "str"):
            raise ModelError(
                f"feature {column.name!r} has type {column.type}: the model takes numbers, bools and strings; "
                "declare a date as the timestamp and derive calendar features from it (data.derived)"
            )


def _string_vocabularies(frame: Rows, data: DataConfig) -> dict[str, list[str]]:
    """Per string feature, its declared order, or else its sorted train values (a value's code: its position)."""
    return {
        c.name: list(c.order) if c.order else distinct(frame, pl.col(c.name)) for c in data.features if c.type == "str"
    }


def _input_features(data: DataConfig) -> list[tuple[str, str, str]]:
    """(name, kind, declared type) of each input column: the declared features, then the derived ones."""
    # an ordered string column is one number to every family: its rank in the declared order
    features = [(c.name, "numeric" if c.order else c.kind or "numeric", c.type) for c in data.features]
    features += [(d.name, d.kind or "numeric", "int") for d in data.derived]
    return features


def _numeric_statistics(
    frame: Rows, found: Found | None, medians_from: Rows, numeric: list[str], by_mode: set[str]
) -> dict[str, list[Any]]:
    """Mean, std and fill value of each numeric feature (0, 1 and 0 where undefined), and the constant ones
    (one value, or none: their least and greatest are equal). Streamed, from the moments `found`."""
    if not numeric:
        return {"numeric_mean": [], "numeric_std": [], "numeric_fill": [], "constant": []}
    if found is None:
        stats = select(
            frame,
            *(pl.col(n).cast(pl.Float64).mean().alias(f"mean_{n}") for n in numeric),
            *(pl.col(n).cast(pl.Float64).std().alias(f"std_{n}") for n in numeric),
            *(pl.col(n).cast(pl.Float64).min().alias(f"min_{n}") for n in numeric),
            *(pl.col(n).cast(pl.Float64).max().alias(f"max_{n}") for n in numeric),
        ).row(0, named=True)
    else:
        stats = {f"{figure}_{n}": value for n in numeric for figure, value in _figures(found[f"feature:{n}"]).items()}
    medians = select(medians_from, *(pl.col(n).cast(pl.Float64).median() for n in numeric)).row(0, named=True)
    stds = [_finite(stats[f"std_{n}"], 1.0) for n in numeric]
    numeric_fill = [_mode(frame, n) if n in by_mode else medians[n] for n in numeric]
    return {
        "numeric_mean": [_finite(stats[f"mean_{n}"], 0.0) for n in numeric],
        "numeric_std": [s if s > 0 else 1.0 for s in stds],
        "numeric_fill": [_finite(value, 0.0) for value in numeric_fill],
        "constant": [n for n in numeric if stats[f"min_{n}"] == stats[f"max_{n}"]],
    }


def _figures(moments: Moments) -> dict[str, float | None]:
    """A streamed column's figures as polars names them in memory: None where it has no present value."""
    if moments.count == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": moments.mean, "std": moments.std(ddof=1), "min": moments.least, "max": moments.greatest}


def _finite(value: float | None, default: float) -> float:
    return default if value is None or not math.isfinite(value) else float(value)


def _cross_positions(model: ModelConfig, categorical: list[str]) -> list[list[int]]:
    """Each declared cross as positions among the categorical features; `ModelError` naming one that is not."""
    crosses = []
    for i, cross in enumerate(model.crosses):
        unknown = [n for n in cross if n not in categorical]
        if unknown:
            raise ModelError(f"model.crosses[{i}]: {', '.join(unknown)} is not a categorical feature")
        crosses.append([categorical.index(n) for n in cross])
    return crosses


def _check_additive(model: ModelConfig, names: list[str]) -> None:
    for i, name in enumerate(model.additive):
        if name not in names:
            raise ModelError(f"model.additive[{i}]: {name!r} is not a feature")


def _fit_target(frame: Rows, found: Found | None, name: str, task: Task, transform: str) -> dict[str, Any]:
    """The target's fields of `Preprocessing`: transform and statistics (regression), or the classes."""
    nulls = select(frame, pl.col(name).null_count()).item()
    if nulls:
        raise ModelError(f"the train split has {nulls} missing value(s) in target {name!r}")
    if task == "classification":
        classes = distinct(frame, pl.col(name))
        if len(classes) < 2:
            raise ModelError(f"the train split has a single class ({classes[0]!r}) in {name!r}")
        return {"classes": classes}
    if found is None:
        # numpy's sums, to the last bit what every model so far was fitted with (polars' differ in the last bit)
        values = select(frame, pl.col(name).cast(pl.Float64)).to_series().to_numpy()
        moved = np.log1p(values) if transform == "log1p" else values
        least, mean, std, scale = values.min(), moved.mean(), moved.std(), values.std()
    else:
        value, moved = found["target:value"], found["target:moved"]
        least, mean, std, scale = value.least, moved.mean, moved.std(0), value.std(0)
    if transform == "log1p" and least <= -1:
        raise ModelError(f"model.target_transform log1p needs target values > -1; the minimum is {least}")
    return {
        "target_transform": transform,
        "target_mean": float(mean),
        "target_std": float(std) or 1.0,
        "target_scale": float(scale) or 1.0,
    }


def _mode(frame: Rows, name: str) -> float | None:
    """The most frequent present value (the smallest of a tie, so a refit is deterministic), None when none."""
    found = counts(frame.select(pl.col(name).cast(pl.Float64)), name)
    if not found:
        return None
    return min(found, key=lambda value: (-found[value], value))


def warm_preprocessing(champion: Preprocessing, fitted: Preprocessing) -> tuple[Preprocessing, str]:
    """The preprocessing a warm start keeps, and what it did: the champion's, unless the schema changed.

    Kept whole, except the statistics of numeric features that were constant in the champion's train split and
    vary now (e.g. the year, in a model trained on one year): its weights never saw them move, so nothing learnt
    depends on their scale, and normalising them by 1 would hide the new variation from a short fine-tuning.
    """
    changed = champion.schema_differences(fitted)
    if changed:
        return fitted, f"refit: {', '.join(changed)} changed"
    numeric = [champion.features[i] for i in champion.numeric]
    moved = [n for n in champion.constant if n not in fitted.constant]
    if not moved:
        return champion, "kept"
    stats = {}
    for name in ("numeric_mean", "numeric_std", "numeric_fill"):
        ours, theirs = getattr(champion, name), getattr(fitted, name)
        stats[name] = [theirs[i] if n in moved else ours[i] for i, n in enumerate(numeric)]
    kept = replace(champion, **stats, constant=[n for n in champion.constant if n not in moved])
    return kept, f"kept (statistics refit for {', '.join(moved)}: constant in the champion's train split)"


def encode_target(frame: pl.DataFrame, prep: Preprocessing) -> np.ndarray:
    """The training target: transformed and standardised (regression) or class indices (classification)."""
    target = frame[prep.target]
    if target.null_count():
        raise ModelError(f"target {prep.target!r} has {target.null_count()} missing value(s)")
    if prep.task == "regression":
        y = target.cast(pl.Float64).to_numpy()
        y = np.log1p(y) if prep.target_transform == "log1p" else y
        return ((y - prep.target_mean) / prep.target_std).astype(np.float32)
    known = set(prep.classes)
    unseen = sorted({v for v in target.unique().to_list() if v not in known}, key=str)
    if unseen:
        raise ModelError(f"target {prep.target!r} has classes not seen in training: {unseen[:5]}")
    return target.replace_strict(prep.classes, list(range(len(prep.classes))), return_dtype=pl.Int64).to_numpy()


def fingerprint(*parts: Any) -> str:
    """A content hash of configs (anything JSON-like) and arrays: a checkpoint is only valid for its own."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.dtype, part.shape)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()
