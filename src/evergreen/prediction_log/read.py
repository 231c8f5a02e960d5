"""Reading the prediction log as frames, from either backend (a `LogLocation`: SQLite file or PostgreSQL).

`read_log` is what monitoring, feedback and the backtest read; `read_shadow_pairs` and `count_shadow_labels`
what the shadow gate reads. The queries are the same for both backends (see `base`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from evergreen.config import DataConfig
from evergreen.data.schema import polars_type, request_columns
from evergreen.prediction_log.base import TIME_FORMAT, LogColumns
from evergreen.workspace import LogLocation

__all__ = ["count_shadow_labels", "read_log", "read_shadow_pairs"]

C = LogColumns
_COLUMNS = [C.REQUEST_ID, C.ROW, C.TIME, C.MODEL_VERSION, C.FEATURES, C.PREDICTION, C.PROBABILITIES]
_COLUMNS += [C.OUT_OF_RANGE, C.LABEL, C.LABEL_TIME]
_SHADOW_COLUMNS = [C.REQUEST_ID, C.ROW, C.TIME, C.MODEL_VERSION, C.LABEL, C.PREDICTION, C.PROBABILITIES]
_SHADOW_COLUMNS += [C.SHADOW_PREDICTION, C.SHADOW_PROBABILITIES]
_SHADOW_FROM = (
    " FROM predictions p JOIN shadow_predictions s ON s.request_id = p.request_id AND s.row = p.row"
    " WHERE s.model_version = ? AND p.label IS NOT NULL"
)
_SHADOW_PAIRS = (
    "SELECT p.request_id, p.row, p.time, p.model_version, p.label, p.prediction, p.probabilities,"
    f" s.prediction, s.probabilities{_SHADOW_FROM} ORDER BY p.seq"
)


def _fetch(log: LogLocation, query: str, args: list[Any]) -> list[tuple[Any, ...]]:
    if log.kind == "postgresql":
        from evergreen.prediction_log import postgres  # psycopg only for a PostgreSQL log

        return postgres.fetch(log, query, args)
    from evergreen.prediction_log import sqlite

    assert log.path is not None  # a SQLite location always has its path
    return sqlite.fetch(log.path, query, args)


def _query(last_rows: int | None, since: dt.datetime | str | None, old: bool = False) -> tuple[str, list[Any]]:
    where, args = "", []
    if since is not None:
        if isinstance(since, dt.datetime):
            since = (since if since.tzinfo else since.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
            since = since.strftime(TIME_FORMAT)
        where, args = " WHERE time >= ?", [since]
    newest = ""
    if last_rows is not None:
        newest, args = " ORDER BY seq DESC LIMIT ?", [*args, int(last_rows)]
    selected = [f"NULL AS {n}" if old and n == C.OUT_OF_RANGE else n for n in _COLUMNS]  # a log from before
    inner = f"SELECT seq, {', '.join(selected)} FROM predictions{where}{newest}"
    return f"SELECT {', '.join(_COLUMNS)} FROM ({inner}) AS newest ORDER BY seq", args


def _utc(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC")


def _feature_dtypes(data: DataConfig) -> dict[str, pl.DataType]:
    features, annotations = request_columns(data)
    # a personal column is stored as its keyed hash (text) or not at all (`evergreen.privacy`)
    return {c.name: pl.String() if c.pii else polars_type(c) for c in [*features, *annotations] if c.pii != "drop"}


def _features(text: pl.Series, data: DataConfig | None) -> pl.DataFrame:
    """The records' JSON spread into one column per field (typed as declared when `data` is given)."""
    if data is not None:
        dtypes = _feature_dtypes(data)
        temporal = {n: t for n, t in dtypes.items() if t in (pl.Date(), pl.Datetime("us"))}
        as_text = {n: pl.String() if n in temporal else t for n, t in dtypes.items()}
        features = text.str.json_decode(pl.Struct(as_text)).struct.unnest()
        return features.with_columns(
            pl.col(n).str.to_date() if t == pl.Date() else pl.col(n).str.to_datetime(time_unit="us")
            for n, t in temporal.items()
        )
    if text.len():
        return text.str.json_decode(infer_schema_length=None).struct.unnest()
    return pl.DataFrame()


