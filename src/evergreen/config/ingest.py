"""`ingest`: how much disagreement between arrivals the `ingest` stage tolerates."""

from __future__ import annotations

from pydantic import Field

from evergreen.config.base import StrictModel


class IngestConfig(StrictModel):
    """How much disagreement between arrivals `ingest` tolerates."""

    # a later row with the id of an earlier one and different content is a key conflict (kept aside); above
    # this share of the rows read, `ingest` fails: the id is probably not an id, or a file was re-exported
    max_key_conflicts: float = Field(0.01, ge=0, le=1)
