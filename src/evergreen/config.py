"""The one typed config: `params.yaml` loaded into pydantic models, validated once per process.

Every section is a strict model: an unknown key or a bad value is a `ConfigError` whose message names the key
path, e.g. ``data.columns[3].role: 'lable' is not one of: feature, target, timestamp, id, ignore``.
Functions take the section they need (`DataConfig`, `SplitConfig`, ...), never the whole file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from evergreen.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")

ColumnType = Literal["int", "float", "str", "bool", "date", "datetime"]
Role = Literal["feature", "target", "timestamp", "id", "ignore"]
Kind = Literal["numeric", "categorical"]
MissingPolicy = Literal["quarantine", "impute_median", "impute_mode", "impute_constant", "keep"]
OutOfRangePolicy = Literal["quarantine", "clip"]
Scalar = int | float | str | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    # cleaning policies; None means the `clean` section's default
    missing: MissingPolicy | None = None
    fill_value: Scalar | None = None
    out_of_range: OutOfRangePolicy | None = None

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

    @property
    def has_range(self) -> bool:
        return self.min is not None or self.max is not None or self.allowed is not None


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
    # (Gorishniy et al. 2021); ft_transformer: one token per feature plus [CLS], a pre-norm transformer
    type: Literal["mlp", "resnet", "ft_transformer"] = "mlp"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 256], min_length=1)  # mlp
    activation: Activation = "silu"  # every family's hidden layers (the transformer's feed-forward too)
    dropout: float = Field(0.1, ge=0, lt=1)  # hidden dropout: mlp layers, resnet blocks, transformer FFN
    embedding_dim: int = Field(8, ge=1, le=256)  # mlp and resnet, per categorical field
    d_main: int = Field(128, ge=1, le=4096)  # resnet: the width of the residual stream
    n_blocks: int = Field(3, ge=1, le=32)  # resnet blocks, or transformer layers
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
    batch_size: int = Field(256, ge=1)
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


Baseline = Literal["mean", "linear", "hgb"]


class EvaluateConfig(_Strict):
    """Scoring on the test split, and the baselines fitted on the same split."""

    baselines: list[Baseline] = Field(default_factory=lambda: ["mean", "linear", "hgb"], min_length=1)
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
    baseline: Literal["best", "mean", "linear", "hgb"] = "best"
    # the challenger may be at most this much worse (relative, on `metric`) than the baseline
    baseline_margin: float = Field(0.05, ge=0)
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
    log_url: str | None = None
    log_url_env: str | None = None

    @field_validator("log_url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
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
    # variable holding one (keeps a PostgreSQL password out of params.yaml)
    storage: str | None = None
    study: str = Field("evergreen", min_length=1)
    n_trials: int = Field(30, ge=1, description="trials in the study, all workers together (a rerun resumes)")
    workers: int = Field(1, ge=1, description="worker processes on this machine sharing the study")
    timeout_s: float | None = Field(None, gt=0, description="a worker starts no trial after this many seconds")
    prune_warmup_epochs: int = Field(5, ge=0, description="epochs a trial runs before it can be pruned")
    prune_startup_trials: int = Field(5, ge=0, description="finished trials before pruning starts")
    output_dir: str = "tune"
    space: dict[str, SearchDimension] = Field(default_factory=lambda: dict(DEFAULT_SPACE))

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
    return (
        f"{where}: {msg} (got {err['input']!r})" if not isinstance(err["input"], dict | list) else (f"{where}: {msg}")
    )


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise `ConfigError` listing every bad key path."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        # pydantic reports each failing union branch; keep one line per key path
        lines = list(dict.fromkeys(line for e in exc.errors() for line in _format_error(e)))
        raise ConfigError(f"{source} is invalid:\n  " + "\n  ".join(lines)) from None


def set_dotted(tree: Any, dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested mappings; a missing section is a `ConfigError` naming it."""
    *parents, leaf = dotted.split(".")
    node = tree
    for i, key in enumerate(parents):
        if key not in node:
            raise ConfigError(f"{'.'.join(parents[: i + 1])}: no such section in params.yaml (override {dotted!r})")
        node = node[key]
    node[leaf] = value


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """A copy of `params` with dotted keys replaced, validated like the file itself."""
    raw = params.model_dump(mode="json")
    for dotted, value in overrides.items():
        set_dotted(raw, dotted, value)
    return parse_params(raw, source=f"params with overrides {overrides}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong and where (PyYAML's own message spans several lines)."""
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
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a params file (lists or mappings in each other)") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; it should be a mapping of sections, starting with data:")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, source=str(path))
