"""The one typed config: `params.yaml` loaded into pydantic models, validated once per process.

Every section is a strict model: an unknown key or a bad value is a `ConfigError` whose message names the key
path, e.g. ``data.columns[3].role: 'lable' is not one of: feature, target, timestamp, id, ignore``.
Functions take the section they need (`DataConfig`, `SplitConfig`, ...), never the whole file.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from evergreen import params_file
from evergreen.errors import ConfigError
from evergreen.params_file import set_dotted

DEFAULT_PARAMS = Path("params.yaml")

ColumnType = Literal["int", "float", "str", "bool", "date", "datetime"]
Role = Literal["feature", "target", "timestamp", "id", "ignore"]
Kind = Literal["numeric", "categorical"]
MissingPolicy = Literal["quarantine", "impute_median", "impute_mode", "impute_constant", "keep"]
# policies whose fill value is a statistic of the data: `clean` keeps the row and leaves the cell null, and the
# model's preprocessing fills it with the statistic of the train split (test rows never shape it)
MODEL_FILLED = ("impute_median", "impute_mode")
OutOfRangePolicy = Literal["quarantine", "clip"]
PiiPolicy = Literal["hash", "drop"]
Scalar = int | float | str | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------------ secrets
# the params whose value may hold a password; each is a `SecretUrl`, and `redact_params` masks them in dicts
SECRET_PATHS = ("serve.log_url", "tune.storage")
MASK = "***"
# `model_dump(context=REVEAL)` keeps secrets (to re-validate a copy); every other dump masks them
REVEAL = {"reveal_secrets": True}
_PASSWORD_PARAM = re.compile(r"((?:^|[?&;\s])password=)[^&;\s]*", re.IGNORECASE)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def mask_url(text: str) -> str:
    """`text` with its password replaced by ***: a URL's user:password@ part and any password= parameter.

    It does not need `text` to parse: a malformed URL is masked too. Where the password's end is unclear (an
    unescaped @ or /), everything from the user's colon to the last @ is masked, erring on the safe side.
    """
    scheme = text.find("://")
    start = scheme + 3 if scheme >= 0 else 0
    at = text.rfind("@")
    if at > start:
        colon = text.find(":", start, at)
        if colon >= 0:
            text = text[: colon + 1] + MASK + text[at:]
    return _PASSWORD_PARAM.sub(lambda m: m.group(1) + MASK, text)


class _SecretText(SecretStr):
    """A URL that may hold a password: shown (str, repr, dumps) with the password masked; the real value only
    through `get_secret_value()`, at the edge that connects (the prediction log writer, Optuna's storage)."""

    def _display(self) -> str:
        return mask_url(self.get_secret_value())


def _url_problem(secret: _SecretText) -> _SecretText:
    """Refuse a URL a database driver would refuse later, in a message that never shows the password."""
    url = secret.get_secret_value()
    if "://" not in url:
        return secret  # not a URL (tune.storage may name an environment variable): its field decides
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError("the URL holds a space or control character (percent-encode it, e.g. %20 for a space)")
    if _BAD_ESCAPE.search(url):
        raise ValueError("the URL holds a % that is not followed by two hex digits (write %25 for a % itself)")
    try:
        port = urlsplit(url).port  # raises on a bad port or an unclosed [IPv6 host
    except ValueError as exc:
        # urllib's messages name the part, not the URL: safe to show ("Invalid IPv6 URL", "Port out of range")
        raise ValueError(f"not a valid URL: {str(exc).split(' as ', 1)[0]}") from None
    if port == 0:
        raise ValueError("the URL's port must be from 1 to 65535")
    return secret


def _serialize_secret(value: _SecretText, info: SerializationInfo) -> str:
    return value.get_secret_value() if (info.context or {}).get("reveal_secrets") else str(value)


SecretUrl = Annotated[_SecretText, AfterValidator(_url_problem), PlainSerializer(_serialize_secret)]


def redact_params(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a params mapping (a card's, a checkpoint's) with every `SECRET_PATHS` value masked.

    For params written by an older Evergreen, before secrets had their own type: what is shown is safe anyway.
    """
    out = dict(raw)
    for path in SECRET_PATHS:
        section, key = path.split(".")
        if isinstance(out.get(section), dict) and isinstance(out[section].get(key), str):
            out[section] = {**out[section], key: mask_url(out[section][key])}
    return out


def shown_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Dotted overrides fit for a message: a secret's value masked."""
    return {k: mask_url(str(v)) if k in SECRET_PATHS and v is not None else v for k, v in overrides.items()}


# --------------------------------------------------------------------------------------------------- data
class Column(_Strict):
    """One declared column: its type, its role in the model, and how cleaning treats bad values."""

    name: str = Field(min_length=1)
    type: ColumnType
    role: Role
    kind: Kind | None = None
    nullable: bool = False
    min: float | str | None = None
    max: float | str | None = None
    allowed: list[Scalar] | None = None
    # string categories in their order (e.g. [low, medium, high]): every model family sees the value's rank, one
    # ordered number; it is also the allowed set, so a value outside it follows `out_of_range`
    order: list[str] | None = None
    # cleaning policies; None means the `clean` section's default
    missing: MissingPolicy | None = None
    fill_value: Scalar | None = None
    out_of_range: OutOfRangePolicy | None = None
    # personal data: what the prediction log, reports and validation examples store of it (the model still sees
    # it when it is a feature): a keyed hash (key in `data.pii_key_env`) or nothing; `true` means hash
    # left out of dumps when undeclared: the clean partitions' fingerprints (a dump of the columns) stay as they were
    pii: PiiPolicy | None = Field(None, exclude_if=lambda value: value is None)

    @field_validator("pii", mode="before")
    @classmethod
    def _pii_true_is_hash(cls, value: Any) -> Any:
        if value is True:
            return "hash"
        return None if value is False else value

    @model_validator(mode="after")
    def _check(self) -> Column:
        if self.kind is None:
            kind = "numeric" if self.type in ("int", "float") else "categorical"
            object.__setattr__(self, "kind", kind)
        if self.kind == "numeric" and self.type not in ("int", "float"):
            raise ValueError(f"kind 'numeric' needs type int or float, not {self.type!r}")
        if self.allowed is not None and (self.min is not None or self.max is not None):
            raise ValueError("declare either an allowed set or a min/max range, not both")
        if self.allowed is not None and len(self.allowed) == 0:
            raise ValueError("allowed must list at least one value")
        if self.order is not None:
            self._check_order()
        self._check_value_types()
        if self.type in ("int", "float"):
            for bound in ("min", "max"):
                if isinstance(getattr(self, bound), str):
                    raise ValueError(f"{bound} of a {self.type} column must be a number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.missing == "impute_constant" and self.fill_value is None:
            raise ValueError("missing: impute_constant needs a fill_value")
        if self.missing == "impute_median" and self.type not in ("int", "float"):
            raise ValueError("missing: impute_median needs a numeric column")
        if self.out_of_range == "clip" and (self.type not in ("int", "float") or self.allowed is not None):
            raise ValueError("out_of_range: clip needs a numeric column with min/max")
        return self

    def _check_order(self) -> None:
        assert self.order is not None
        if self.type != "str":
            raise ValueError(f"order needs a str column, not {self.type!r} (a number already has its order)")
        if len(self.order) < 2 or len(set(self.order)) != len(self.order):
            raise ValueError(f"order must list two or more distinct values, not {self.order}")
        if self.allowed is None:
            object.__setattr__(self, "allowed", list(self.order))
        elif set(self.allowed) != set(self.order):
            raise ValueError(f"allowed {self.allowed} and order {self.order} must hold the same values")

    @field_validator("min", "max", mode="before")
    @classmethod
    def _bound_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # a float field would take `true` as 1.0
            raise ValueError("a bound is a number (or a date for a date column), not a bool")
        return value

    def _check_value_types(self) -> None:
        """Each declared value (allowed, fill_value, a date's min/max) must be of the column's type: `clean`
        compares the data with them, and a bool among strings fails there, far from the key that caused it."""
        fits = _VALUE_FITS[self.type]
        values = [(f"allowed[{i}]", v) for i, v in enumerate(self.allowed or [])]
        bounds = ("min", "max") if self.type not in ("int", "float") else ()  # a number's bounds: checked below
        values += [(key, getattr(self, key)) for key in ("fill_value", *bounds) if getattr(self, key) is not None]
        problems = [
            (where, f"{value!r} is a {type(value).__name__}, but column {self.name!r} has type {self.type}"
             + (" (quote it in params.yaml to make it text)" if self.type == "str" else ""))
            for where, value in values
            if not fits(value)
        ]  # fmt: skip
        if problems:
            raise CrossReferenceErrors(problems)

    @property
    def has_range(self) -> bool:
        return self.min is not None or self.max is not None or self.allowed is not None


# which declared values fit a column of each type (bool is an int to Python: never a number here)
_VALUE_FITS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer(),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "date": lambda v: isinstance(v, str),
    "datetime": lambda v: isinstance(v, str),
}


class TimestampConfig(_Strict):
    """Where the event time comes from: a date or datetime column, plus an optional hour-of-day column."""

    column: str
    hour_column: str | None = None


CalendarPart = Literal["year", "month", "day_of_week", "day_of_year", "hour"]
# what each part is to the model: a month or an hour is a category (no order the network should assume), a
# year or a day of the year a number (a trend, a season that extrapolates)
CALENDAR_KINDS: dict[str, Kind] = {
    "year": "numeric",
    "month": "categorical",
    "day_of_week": "categorical",
    "day_of_year": "numeric",
    "hour": "categorical",
}


class DerivedFeature(_Strict):
    """A feature computed from the timestamp column, e.g. ``{name: date_month, from: date, part: month}``.

    It is not a column of the data: the model's input builder computes it (`evergreen.inference`), the same
    way in training, evaluation, export and serving. `kind` defaults by part (month, day of week and hour
    categorical; year and day of year numeric).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    name: str = Field(min_length=1)
    from_: str = Field(alias="from", min_length=1)
    part: CalendarPart
    kind: Kind | None = None

    @model_validator(mode="after")
    def _check(self) -> DerivedFeature:
        if self.kind is None:
            object.__setattr__(self, "kind", CALENDAR_KINDS[self.part])
        return self


class DataConfig(_Strict):
    """The dataset, declared once: source, task and columns. Everything else derives from it."""

    source: str = Field(min_length=1, description="path, glob or fsspec URL of CSV or Parquet files")
    incoming: str = "data/incoming"
    # a Dask scheduler (tcp://host:8786) for per-partition work; None: local processes (env
    # EVERGREEN_DASK_SCHEDULER wins). Not an input of any stage: where work runs never changes what it makes
    scheduler: str | None = Field(None, exclude=True)  # excluded: saved configs stay as they were
    task: Literal["regression", "classification"]
    timestamp: TimestampConfig | None = None
    columns: list[Column] = Field(min_length=1)
    # calendar features computed from the timestamp column (see DerivedFeature)
    derived: list[DerivedFeature] = Field(default_factory=list)
    # the environment variable holding the key of the keyed hash (HMAC-SHA256) of the `pii: hash` columns
    pii_key_env: str = Field("EVERGREEN_PII_KEY", min_length=1)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        names = [c.name for c in self.columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"column names must be unique; repeated: {', '.join(duplicated)}")
        targets = [c.name for c in self.columns if c.role == "target"]
        if len(targets) != 1:
            raise ValueError(f"exactly one column must have role 'target', found {len(targets)}")
        if sum(c.role == "id" for c in self.columns) > 1:
            raise ValueError("at most one column may have role 'id'")
        timestamp = self.timestamp.column if self.timestamp else None
        for c in self.columns:  # monitoring compares targets and orders by time: both must be stored as they are
            if c.pii is not None and (c.role in ("target", "timestamp") or c.name == timestamp):
                raise ValueError(f"column {c.name!r}: pii cannot be declared on the target or the timestamp column")
        if not any(c.role == "feature" for c in self.columns) and not self.derived:
            raise ValueError("at least one column must have role 'feature' (or a derived feature)")
        if self.timestamp is not None:
            for key in ("column", "hour_column"):
                name = getattr(self.timestamp, key)
                if name is not None and name not in names:
                    raise ValueError(f"timestamp.{key} {name!r} is not a declared column")
            ts_type = self.column(self.timestamp.column).type
            if ts_type not in ("date", "datetime"):
                raise ValueError(f"timestamp.column must have type date or datetime, not {ts_type!r}")
        self._check_derived(set(names))
        return self

    def _check_derived(self, names: set[str]) -> None:
        seen: set[str] = set()
        for i, feature in enumerate(self.derived):
            where = f"derived[{i}] ({feature.name})"
            if feature.name in names or feature.name in seen:
                raise ValueError(f"{where}: the name {feature.name!r} is already a column or a derived feature")
            seen.add(feature.name)
            if self.timestamp is None or feature.from_ != self.timestamp.column:
                declared = f"the timestamp column {self.timestamp.column!r}" if self.timestamp else "no timestamp"
                raise ValueError(f"{where}: from {feature.from_!r} must be the timestamp column ({declared})")
            if feature.part == "hour" and self.column(feature.from_).type != "datetime":
                raise ValueError(f"{where}: part 'hour' needs a datetime timestamp; {feature.from_!r} is a date")

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def target(self) -> Column:
        return next(c for c in self.columns if c.role == "target")

    @property
    def types(self) -> dict[str, ColumnType]:
        """Each declared column's type, by name."""
        return {c.name: c.type for c in self.columns}

    @property
    def id_column(self) -> Column | None:
        return next((c for c in self.columns if c.role == "id"), None)

    @property
    def features(self) -> list[Column]:
        """The declared feature columns (derived features are not columns: see `model_inputs`)."""
        return [c for c in self.columns if c.role == "feature"]

    @property
    def model_inputs(self) -> list[str]:
        """The model's input features, in order: the feature columns, then the derived features."""
        return [c.name for c in self.features] + [d.name for d in self.derived]

    @property
    def key(self) -> list[str]:
        """Columns that identify a row: the id when declared, else every declared column.

        Never the timestamp alone: many rows may share a time (a daily or yearly date), so without an id only
        exact duplicate rows are duplicates.
        """
        if self.id_column is not None:
            return [self.id_column.name]
        return self.names


class IngestConfig(_Strict):
    """How much disagreement between arrivals `ingest` tolerates."""

    # a later row with the id of an earlier one and different content is a key conflict (kept aside); above
    # this share of the rows read, `ingest` fails: the id is probably not an id, or a file was re-exported
    max_key_conflicts: float = Field(0.01, ge=0, le=1)


class CleanConfig(_Strict):
    """Defaults for columns that do not declare their own cleaning policy."""

    missing: MissingPolicy = "quarantine"
    out_of_range: OutOfRangePolicy = "quarantine"
    drop_duplicates: bool = True


class SplitConfig(_Strict):
    """How the clean data is split: by time (cut dates or fractions) or at random (stratified).

    `method` defaults to time when `data.timestamp` is declared, else random (`method_for`).
    """

    method: Literal["time", "random"] | None = None
    valid_from: dt.datetime | None = None
    test_from: dt.datetime | None = None
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    stratify: bool = True
    seed: int = 42

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if (self.valid_from is None) != (self.test_from is None):
            raise ValueError("give both valid_from and test_from, or neither (then fractions are used)")
        if self.valid_from is not None and self.test_from is not None and self.valid_from >= self.test_from:
            raise ValueError("valid_from must be before test_from")
        if self.method == "random" and self.valid_from is not None:
            raise ValueError("valid_from/test_from only apply to method: time")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must leave rows for training")
        return self

    def method_for(self, data: DataConfig) -> Literal["time", "random"]:
        """The declared method, or the default for `data`: time when it has a timestamp, else random."""
        if self.method is not None:
            return self.method
        return "time" if data.timestamp is not None or self.valid_from is not None else "random"


class ValidationConfig(_Strict):
    """Where the expectation suites live, how many failing examples a message shows, and the batch size."""

    suites_dir: str = "expectations"
    reports_dir: str = "reports/validation"
    example_values: int = Field(5, ge=1, le=50)
    # rows handed to Great Expectations at a time: a partition larger than this is validated in batches, so
    # memory is bounded by the batch, not the partition. Column expectations hold in each batch (a `mostly`
    # share, uniqueness) as they hold in each partition.
    batch_rows: int = Field(1_000_000, ge=1000)


# ------------------------------------------------------------------------------------------------ model
Activation = Literal["relu", "gelu", "silu", "tanh"]
PositiveInt = Annotated[int, Field(gt=0)]


class ModelConfig(_Strict):
    """The network: a family (`type`) over embedded categoricals and normalised numerics, plus its knobs.

    Every family gets the same preprocessing, output head, ensemble and additive terms; `crosses` are one more
    categorical field (an embedding input for mlp and resnet, one more token for ft_transformer).
    """

    # mlp: an MLP over the concatenated embeddings and numerics; resnet: residual blocks with LayerNorm
    # (Gorishniy et al. 2021); ft_transformer: one token per feature plus [CLS], a pre-norm transformer;
    # tabm: k weight-sharing members (BatchEnsemble) over numeric embeddings (Gorishniy et al. 2025);
    # auto: the deep families, LightGBM and their ensemble as candidates in train.time_budget_s, chosen on valid
    type: Literal["auto", "mlp", "resnet", "ft_transformer", "tabm"] = "mlp"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 256], min_length=1)  # mlp
    activation: Activation = "silu"  # every family's hidden layers (the transformer's feed-forward too)
    dropout: float = Field(0.1, ge=0, lt=1)  # hidden dropout: mlp layers, resnet blocks, transformer FFN
    embedding_dim: int = Field(8, ge=1, le=256)  # mlp and resnet, per categorical field
    d_main: int = Field(128, ge=1, le=4096)  # resnet: the width of the residual stream
    n_blocks: int = Field(3, ge=1, le=32)  # resnet blocks, transformer layers, or tabm blocks
    ffn_factor: float = Field(2.0, gt=0, le=16)  # hidden width of a block / FFN, as a multiple of its input
    residual_dropout: float = Field(0.0, ge=0, lt=1)  # resnet and ft_transformer: on each block's output
    d_token: int = Field(64, ge=1, le=1024)  # ft_transformer: the width of each feature's token
    heads: int = Field(4, ge=1, le=64)  # ft_transformer attention heads; must divide d_token
    attention_dropout: float = Field(0.1, ge=0, lt=1)  # ft_transformer
    # crossed categoricals, e.g. [[hr, workingday]]: one embedding per combination of values
    crosses: list[Annotated[list[str], Field(min_length=2)]] = Field(default_factory=list)
    # features kept out of the network and added to its output (one weight, or one value per category): main
    # effects that should extrapolate, such as a trend in `yr`, instead of interacting with everything
    additive: list[str] = Field(default_factory=list)
    target_transform: Literal["none", "log1p"] = "log1p"  # regression only; inverted inside the model
    # members trained side by side on the same batches and averaged: still one module, one ONNX graph
    ensemble: int = Field(1, ge=1, le=16)
    # tabm: k members sharing their weights (each trained on its own loss, the prediction is their mean),
    # n_blocks blocks of d_block units; numeric features through piecewise-linear embeddings (`bins` edges
    # from the train split's quantiles), periodic ones, or as they are (none), each d_embedding wide;
    # categorical fields one-hot, or embedded in embedding_dim
    k: int = Field(32, ge=1, le=256)
    d_block: int = Field(512, ge=1, le=8192)
    num_embeddings: Literal["piecewise_linear", "periodic", "none"] = "piecewise_linear"
    bins: int = Field(48, ge=2, le=1024)
    d_embedding: int = Field(16, ge=1, le=256)
    categorical_encoding: Literal["one_hot", "embedding"] = "one_hot"

    @field_validator("heads")
    @classmethod
    def _heads_divide_d_token(cls, heads: int, info: ValidationInfo) -> int:
        d_token = info.data.get("d_token")
        if d_token is not None and d_token % heads:
            raise ValueError(f"must divide model.d_token ({d_token}) evenly, one slice of each token per head")
        return heads

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        for i, cross in enumerate(self.crosses):
            if len(set(cross)) != len(cross):
                raise ValueError(f"crosses[{i}] names a column twice: {cross}")
        return self


