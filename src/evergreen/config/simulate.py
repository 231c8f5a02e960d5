"""`simulate`: the backtest, a replay of the project's history as production traffic."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NaiveDatetime

from evergreen.config.base import StrictModel


class SimulateConfig(StrictModel):
    """`evergreen simulate`: a replay of the bundled history as production traffic, to compare policies."""

    # the first model is trained on everything before this; the rest is replayed. A date of the project's own
    # data (`evergreen init` sets it to the valid cut), so there is no default: `evergreen simulate` asks for it
    start: NaiveDatetime | None = None
    end: NaiveDatetime | None = None  # replay until here (default: the end of the data)
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
