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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class DataConfig(_Strict):
    """The dataset, declared once: source, task and columns. Everything else derives from it."""

    source: str = Field(min_length=1, description="path, glob or fsspec URL of CSV or Parquet files")
    incoming: str = "data/incoming"
    task: Literal["regression", "classification"]
    timestamp: TimestampConfig | None = None
    columns: list[Column] = Field(min_length=1)

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
        if not any(c.role == "feature" for c in self.columns):
            raise ValueError("at least one column must have role 'feature'")
        if self.timestamp is not None:
            for key in ("column", "hour_column"):
                name = getattr(self.timestamp, key)
                if name is not None and name not in names:
                    raise ValueError(f"timestamp.{key} {name!r} is not a declared column")
            ts_type = self.column(self.timestamp.column).type
            if ts_type not in ("date", "datetime"):
                raise ValueError(f"timestamp.column must have type date or datetime, not {ts_type!r}")
        return self

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
        return [c for c in self.columns if c.role == "feature"]

    @property
    def key(self) -> list[str]:
        """Columns that identify a row: the id when declared, else the timestamp columns."""
        if self.id_column is not None:
            return [self.id_column.name]
        if self.timestamp is not None:
            return [n for n in (self.timestamp.column, self.timestamp.hour_column) if n]
        return self.names


class CleanConfig(_Strict):
    """Defaults for columns that do not declare their own cleaning policy."""

    missing: MissingPolicy = "quarantine"
    out_of_range: OutOfRangePolicy = "quarantine"
    drop_duplicates: bool = True


class SplitConfig(_Strict):
    """How the clean data is split: by time (cut dates or fractions) or at random (stratified)."""

    method: Literal["time", "random"] = "time"
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


class ValidationConfig(_Strict):
    """Where the expectation suites live and how many failing examples a message shows."""

    suites_dir: str = "expectations"
    reports_dir: str = "reports/validation"
    example_values: int = Field(5, ge=1, le=50)


# ------------------------------------------------------------------------------------------------ model
Activation = Literal["relu", "gelu", "silu", "tanh"]
PositiveInt = Annotated[int, Field(gt=0)]


class ModelConfig(_Strict):
    """The network: embeddings for categorical features, normalised numeric features, an MLP on top."""

    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 256], min_length=1)
    activation: Activation = "silu"
    dropout: float = Field(0.1, ge=0, lt=1)
    embedding_dim: int = Field(8, ge=1, le=256)
    # crossed categoricals, e.g. [[hr, workingday]]: one embedding per combination of values
    crosses: list[Annotated[list[str], Field(min_length=2)]] = Field(default_factory=list)
    # features kept out of the MLP and added to its output (one weight, or one value per category): main
    # effects that should extrapolate, such as a trend in `yr`, instead of interacting with everything
    additive: list[str] = Field(default_factory=list)
    target_transform: Literal["none", "log1p"] = "log1p"  # regression only; inverted inside the model
    # members trained side by side on the same batches and averaged: still one module, one ONNX graph
    ensemble: int = Field(1, ge=1, le=16)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        for i, cross in enumerate(self.crosses):
            if len(set(cross)) != len(cross):
                raise ValueError(f"crosses[{i}] names a column twice: {cross}")
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
    class_weight: Literal["none", "balanced"] = "balanced"  # classification only


class EvaluateConfig(_Strict):
    """Scoring on the test split, and the baselines fitted on the same split."""

    baselines: list[Literal["mean", "linear", "hgb"]] = Field(default_factory=lambda: ["mean", "linear", "hgb"])
    hgb_max_iter: int = Field(500, ge=1)


class ExportConfig(_Strict):
    """ONNX export and the parity gate between onnxruntime and torch."""

    opset: int = Field(17, ge=17, le=23)
    # the gate: max |onnx - torch| over the test split must stay below this times the train target's std
    parity_tolerance: float = Field(1e-4, gt=0)
    latency_runs: int = Field(200, ge=10)
    throughput_batch: int = Field(1024, ge=1)


# ------------------------------------------------------------------------------------- registry & serving
class PromoteConfig(_Strict):
    """The promotion gate: every check must pass before a challenger replaces the champion."""

    registry_dir: str = "models/registry"
    baseline: Literal["mean", "linear", "hgb"] = "hgb"
    # the challenger may be at most this much worse (relative, on the primary metric) than the baseline
    baseline_margin: float = Field(0.05, ge=0)
    # ... and at most this much worse than the champion, on the same frozen evaluation rows
    champion_margin: float = Field(0.02, ge=0)
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    reference_rows: int = Field(5000, ge=100, description="training rows kept with a version for monitoring")
    seed: int = 42


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
    max_rows: int = Field(100_000, ge=1000, description="larger windows are sampled down for the drift check")
    policy: PolicyConfig = PolicyConfig()


class SimulateConfig(_Strict):
    """`evergreen simulate`: a replay of the bundled history as production traffic, to compare policies."""

    start: dt.datetime = dt.datetime(2012, 1, 1)  # the first model is trained on everything before this
    end: dt.datetime | None = None  # replay until here (default: the end of the data)
    window_days: int = Field(7, ge=1)
    valid_days: int = Field(14, ge=1, description="each retrain validates on the days just before its test days")
    test_days: int = Field(14, ge=1, description="... and gates on the most recent days it has labels for")
    policies: list[Literal["never", "periodic", "drift"]] = Field(
        default_factory=lambda: ["never", "periodic", "drift"]
    )
    # lighter training inside the replay, declared here so the backtest stays minutes, not hours
    overrides: dict[str, Any] = Field(default_factory=dict)
    output_dir: str = "monitoring/backtest"


# ---------------------------------------------------------------------------------------- orchestration
FlowName = Literal["pipeline", "retrain", "monitor"]


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


# ------------------------------------------------------------------------------------------------ params
class Params(_Strict):
    """The whole `params.yaml`: one section per concern; each function takes only the section it needs."""

    data: DataConfig
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

    @model_validator(mode="after")
    def _check(self) -> Params:
        known = {c.name for c in self.data.features} | {"prediction"}
        typos = sorted(set(self.monitor.policy.feature_thresholds) - known)
        if typos:
            raise ValueError(
                f"monitor.policy.feature_thresholds names {', '.join(typos)}, which is not a feature "
                f"(features: {', '.join(sorted(known))})"
            )
        return self


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


def _format_error(err: dict[str, Any]) -> str:
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
        lines = list(dict.fromkeys(_format_error(e) for e in exc.errors()))
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