class DistributedConfig(_Strict):
    """Data-parallel training: the `train` stage relaunches itself through torchrun with this many processes."""

    nproc_per_node: int = Field(ge=1, description="processes per node: one per GPU, or a few on CPU")
    nnodes: int = Field(1, ge=1)
    # auto: NCCL when CUDA is present, gloo on CPU; nccl without CUDA is refused when the stage starts
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    # host:port of the rendezvous (c10d) for more than one node; None on one node (torchrun --standalone)
    rdzv_endpoint: str | None = None

    @model_validator(mode="after")
    def _endpoint_for_many_nodes(self) -> DistributedConfig:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes is {self.nnodes}: give rdzv_endpoint (host:port) for the nodes to meet at")
        return self


class TrainConfig(_Strict):
    """The training loop: optimiser, schedule, early stopping, device and seed."""

    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: int = Field(40, ge=1)
    # auto: from the train rows, 256 under 10k, doubling with the rows up to 4096 (`evergreen.model.train`)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 256
    lr: float = Field(3e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = Field(0.1, gt=0, lt=1, description="fraction of steps spent warming up (onecycle)")
    grad_clip: float | None = Field(1.0, gt=0)
    patience: int = Field(10, ge=1, description="epochs without improvement on valid before stopping")
    # classification only: "none" keeps the class prior the data has, so probabilities stay calibrated
    class_weight: Literal["none", "balanced"] = "none"
    # also write TensorBoard event files (needs the `tensorboard` extra): `tensorboard --logdir tensorboard`
    tensorboard: bool = False
    # None: one process (the default). Else data-parallel over torchrun; batch_size stays the global batch
    distributed: DistributedConfig | None = None
    # scratch: random weights; champion: start from the registry champion's weights (and preprocessing, when
    # the schema is unchanged) and fine-tune for warm_epochs at lr * warm_lr_factor
    init: Literal["scratch", "champion"] = "scratch"
    warm_epochs: int = Field(10, ge=1)
    warm_lr_factor: float = Field(0.3, gt=0, le=1)
    # torch threads, set once when the stage starts: auto is this process's CPU allowance (affinity and
    # cgroup quota) less the CPUs other processes keep busy; a number pins it
    threads: Literal["auto"] | Annotated[int, Field(ge=1, le=1024)] = "auto"
    # stop after the epoch that would end past this many seconds of training (the best epoch is kept); None:
    # epochs and patience alone decide. `model.type: auto` shares it out between its candidates
    time_budget_s: float | None = Field(None, gt=0)


Baseline = Literal["mean", "linear", "hgb", "lightgbm"]


class EvaluateConfig(_Strict):
    """Scoring on the test split, and the baselines fitted on the same split."""

    baselines: list[Baseline] = Field(default_factory=lambda: ["mean", "linear", "hgb", "lightgbm"], min_length=1)
    # an upper bound: HistGradientBoosting stops early on the valid split (`hgb_patience` rounds without gain)
    hgb_max_iter: int = Field(500, ge=1)
    hgb_patience: int = Field(20, ge=1)


class ExportConfig(_Strict):
    """ONNX export and the parity gate between onnxruntime and torch."""

    opset: int = Field(17, ge=17, le=23)
    # the gate: max |onnx - torch| over the test split must stay below this times the train target's std
    parity_tolerance: float = Field(1e-4, gt=0)
    latency_runs: int = Field(200, ge=10)
    throughput_batch: int = Field(1024, ge=1)


# ------------------------------------------------------------------------------------- registry & serving
MetricName = Literal["rmse", "mae", "r2", "accuracy", "f1_macro", "log_loss", "roc_auc"]
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("rmse", "mae", "r2"),
    "classification": ("accuracy", "f1_macro", "log_loss", "roc_auc"),  # roc_auc: binary targets only
}
# what `promote.metric` means when it is not declared (params.yaml says why)
DEFAULT_METRIC: dict[str, str] = {"regression": "rmse", "classification": "f1_macro"}


