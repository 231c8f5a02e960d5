"""Stage `clean`: typed, repaired rows to `data/clean/`, the rest to `data/quarantine/` with a reason."""

from __future__ import annotations

import polars as pl

from evergreen.data import io
from evergreen.data.clean import clean
from evergreen.data.schema import REASON
from evergreen.errors import DataError
from evergreen.workspace import Workspace


def run(ws: Workspace) -> None:
    raw = pl.read_parquet(ws.raw)
    result = clean(raw, ws.params.data, ws.params.clean)
    # the quarantine is written first so that a user can inspect it even when the stage fails below
    io.write_parquet(result.quarantine, ws.quarantine)
    summary = result.summary()
    io.write_json(summary, ws.data_metrics)
    if result.clean.height == 0:
        top = result.quarantine[REASON].value_counts(sort=True).head(3).rows()
        reasons = ", ".join(f"{reason!r} ({n} rows)" for reason, n in top)
        raise DataError(
            f"clean: all {result.rows_in} rows were quarantined to {ws.show(ws.quarantine)}; "
            f"most common reasons: {reasons or 'none'}"
        )
    io.write_parquet(result.clean, ws.clean)
    print(
        f"clean: {result.rows_in} rows in, {result.clean.height} out, {result.quarantine.height} quarantined"
        f" {summary['quarantined_by_reason']}; imputed {result.imputed}; clipped {result.clipped}"
    )
