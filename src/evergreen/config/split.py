"""`split`: how the clean data becomes train, valid and test."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NaiveDatetime, model_validator

from evergreen.config.base import StrictModel
from evergreen.config.data import DataConfig


class SplitConfig(StrictModel):
    """How the clean data is split: by time (cut dates or fractions) or at random (stratified).

    `method` defaults to time when `data.timestamp` is declared, else random (`method_for`).
    """

    method: Literal["time", "random"] | None = None
    valid_from: NaiveDatetime | None = None
    test_from: NaiveDatetime | None = None
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    stratify: bool = True
    seed: int = 42
    # From this many clean rows on, each partition is split alone and a row's part is fixed by its time or a
    # hash of its key (`data.split_partitions`): bounded memory, and an arrival splits only its own rows.
    # Below it the whole history is split at once: stratified, with exact fractions.
    partitioned_from_rows: int = Field(1_000_000, ge=1)

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