class ShadowConfig(_Strict):
    """A challenger that passed the offline gate first serves in the shadow (scored beside the champion on live
    traffic, never answering) until `min_labels` of the records it scored are labelled through /feedback; then
    the gate compares the two on those records and promotes or discards it. Discarded after `max_wait_hours`
    without enough labels."""

    min_labels: int = Field(ge=1, description="labelled live records the shadow must have scored to be judged")
    max_wait_hours: float = Field(gt=0, description="discard a shadow still short of labels after this long")


class PromoteConfig(_Strict):
    """The promotion gate: every check must pass before a challenger replaces the champion."""

    registry_dir: str = "models/registry"
    # the metric the gate and monitoring's performance rule judge by; None: the task's default (DEFAULT_METRIC)
    metric: MetricName | None = None
    # "best": the best of `evaluate.baselines` on `metric`; naming one compares with that one only
    baseline: Literal["best", "mean", "linear", "hgb", "lightgbm"] = "best"
    # the challenger may be at most this much worse (relative, on `metric`) than the baseline: 0, a challenger
    # worse than the baseline on test is not promoted (serving it would serve the worse model)
    baseline_margin: float = Field(0.0, ge=0)
    # ... and at most this much worse than the champion, on test rows neither model trained on
    champion_margin: float = Field(0.02, ge=0)
    min_train_rows: int = Field(100, ge=1, description="a model trained on fewer rows is never promoted")
    min_compare_rows: int = Field(
        100, ge=1, description="test rows outside the champion's training rows needed to compare with it"
    )
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    reference_rows: int = Field(5000, ge=100, description="training rows kept with a version for monitoring")
    seed: int = 42
    # None: a challenger that passes becomes the champion at once; else it serves in the shadow first
    shadow: ShadowConfig | None = None
    # registry retention, applied after each promotion: the newest N versions plus the champion, the shadow and
    # the fallback keep their files; older ones keep only their card. None keeps every version
    keep_versions: int | None = Field(None, ge=1)

    def metric_for(self, task: str) -> str:
        """The metric the gate judges by: the declared one, or the task's default."""
        return self.metric or DEFAULT_METRIC[task]


