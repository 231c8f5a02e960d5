"""Stage `clean`: typed, repaired rows to `data/clean/`, the rest to `data/quarantine/` with a reason."""

from __future__ import annotations

import polars as pl

from evergreen.config import Params
from evergreen.data import io, paths
from evergreen.data.clean import clean
from evergreen.data.schema import REASON
from evergreen.errors import DataError


def run(params: Params) -> None:
    raw = pl.read_parquet(paths.RAW)
    result = clean(raw, params.data, params.clean)
    # the quarantine is written first so that a user can inspect it even when the stage fails below
    io.write_parquet(result.quarantine, paths.QUARANTINE)
    summary = result.summary()
    io.write_json(summary, paths.DATA_METRICS)
    if result.clean.height == 0:
        top = result.quarantine[REASON].value_counts(sort=True).head(3).rows()
        reasons = ", ".join(f"{reason!r} ({n} rows)" for reason, n in top)
        raise DataError(
            f"clean: all {result.rows_in} rows were quarantined to {paths.QUARANTINE}; "
            f"most common reasons: {reasons or 'none'}"
        )
    io.write_parquet(result.clean, paths.CLEAN)
    print(
        f"clean: {result.rows_in} rows in, {result.clean.height} out, {result.quarantine.height} quarantined"
        f" {summary['quarantined_by_reason']}; imputed {result.imputed}; clipped {result.clipped}"
    )
