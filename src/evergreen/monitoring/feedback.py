"""Labelled feedback from the prediction log, landed as a new batch for the next `ingest`.

A labelled prediction is a training row: its logged features, id and timestamp, with the label as the target.
Rows are landed once: the log's label times after the last landing (kept in a small state file) select them.
Rows that cannot become training rows (no id, where the data declares one) are counted, never silently lost.
A personal column (`pii: hash | drop`) is stored in the log as a keyed hash or not at all, so the log cannot give
back its values: it lands empty, and `clean` applies the column's missing-value policy (quarantine by default),
never a hash standing in for a value. A personal id cannot key a training row: those rows count as without id.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from evergreen.config import DataConfig
from evergreen.data import io
from evergreen.data.schema import polars_type
from evergreen.prediction_log.base import LogColumns
from evergreen.privacy import personal_columns


@dataclass(frozen=True)
class FeedbackBatch:
    rows: pl.DataFrame  # in the declared layout, ready for the landing folder
    without_id: int  # labelled rows that could not be landed because their id was not sent
    landed_until: str | None  # the newest label time in this batch


def feedback_batch(log: pl.DataFrame, data: DataConfig, after: str | None) -> FeedbackBatch:
    """The labelled log rows whose label arrived after `after`, as rows of the declared dataset."""
    labelled = log.filter(pl.col(LogColumns.LABEL).is_not_null())
    if after is not None:
        labelled = labelled.filter(pl.col(LogColumns.LABEL_TIME) > dt.datetime.fromisoformat(after))
    without_id = 0
    personal = personal_columns(data)
    if data.id_column is not None:
        id_name = data.id_column.name
        keyed = id_name in labelled.columns and id_name not in personal
        has_id = pl.col(id_name).is_not_null() if keyed else pl.lit(False)
        without_id = labelled.filter(~has_id).height
        labelled = labelled.filter(has_id)
    columns = []
    for column in data.columns:
        if column.role == "target":
            # the log keeps labels as numbers; land them in the target's declared type ("48", not "48.0")
            columns.append(pl.col(LogColumns.LABEL).cast(polars_type(column)).alias(column.name))
        elif column.name in labelled.columns and column.name not in personal:
            columns.append(pl.col(column.name))
        else:
            columns.append(pl.lit(None).alias(column.name))  # e.g. ignored columns the service never sees
    rows = labelled.select(columns).with_columns(pl.all().cast(pl.String))
    newest = labelled[LogColumns.LABEL_TIME].max() if labelled.height else None
    return FeedbackBatch(rows, without_id, newest.isoformat() if newest is not None else None)


def land_feedback(
    log: pl.DataFrame, data: DataConfig, incoming: Path, state: Path
) -> tuple[Path | None, FeedbackBatch]:
    """Write the new labelled rows to `incoming/feedback-<time>.parquet` and remember how far we got."""
    after = json.loads(state.read_text())["landed_until"] if state.exists() else None
    batch = feedback_batch(log, data, after)
    if batch.rows.height == 0:
        return None, batch
    stamp = batch.landed_until.replace(":", "").replace("-", "").replace("+", "_")
    target = incoming / f"feedback-{stamp}.parquet"
    io.write_parquet(batch.rows, target)
    io.write_json({"landed_until": batch.landed_until, "file": str(target)}, state)
    return target, batch