class ServeConfig(_Strict):
    """The prediction service and its durable prediction log."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # bound to anything but loopback, the service requires this environment variable to hold an API token
    token_env: str = "EVERGREEN_API_TOKEN"
    max_batch: int = Field(1000, ge=1, description="records per request; more is a 413")
    max_string_length: int = Field(256, ge=1)
    log_path: str = "monitoring/predictions.db"
    reload_interval_s: float = Field(1.0, gt=0, description="how often the champion pointer is checked")
    log_timeout_s: float = Field(
        5.0, gt=0, description="how long a request waits to commit to the prediction log (locked?) before a 503"
    )
    # a champion that cannot load at start-up: serve the newest loadable earlier champion, or refuse to start
    fallback: Literal["previous", "none"] = "previous"
    workers: int = Field(
        1, ge=1, le=64, description="server processes on the one port; they share the prediction log (SQLite WAL)"
    )
    # the prediction log in PostgreSQL instead of `log_path` (replicas on several machines): a URL
    # postgresql://user@host:port/database, or the name of an environment variable holding one (keeps a
    # password out of this file); at most one of the two
    log_url: SecretUrl | None = None  # a secret: shown masked; its value only through Workspace
    log_url_env: str | None = None
    # predictions (and their labels) older than this are deleted by `evergreen monitor` and the retention flow;
    # None keeps everything
    log_retention_days: float | None = Field(None, gt=0)

    @field_validator("log_url")
    @classmethod
    def _postgres_url(cls, url: _SecretText | None) -> _SecretText | None:
        if url is not None and not url.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("not a PostgreSQL URL: postgresql://user@host:port/database")
        return url

    @model_validator(mode="after")
    def _one_log_url(self) -> ServeConfig:
        if self.log_url is not None and self.log_url_env is not None:
            raise ValueError("set log_url or log_url_env, not both")
        return self


# -------------------------------------------------------------------------------------------- monitoring
class WindowConfig(_Strict):
    """Which slice of the prediction log a monitoring run looks at: the last N rows and/or the last T hours."""

    last_rows: int | None = Field(2000, ge=1)
    last_hours: float | None = Field(None, gt=0)


class PolicyConfig(_Strict):
    """When drift or decay is worth a retrain. The decision is a pure function of summaries and history."""

    drift_share: float = Field(0.6, gt=0, le=1, description="share of features drifted to call the window drifted")
    feature_threshold: float = Field(0.1, gt=0, description="drift score above which a feature has drifted")
    feature_thresholds: dict[str, float] = Field(default_factory=dict, description="per-feature overrides")
    prediction_drift: bool = Field(False, description="count a drifted prediction distribution as drift")
    min_rows: int = Field(100, ge=1, description="fewer rows in a window: insufficient data, no decision")
    consecutive: int = Field(2, ge=1, description="drifted windows in a row before a retrain (hysteresis)")
    cooldown_hours: float = Field(336, ge=0, description="time between retrains, on the prediction log's clock")
    performance_degradation: float | None = Field(
        0.25, gt=0, description="relative worsening of the primary metric vs the champion's, when labels exist"
    )
    retrain_every: int | None = Field(None, ge=1, description="fallback: retrain after this many monitor runs")


class MonitorConfig(_Strict):
    """Monitoring of the deployed model: the window, where reports go, and the retraining policy."""

    window: WindowConfig = WindowConfig()
    reports_dir: str = "monitoring/reports"
    workspace: str = "monitoring/workspace"
    project: str = "evergreen"
    decisions: str = "monitoring/decisions.jsonl"
    max_rows: int = Field(1_000_000, ge=1000, description="larger windows are sampled down for the drift check")
    policy: PolicyConfig = PolicyConfig()


class SimulateConfig(_Strict):
    """`evergreen simulate`: a replay of the bundled history as production traffic, to compare policies."""

    # the first model is trained on everything before this; the rest is replayed. A date of the project's own
    # data (`evergreen init` sets it to the valid cut), so there is no default: `evergreen simulate` asks for it
    start: dt.datetime | None = None
    end: dt.datetime | None = None  # replay until here (default: the end of the data)
    window_days: int = Field(7, ge=1)
    valid_days: int = Field(14, ge=1, description="each retrain validates on the days just before its test days")
    test_days: int = Field(14, ge=1, description="... and gates on the most recent days it has labels for")
    # a `_warm` variant makes the same decisions and warm-starts its retrains (train.init: champion)
    policies: list[Literal["never", "periodic", "drift", "periodic_warm", "drift_warm"]] = Field(
        default_factory=lambda: ["never", "periodic", "drift"]
    )
    # lighter training inside the replay, declared here so the backtest stays minutes, not hours
    overrides: dict[str, Any] = Field(default_factory=dict)
    output_dir: str = "monitoring/backtest"


# ---------------------------------------------------------------------------------------- orchestration
FlowName = Literal["pipeline", "retrain", "monitor", "tune"]


class DeploymentConfig(_Strict):
    """One Prefect deployment: when it runs, and where (a work pool, or served by `evergreen deploy`)."""

    cron: str | None = Field(None, description="cron schedule; none means run on demand only")
    timezone: str = "UTC"
    paused: bool = False
    work_pool: str | None = Field(None, description="e.g. 'gpu': a process work pool whose worker runs it")
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> DeploymentConfig:
        if self.cron is not None and len(self.cron.split()) not in (5, 6):
            raise ValueError(f"cron {self.cron!r} must have 5 fields (minute hour day month weekday)")
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not a known IANA time zone") from None
        return self


class OrchestrationConfig(_Strict):
    """Prefect: retries for stages that touch the outside world, and the scheduled deployments."""

    retries: dict[str, int] = Field(default_factory=lambda: {"ingest": 2})
    retry_delay_seconds: float = Field(10, ge=0)
    deployments: dict[FlowName, DeploymentConfig] = Field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- tune
TUNABLE = {"train": TrainConfig, "model": ModelConfig}  # the sections a search space may range over


class SearchDimension(_Strict):
    """One key of the search space: a range (`low`, `high`, optionally `log` or `step`) or a list of `choices`."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> SearchDimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None:
                raise ValueError("give either choices or a range (low, high), not both")
            if not self.choices:
                raise ValueError("choices is empty: list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give a range (low and high) or a list of choices")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("a log range cannot have a step")
        return self


