"""Which rows of the prediction log a monitoring run looks at: the last N rows and/or the last T hours.

Pure: takes the log as a frame (`evergreen.prediction_log.read.read_log`) and returns a slice of it. Hours are counted
back from `now` when given, else from the newest prediction in the log, so that a replayed or paused log is
judged on its own clock (the retraining policy's cooldown uses the same clock).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

from evergreen.config import WindowConfig
from evergreen.prediction_log.base import LogColumns

TIME = LogColumns.TIME


def select_window(
    log: pl.DataFrame, window: WindowConfig, now: dt.datetime | None = None, time_column: str = TIME
) -> pl.DataFrame:
    """The rows of `log` inside the window, oldest first.

    With both `last_hours` and `last_rows` set, the window is the newest `last_rows` rows among those of the
    last `last_hours` hours; with neither, the whole log. A naive `now` is taken in the log's time zone.
    """
    if time_column not in log.columns:
        raise ValueError(f"the prediction log has no {time_column!r} column (columns: {', '.join(log.columns)})")
    rows = log.sort(time_column, maintain_order=True)
    if window.last_hours is not None and rows.height:
        end = _as_log_time(now, rows[time_column].dtype) if now is not None else rows[time_column].max()
        start = end - dt.timedelta(hours=window.last_hours)
        rows = rows.filter(pl.col(time_column) > start, pl.col(time_column) <= end)
    if window.last_rows is not None:
        rows = rows.tail(window.last_rows)
    return rows


def _as_log_time(now: dt.datetime, dtype: pl.DataType) -> dt.datetime:
    """`now` comparable with the log's time column (aware UTC in `read_log`'s frames)."""
    zone = getattr(dtype, "time_zone", None)
    if zone is None:  # naive log times: compare naive, reading an aware `now` in UTC
        return now.astimezone(dt.UTC).replace(tzinfo=None) if now.tzinfo else now
    return now if now.tzinfo else now.replace(tzinfo=ZoneInfo(zone))