def read_log(
    log: LogLocation,
    last_rows: int | None = None,
    since: dt.datetime | str | None = None,
    data: DataConfig | None = None,
) -> pl.DataFrame:
    """The log as a frame with one column per feature (typed as declared when `data` is given).

    `log`: where it lives (`Workspace.prediction_log_location`). Columns (see
    `LogColumns`): request_id, row, time (UTC), model_version, the features (and id/timestamp columns),
    prediction, probabilities, out_of_range (list of feature names), label, label_time. `last_rows` keeps the
    newest rows, `since` the rows scored at or after a time (a naive datetime is taken as UTC). A log that does
    not exist yet is an empty frame.
    """
    old = False
    if log.path is not None:
        from evergreen.prediction_log.sqlite import table_columns

        columns = table_columns(log.path)
        old = bool(columns) and C.OUT_OF_RANGE not in columns
    rows = _fetch(log, *_query(last_rows, since, old))
    frame = pl.DataFrame(rows, schema=_COLUMNS, orient="row", infer_schema_length=None)
    features = _features(frame[C.FEATURES].cast(pl.String), data)
    numeric = data is not None and data.task == "regression"
    outcome = [pl.col(n).cast(pl.Float64) if numeric else pl.col(n) for n in (C.PREDICTION, C.LABEL)]
    head = frame.select(
        pl.col(C.REQUEST_ID).cast(pl.String),
        pl.col(C.ROW).cast(pl.Int64),
        _utc(C.TIME),
        pl.col(C.MODEL_VERSION).cast(pl.String),
    )
    flagged = pl.col(C.OUT_OF_RANGE).cast(pl.String).str.json_decode(pl.List(pl.String))
    tail = frame.select(
        outcome[0],
        pl.col(C.PROBABILITIES).cast(pl.String),
        flagged.fill_null(pl.lit([], dtype=pl.List(pl.String))),
        outcome[1],
        _utc(C.LABEL_TIME),
    )
    return pl.concat([head, features, tail], how="horizontal")


def read_shadow_pairs(log: LogLocation, version: str, data: DataConfig) -> pl.DataFrame:
    """The labelled records that the shadow model `version` also scored, in log order: one row per record with
    request_id, row, time (UTC), model_version (the champion's), label, prediction and probabilities (the
    champion's), shadow_prediction and shadow_probabilities. Label and predictions are floats for regression
    (as `read_log` reads them), else the target's declared type."""
    rows = _fetch(log, _SHADOW_PAIRS, [version])
    frame = pl.DataFrame(rows, schema=_SHADOW_COLUMNS, orient="row", infer_schema_length=None)
    outcome = pl.Float64() if data.task == "regression" else polars_type(data.target)
    return frame.select(
        pl.col(C.REQUEST_ID).cast(pl.String),
        pl.col(C.ROW).cast(pl.Int64),
        _utc(C.TIME),
        pl.col(C.MODEL_VERSION).cast(pl.String),
        pl.col(C.LABEL).cast(outcome),
        pl.col(C.PREDICTION).cast(outcome),
        pl.col(C.PROBABILITIES).cast(pl.String),
        pl.col(C.SHADOW_PREDICTION).cast(outcome),
        pl.col(C.SHADOW_PROBABILITIES).cast(pl.String),
    )


def count_shadow_labels(log: LogLocation, version: str) -> int:
    """How many labelled records the shadow model `version` scored (a count, without reading them)."""
    rows = _fetch(log, "SELECT count(*)" + _SHADOW_FROM, [version])
    return int(rows[0][0]) if rows else 0