def _check_search_key(key: str, dimension: SearchDimension) -> str | None:
    """What is wrong with one space entry (an unknown key, a value its field refuses), or None."""
    section, _, name = key.partition(".")
    if section not in TUNABLE or not name:
        return "a searchable key is train.<key> or model.<key>"
    field = TUNABLE[section].model_fields.get(name)
    if field is None:
        return f"{section} has no key {name!r} (keys: {', '.join(TUNABLE[section].model_fields)})"
    from pydantic import TypeAdapter

    # the field's type and bounds (ge, lt, ...), as pydantic checks them in the section itself
    adapter = TypeAdapter(Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation)
    values = dimension.choices if dimension.choices is not None else [dimension.low, dimension.high]
    for value in values:
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            return f"{value!r} is not a valid {key}: {exc.errors()[0]['msg']}"
    return None


# the levers that decide a deep tabular model's quality; the ranges bracket the shipped values
DEFAULT_SPACE = {
    "train.lr": SearchDimension(low=3e-4, high=1e-2, log=True),
    "train.weight_decay": SearchDimension(low=1e-6, high=1e-2, log=True),
    "train.batch_size": SearchDimension(choices=[128, 256, 512]),
    "model.type": SearchDimension(choices=["mlp", "resnet"]),
    "model.hidden": SearchDimension(choices=[[128, 128], [256, 256], [512, 256], [256, 256, 256]]),
    "model.dropout": SearchDimension(low=0.0, high=0.3),
    "model.embedding_dim": SearchDimension(choices=[4, 8, 16]),
    "model.d_main": SearchDimension(choices=[64, 128, 256]),
    "model.n_blocks": SearchDimension(low=1, high=4),
}


