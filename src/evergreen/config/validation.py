"""`validation`: where the expectation suites and their reports live, and how data reaches them."""

from __future__ import annotations

from pydantic import Field

from evergreen.config.base import StrictModel


class ValidationConfig(StrictModel):
    """Where the expectation suites live, how many failing examples a message shows, and the batch size."""

    suites_dir: str = "expectations"
    reports_dir: str = "reports/validation"
    example_values: int = Field(5, ge=1, le=50)
    # rows handed to Great Expectations at a time: a partition larger than this is validated in batches, so
    # memory is bounded by the batch, not the partition. Column expectations hold in each batch (a `mostly`
    # share, uniqueness) as they hold in each partition.
    batch_rows: int = Field(1_000_000, ge=1000)
