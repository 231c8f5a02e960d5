"""The one typed config: `params.yaml` loaded into pydantic models, validated once per process.

Every section is a strict model: an unknown key or a bad value is a `ConfigError` whose message names the key
path, e.g. ``data.columns[3].role: 'lable' is not one of: feature, target, timestamp, id, ignore``.
Functions take the section they need (`DataConfig`, `SplitConfig`, ...), never the whole file.

One module per section (`data`, `split`, `train`, ...), what they share in `base` and the metric table in
`metrics`, the root model and the loader in `params`. The split is what lets `dvc.yaml` give each stage only
the section modules it reads: a change to a `serve` default does not rerun training. Import from here.
"""

from evergreen.config.base import (
    MASK,
    REVEAL,
    SECRET_PATHS,
    CrossReferenceErrors,
    Problem,
    SecretText,
    SecretUrl,
    StrictModel,
    mask_url,
    redact_params,
    shown_overrides,
)
from evergreen.config.clean import CleanConfig
from evergreen.config.data import (
    CALENDAR_KINDS,
    MODEL_FILLED,
    CalendarPart,
    Column,
    ColumnType,
    DataConfig,
    DerivedFeature,
    Kind,
    MissingPolicy,
    OutOfRangePolicy,
    PiiPolicy,
    Role,
    Scalar,
    TimestampConfig,
)
from evergreen.config.evaluate import Baseline, EvaluateConfig
from evergreen.config.export import ExportConfig
from evergreen.config.ingest import IngestConfig
from evergreen.config.metrics import DEFAULT_METRIC, METRICS, MONITORED, TASK_METRICS, Metric, MetricName
from evergreen.config.model import Activation, ModelConfig, PositiveInt
from evergreen.config.monitor import MonitorConfig, PolicyConfig, WindowConfig
from evergreen.config.orchestration import DeploymentConfig, FlowName, OrchestrationConfig
from evergreen.config.params import (
    DEFAULT_PARAMS,
    Params,
    apply_overrides,
    load_params,
    parse_params,
    with_overrides,
)
from evergreen.config.promote import PromoteConfig, ShadowConfig
from evergreen.config.serve import ServeConfig
from evergreen.config.simulate import SimulateConfig
from evergreen.config.split import SplitConfig
from evergreen.config.train import DistributedConfig, TrainConfig
from evergreen.config.tune import DEFAULT_SPACE, TUNABLE, SearchDimension, TuneConfig
from evergreen.config.validation import ValidationConfig

__all__ = [
    "CALENDAR_KINDS",
    "DEFAULT_METRIC",
    "DEFAULT_PARAMS",
    "DEFAULT_SPACE",
    "MASK",
    "METRICS",
    "MODEL_FILLED",
    "MONITORED",
    "REVEAL",
    "SECRET_PATHS",
    "TASK_METRICS",
    "TUNABLE",
    "Activation",
    "Baseline",
    "CalendarPart",
    "CleanConfig",
    "Column",
    "ColumnType",
    "CrossReferenceErrors",
    "DataConfig",
    "DeploymentConfig",
    "DerivedFeature",
    "DistributedConfig",
    "EvaluateConfig",
    "ExportConfig",
    "FlowName",
    "IngestConfig",
    "Kind",
    "Metric",
    "MetricName",
    "MissingPolicy",
    "ModelConfig",
    "MonitorConfig",
    "OrchestrationConfig",
    "OutOfRangePolicy",
    "Params",
    "PiiPolicy",
    "PolicyConfig",
    "PositiveInt",
    "Problem",
    "PromoteConfig",
    "Role",
    "Scalar",
    "SearchDimension",
    "SecretText",
    "SecretUrl",
    "ServeConfig",
    "ShadowConfig",
    "SimulateConfig",
    "SplitConfig",
    "StrictModel",
    "TimestampConfig",
    "TrainConfig",
    "TuneConfig",
    "ValidationConfig",
    "WindowConfig",
    "apply_overrides",
    "load_params",
    "mask_url",
    "parse_params",
    "redact_params",
    "shown_overrides",
    "with_overrides",
]