class TuneConfig(_Strict):
    """`evergreen tune`: an Optuna study (TPE, median pruning on the valid metric) over `train.*` and `model.*`."""

    # None: sqlite:///tune/study.db in the project; else a SQLAlchemy URL, or the name of an environment
    # variable holding one (keeps a PostgreSQL password out of params.yaml). A secret: shown masked everywhere
    storage: SecretUrl | None = None
    study: str = Field("evergreen", min_length=1)
    n_trials: int = Field(30, ge=1, description="trials in the study, all workers together (a rerun resumes)")
    workers: int = Field(1, ge=1, description="worker processes on this machine sharing the study")
    timeout_s: float | None = Field(None, gt=0, description="a worker starts no trial after this many seconds")
    prune_warmup_epochs: int = Field(5, ge=0, description="epochs a trial runs before it can be pruned")
    prune_startup_trials: int = Field(5, ge=0, description="finished trials before pruning starts")
    output_dir: str = "tune"
    space: dict[str, SearchDimension] = Field(default_factory=lambda: dict(DEFAULT_SPACE))

    @field_validator("storage")
    @classmethod
    def _url_or_variable(cls, storage: _SecretText | None) -> _SecretText | None:
        value = storage.get_secret_value() if storage is not None else ""
        if storage is not None and "://" not in value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("neither a database URL (scheme://...) nor the name of an environment variable")
        return storage

    @model_validator(mode="after")
    def _check(self) -> TuneConfig:
        problems = [(f"space.{k}", p) for k, d in self.space.items() if (p := _check_search_key(k, d)) is not None]
        if problems:
            raise CrossReferenceErrors(problems)
        return self


