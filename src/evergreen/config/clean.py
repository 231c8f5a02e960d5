"""`clean`: the cleaning policies for columns that declare none of their own."""

from __future__ import annotations

from evergreen.config.base import StrictModel
from evergreen.config.data import MissingPolicy, OutOfRangePolicy


class CleanConfig(StrictModel):
    """Defaults for columns that do not declare their own cleaning policy."""

    missing: MissingPolicy = "quarantine"
    out_of_range: OutOfRangePolicy = "quarantine"
    drop_duplicates: bool = True
