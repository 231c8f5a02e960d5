"""Count, mean, spread and range of columns over a stream of frames, the same to the last bit on every run.

Polars' streaming engine sums in whatever order its threads finish, so two passes over the same Parquet pieces
could give means that differ in the last bit: then a streamed model is not reproducible, and a killed run
finds its checkpoint "written for other data". Here each frame is reduced by numpy, and the frames are merged
in their order (Chan et al.'s pairwise update), so the same frames in the same order give the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class Moments:
    """Present (non-null) values of one column: how many, their mean, sum of squared deviations, least, greatest.

    A NaN among them makes every figure NaN, as polars' own mean and std would be."""

    count: int = 0
    mean: float = math.nan
    m2: float = math.nan
    least: float = math.nan
    greatest: float = math.nan

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        if len(values) == 0:
            return cls()
        mean = float(values.mean())
        return cls(len(values), mean, float(((values - mean) ** 2).sum()), float(values.min()), float(values.max()))

    def merged(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / count
        return Moments(count, mean, m2, min(self.least, other.least), max(self.greatest, other.greatest))

    def std(self, ddof: int) -> float:
        """The standard deviation with `ddof` (1: the sample's, as polars' `std()`; 0: the population's)."""
        return math.sqrt(self.m2 / (self.count - ddof)) if self.count > ddof else math.nan


def column_moments(frames: Iterable[pl.DataFrame], columns: dict[str, pl.Expr]) -> dict[str, Moments]:
    """`Moments` of each named expression (as Float64) over `frames`, merged in their order."""
    found = {name: Moments() for name in columns}
    for frame in frames:
        values = frame.select(expr.cast(pl.Float64).alias(name) for name, expr in columns.items())
        for name in columns:
            found[name] = found[name].merged(Moments.of(values[name].drop_nulls().to_numpy()))
    return found
