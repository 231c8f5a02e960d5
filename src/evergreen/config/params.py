"""The whole `params.yaml`: the root `Params` model, the checks that span sections, and the one loader.

The file is read through `evergreen.params_file` (YAML 1.2, as DVC reads it) and validated here once; every
problem becomes one `ConfigError` line naming its key path.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError, model_validator

from evergreen import params_file
from evergreen.config.base import (
    REVEAL,
    SECRET_PATHS,
    CrossReferenceErrors,
    Problem,
    StrictModel,
    mask_url,
    shown_overrides,
)
from evergreen.config.clean import CleanConfig
from evergreen.config.data import DataConfig
from evergreen.config.evaluate import EvaluateConfig
from evergreen.config.export import ExportConfig
from evergreen.config.ingest import IngestConfig
from evergreen.config.metrics import TASK_METRICS
from evergreen.config.model import ModelConfig
from evergreen.config.monitor import MonitorConfig
from evergreen.config.orchestration import OrchestrationConfig
from evergreen.config.promote import PromoteConfig
from evergreen.config.serve import ServeConfig
from evergreen.config.simulate import SimulateConfig
from evergreen.config.split import SplitConfig
from evergreen.config.train import TrainConfig
from evergreen.config.tune import TuneConfig
from evergreen.config.validation import ValidationConfig
from evergreen.errors import ConfigError
from evergreen.params_file import set_dotted

DEFAULT_PARAMS = Path("params.yaml")


class Params(StrictModel):
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


_TOO_DEEP = "nested too deeply to be a params file (lists or mappings in each other)"


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
    if params_file.flow_depth(text) > params_file.MAX_FLOW_DEPTH:
        raise ConfigError(f"{path}: {_TOO_DEEP}")
    try:
        raw = params_file.load_plain(text)  # YAML 1.2, as `init` writes it and DVC reads it: `No` is a string
    except params_file.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: {_TOO_DEEP}") from None
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
