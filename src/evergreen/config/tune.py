"""`tune`: the Optuna study and its search space over `train.*` and `model.*`."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator

from evergreen.config.base import CrossReferenceErrors, SecretText, SecretUrl, StrictModel
from evergreen.config.model import ModelConfig
from evergreen.config.train import TrainConfig

TUNABLE = {"train": TrainConfig, "model": ModelConfig}  # the sections a search space may range over


class SearchDimension(StrictModel):
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


class TuneConfig(StrictModel):
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
    def _url_or_variable(cls, storage: SecretText | None) -> SecretText | None:
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