# ------------------------------------------------------------------------------------------------ params
class Params(_Strict):
    """The whole `params.yaml`: one section per concern; each function takes only the section it needs."""

    data: DataConfig
    ingest: IngestConfig = IngestConfig()
    clean: CleanConfig = CleanConfig()
    split: SplitConfig = SplitConfig()
    validation: ValidationConfig = ValidationConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    promote: PromoteConfig = PromoteConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    simulate: SimulateConfig = SimulateConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    tune: TuneConfig = TuneConfig()

    @model_validator(mode="after")
    def _check(self) -> Params:
        """Every cross-reference between sections, checked against the data declaration in one pass."""
        problems = [
            *self._check_model(),
            *self._check_metric(),
            *self._check_split(),
            *self._check_simulate(),
            *self._check_thresholds(),
        ]
        if problems:
            raise CrossReferenceErrors(problems)
        return self

    def _feature_kinds(self) -> dict[str, str]:
        return {c.name: str(c.kind) for c in self.data.features}

    def _not_a_feature(self, name: str) -> str:
        return f"{name!r} is not a declared feature (features: {', '.join(self._feature_kinds())})"

    def _check_model(self) -> list[Problem]:
        problems: list[Problem] = []
        kinds = self._feature_kinds()
        for i, cross in enumerate(self.model.crosses):
            for j, name in enumerate(cross):
                if name not in kinds:
                    problems.append((f"model.crosses[{i}][{j}]", self._not_a_feature(name)))
                elif kinds[name] != "categorical":
                    problems.append((f"model.crosses[{i}][{j}]", f"{name!r} is numeric; a cross takes categoricals"))
        for i, name in enumerate(self.model.additive):
            if name not in kinds:
                problems.append((f"model.additive[{i}]", self._not_a_feature(name)))
        target = self.data.target
        explicit = "target_transform" in self.model.model_fields_set
        if self.model.target_transform == "log1p":
            if self.data.task != "regression" and explicit:
                problems.append(("model.target_transform", "log1p applies to regression only; use none"))
            elif self.data.task == "regression" and isinstance(target.min, int | float) and target.min < 0:
                problems.append(
                    ("model.target_transform", f"log1p needs a non-negative target; {target.name!r} has min "
                     f"{target.min:g} (use none)")
                )  # fmt: skip
            elif self.data.task == "regression" and target.min is None and explicit:
                problems.append(
                    ("model.target_transform", f"log1p needs a non-negative target: declare min: 0 for "
                     f"{target.name!r}, or use none")
                )  # fmt: skip
        return problems

    def _check_metric(self) -> list[Problem]:
        task, metric = self.data.task, self.promote.metric
        problems: list[Problem] = []
        if metric is not None and metric not in TASK_METRICS[task]:
            suited = ", ".join(TASK_METRICS[task])
            problems.append(("promote.metric", f"{metric!r} does not suit {task} (use one of: {suited})"))
        allowed = self.data.target.allowed
        if metric == "roc_auc" and allowed is not None and len(allowed) != 2:
            problems.append(
                ("promote.metric", f"roc_auc needs a binary target; {self.data.target.name!r} allows "
                 f"{len(allowed)} classes (use f1_macro or log_loss)")
            )  # fmt: skip
        baseline = self.promote.baseline
        if baseline != "best" and baseline not in self.evaluate.baselines:
            problems.append(
                ("promote.baseline", f"{baseline!r} is not evaluated (evaluate.baselines: "
                 f"{', '.join(self.evaluate.baselines)})")
            )  # fmt: skip
        return problems

    def _time_range(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        """The declared min/max of the timestamp column, as datetimes (None where not declared)."""
        if self.data.timestamp is None:
            return None, None
        column = self.data.column(self.data.timestamp.column)
        return _as_datetime(column.min), _as_datetime(column.max)

    def _check_split(self) -> list[Problem]:
        cfg = self.split
        if cfg.method == "time" and self.data.timestamp is None:
            return [("split.method", "'time' needs data.timestamp; declare one, or use method: random")]
        if cfg.valid_from is not None and self.data.timestamp is None:
            return [("split.valid_from", "cut dates need data.timestamp; declare one, or use fractions")]
        first, last = self._time_range()
        problems: list[Problem] = []
        # the cut points must leave rows before the first (train) and from the second on (test)
        if cfg.valid_from is not None and first is not None and cfg.valid_from <= first:
            problems.append(("split.valid_from", f"{cfg.valid_from} leaves no training rows (the data starts {first})"))
        if cfg.test_from is not None and last is not None and cfg.test_from > last:
            problems.append(("split.test_from", f"{cfg.test_from} leaves no test rows (the data ends {last})"))
        return problems

    def _check_simulate(self) -> list[Problem]:
        sim = self.simulate
        declared = [k for k in ("start", "end") if k in sim.model_fields_set and getattr(sim, k) is not None]
        if not declared:
            return []  # the default dates are the bundled data's; the backtest checks them against the data
        if self.data.timestamp is None:
            return [(f"simulate.{declared[0]}", "the backtest replays time: it needs data.timestamp")]
        first, last = self._time_range()
        problems: list[Problem] = []
        for key in declared:
            when = getattr(sim, key)
            if first is not None and when <= first:
                problems.append((f"simulate.{key}", f"{when} is not after the data's start ({first})"))
            if last is not None and when > last + dt.timedelta(days=1):
                problems.append((f"simulate.{key}", f"{when} is after the data's end ({last})"))
        if sim.end is not None and sim.start is not None and sim.end <= sim.start:
            problems.append(("simulate.end", f"{sim.end} is not after simulate.start ({sim.start})"))
        return problems

    def _check_thresholds(self) -> list[Problem]:
        known = [*self._feature_kinds(), "prediction"]
        return [
            (f"monitor.policy.feature_thresholds.{name}", f"{name!r} is not a feature (features: {', '.join(known)})")
            for name in self.monitor.policy.feature_thresholds
            if name not in known
        ]


def _as_datetime(value: float | str | None) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


Problem = tuple[str, str]  # (key path, what is wrong)


class CrossReferenceErrors(ValueError):
    """Several problems found by one model validator, each with its own key path (`parse_params` lists them)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{where}: {what}" for where, what in problems))
        self.problems = problems


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in ("literal", "str", "float", "int"):
            continue  # union-branch noise pydantic adds to the location
        else:
            out += f".{part}" if out else str(part)
    return out


def _format_error(err: dict[str, Any]) -> list[str]:
    """One line per problem: a cross-reference validator reports several, each at its own key path."""
    error = err.get("ctx", {}).get("error")
    if isinstance(error, CrossReferenceErrors):
        prefix = _format_loc(err["loc"])
        return [f"{prefix + '.' if prefix else ''}{where}: {what}" for where, what in error.problems]
    return [_format_one(err)]


def _format_one(err: dict[str, Any]) -> str:
    where = _format_loc(err["loc"]) or "<top level>"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key"
    if kind == "missing":
        return f"{where}: required key is missing"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        allowed = ", ".join(part.strip(" '") for part in expected.replace(" or ", ", ").split(","))
        return f"{where}: {err['input']!r} is not one of: {allowed}"
    msg = err["msg"].removeprefix("Value error, ")
    shown = err["input"]
    if where in SECRET_PATHS:  # a URL that holds a password is shown masked, even when it is malformed
        shown = mask_url(shown.get_secret_value() if isinstance(shown, SecretStr) else str(shown))
    return f"{where}: {msg} (got {shown!r})" if not isinstance(shown, dict | list) else f"{where}: {msg}"


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise `ConfigError` listing every bad key path."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        # pydantic reports each failing union branch; keep one line per key path
        lines = list(dict.fromkeys(line for e in exc.errors() for line in _format_error(e)))
        raise ConfigError(f"{source} is invalid:\n  " + "\n  ".join(lines)) from None


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """A copy of `params` with dotted keys replaced, validated like the file itself."""
    raw = params.model_dump(mode="json", context=REVEAL)  # the copy keeps the real secrets; it is never written
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    return parse_params(raw, source=f"params with overrides {shown_overrides(overrides)}")


def _yaml_problem(exc: params_file.YAMLError) -> str:
    """A YAML error as one line: what is wrong and where (the parser's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    if mark is None and getattr(exc, "position", None) is not None:  # a ReaderError: a byte YAML refuses
        where = f"character {exc.position}: "  # type: ignore[attr-defined]
    return where + " ".join(str(problem).split())


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate a params file.

    Every way the file can be unusable is one `ConfigError` line naming it: missing, a directory, unreadable,
    not UTF-8 text, not YAML, nested too deeply to parse, empty, or not a mapping of sections. A file that is
    a mapping is then validated key by key (`parse_params`).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such params file (run from the project root or pass --params)")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a params file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a YAML text file (byte {exc.start} is not UTF-8; is it a binary file?)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        raw = params_file.load_plain(text)  # YAML 1.2, as `init` writes it and DVC reads it: `No` is a string
    except params_file.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a params file (lists or mappings in each other)") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; it should be a mapping of sections, starting with data:")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, source=str(path))


def apply_overrides(path: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys in the params file (`params_file.override_text`: comments and layout kept); raise
    `ConfigError`, and leave the file alone, when the result does not validate."""
    if not overrides:
        return
    text = params_file.override_text(path.read_text(), overrides)
    parse_params(params_file.load_plain(text), source=f"{path} with overrides {shown_overrides(overrides)}")
    path.write_text(text)
