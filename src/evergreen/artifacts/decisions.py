"""The decisions log (`monitor.decisions`, JSON lines): what monitoring decided, and what each retrain came to.

Three kinds of entry, told apart by `kind`:
- `"decision"`, a `RetrainDecision`: the retraining policy's verdict on one monitoring window (written by
  `evergreen.monitoring.monitor`);
- `"retrain_result"`, a `RetrainResult`: the outcome of a retrain (written by the `retrain` and `monitor` flows);
  status "shadow" when the challenger passed and went to the shadow (`promote.shadow`);
- `"shadow_decision"`, a `ShadowDecision`: the shadow gate promoted or discarded a shadow challenger, with its
  evidence (written by `evergreen.registry.shadow`).
This module is the log's one reader and writer; the policy reads the history back to apply hysteresis,
cooldowns and backoff.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from evergreen.artifacts.base import Record, describe
from evergreen.artifacts.reports import ShadowVerdict
from evergreen.errors import ArtifactError

__all__ = [
    "Action",
    "DecisionLogEntry",
    "RetrainDecision",
    "RetrainResult",
    "ShadowDecision",
    "append_entry",
    "read_history",
]

Action = Literal["retrain", "none", "alert", "insufficient_data"]


class RetrainDecision(Record):
    """The retraining policy's decision about one monitoring window."""

    kind: Literal["decision"] = "decision"
    time: str  # the window's end on the prediction log's clock (ISO 8601)
    action: Action
    drifted: bool
    reasons: list[str]
    champion: str | None
    drift_share: float
    degradation: float | None = None  # relative worsening of the monitored metric since promotion
    drifted_features: list[str] = Field(default_factory=list)
    report: str | None = None  # the window's HTML report, as the workspace shows it (None when none was saved)
    # the window's newest prediction (ISO 8601): hysteresis counts a window once, however often it is judged
    window_end: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()  # every field on every line, as the log has always had them


class RetrainResult(Record):
    """What one retrain came to."""

    kind: Literal["retrain_result"] = "retrain_result"
    status: Literal["promoted", "shadow", "not promoted", "failed", "skipped"]
    reason: str | None = None  # what asked for the retrain: the policy's reasons, or "scheduled"
    version: str | None = None  # the new registry version, when promoted (or put in the shadow)
    reasons: list[str] = Field(default_factory=list)  # the gate's reasons, or why the retrain was skipped
    error: str | None = None  # the first line of the error, when it failed
    git_commit: str | None = None  # the commit pinning a promoted champion (None outside git)
    data_push: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _status_with_reason(cls, data: Any) -> Any:
        # older flows wrote the reason into the status: "skipped: a retrain was already running"
        if isinstance(data, dict) and str(data.get("status", "")).startswith("skipped: "):
            status, _, why = data["status"].partition(": ")
            return {**data, "status": status, "reasons": [why, *data.get("reasons", [])]}
        return data

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class ShadowDecision(ShadowVerdict):
    """The shadow gate's final verdict (promoted or discarded) on a shadow challenger, with its evidence."""

    kind: Literal["shadow_decision"] = "shadow_decision"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


_Entry = RetrainDecision | RetrainResult | ShadowDecision
DecisionLogEntry = Annotated[_Entry, Field(discriminator="kind")]
_ENTRY: TypeAdapter[_Entry] = TypeAdapter(DecisionLogEntry)


def _parse(path: Path, number: int, line: bytes) -> _Entry:
    try:
        return _ENTRY.validate_json(line)
    except ValidationError as exc:
        raise ArtifactError(f"{path}: line {number} is not a decisions-log entry: {describe(exc)}") from None


def read_history(path: Path) -> list[_Entry]:
    """Every entry of a decisions log, oldest first; a missing file is an empty history.

    A torn last line (a writer killed mid-append) is skipped; any other bad line is an `ArtifactError` naming
    the file and line.
    """
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    torn = lines.pop()  # b"" when the file ends with a newline, as every complete append does
    entries = [_parse(path, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if torn.strip():
        with contextlib.suppress(ArtifactError):  # a half-written last line: that entry was never made
            entries.append(_parse(path, len(lines) + 1, torn))
    return entries


def append_entry(path: Path, entry: _Entry) -> None:
    """Append one entry, durably (a decision must survive the process that made it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(entry.to_dict(), default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
