"""The model card: where a model came from. One type for its three writers.

1. the `export` stage writes `models/model_card.json`: what the model is, its params, data hashes, metrics and
   code version;
2. the `promote` stage adds the gate's decision, the rows the model learned from (`training`: counts, time
   range and a hash of their keys; the keys themselves are the version's `training_keys.parquet`, which later
   gates use to compare with this model only on rows it never saw) and the code version; the registry adds
   `version`, `registered_at` and `files_sha256` when it stores the card in `vN/model_card.json`;
3. the retrain flow adds `git_commit` and `data_push`: the commit and DVC push that pin a champion's inputs;
4. the shadow gate (`evergreen.registry.shadow`) adds `shadow`: its verdict on a challenger that served in the
   shadow, and the evidence (labelled live records, both metrics, the interval).

Every field is optional, so a card written by an older Evergreen (or a bare card in a test registry) loads.
The registry stores cards as plain dicts (`Registry.add`/`card`/`annotate`); convert with `to_dict`/`from_dict`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from evergreen.artifacts.base import Artifact, Record
from evergreen.artifacts.reports import EvalReport, GateDecision, Scores, ShadowVerdict
from evergreen.config import redact_params

__all__ = ["ModelCard", "TrainingRows", "redact_card"]


class TrainingRows(Record):
    """The rows a model learned from (train and valid parts): enough to tell whether it has seen a test row."""

    rows: int  # the train part
    valid_rows: int
    key: str  # what identifies a row in `keys_sha256` and the version's key file: "id:<column>" or "row content"
    keys_sha256: str  # of the sorted keys of train and valid: equal hashes, same rows
    time_from: str | None = None  # event time range of train and valid, when the data has a timestamp
    time_to: str | None = None


class ModelCard(Artifact):
    """A model's provenance, metrics and promotion record (see the module docstring for who sets what)."""

    # set by the export stage
    task: Literal["regression", "classification"] | None = None
    target: str | None = None
    onnx_sha256: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)  # the resolved params.yaml the model was trained with
    data: dict[str, str] = Field(default_factory=dict)  # data file -> md5, as dvc.lock recorded them
    metrics: EvalReport | None = None
    train_metrics: dict[str, Any] | None = None  # `metrics/train.json` as it was
    code: dict[str, str | None] = Field(default_factory=dict)  # git commit and package version
    # set by the promote stage
    gate: GateDecision | None = None
    training: TrainingRows | None = None
    # set by the registry when it stores the card
    version: str | None = None
    registered_at: str | None = None
    files_sha256: dict[str, str] = Field(default_factory=dict)
    # set by the retrain flow after a promotion
    git_commit: str | None = None
    data_push: str | None = None
    # set by the shadow gate, on a version that served in the shadow
    shadow: ShadowVerdict | None = None

    @field_validator("params")
    @classmethod
    def _secrets_masked(cls, params: dict[str, Any]) -> dict[str, Any]:
        # a card is written, stored, served and printed: a password in its params must show in none of them,
        # even in a card (or a checkpoint it was made from) written before secrets were masked at the source
        return redact_params(params)

    @property
    def test_metrics(self) -> Scores:
        """The model's metrics on the test split at export (empty when the card has none)."""
        return self.metrics.model if self.metrics else {}


def redact_card(card: dict[str, Any]) -> dict[str, Any]:
    """A card as a plain dict (as the registry stores it) with any secret in its params masked, fit to show."""
    if isinstance(card.get("params"), dict):
        return {**card, "params": redact_params(card["params"])}
    return card
