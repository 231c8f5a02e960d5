"""What both prediction-log backends share: the column names, the clock, the statements, and the interface a
backend implements for the one writer (`writer.PredictionLog`). The log's errors are in `evergreen.errors`.

Two tables, the same in SQLite and PostgreSQL:

    predictions          one row per scored record (see `writer` for the columns)
    shadow_predictions   what a shadow challenger answered for the same record: request_id, row,
                         model_version, prediction, probabilities; (request_id, row, model_version) unique

Statements are written once, with `?` placeholders; the PostgreSQL backend turns them into `%s`. Times are
ISO-8601 UTC text in both ("...Z", sortable as text), so the readers' queries are the same too.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any, Protocol

import polars as pl

__all__ = [
    "INSERT",
    "INSERT_SHADOW",
    "ROWS_PER_STATEMENT",
    "SET_LABEL",
    "TIME_FORMAT",
    "COUNT_REQUEST",
    "DYNAMIC",
    "Backend",
    "LogColumns",
    "chunks",
    "insert_values",
    "utc_now",
]


class LogColumns:
    """The prediction log's column names, for every module that reads or writes the log."""

    SEQ = "seq"  # insertion order, in the table only
    REQUEST_ID = "request_id"
    ROW = "row"
    TIME = "time"
    MODEL_VERSION = "model_version"
    FEATURES = "features"  # in the table: the record as JSON; `read_log` spreads it into one column per field
    PREDICTION = "prediction"
    PROBABILITIES = "probabilities"
    OUT_OF_RANGE = "out_of_range"  # `read_log`: a list of feature names, empty when every value is in range
    LABEL = "label"
    LABEL_TIME = "label_time"
    # `read_shadow_pairs`: what the shadow challenger (table shadow_predictions) answered for the same record
    SHADOW_PREDICTION = "shadow_prediction"
    SHADOW_PROBABILITIES = "shadow_probabilities"
    # what `read_log` puts around the record's fields: never a feature, never an unexpected column
    METADATA = frozenset(
        {SEQ, REQUEST_ID, ROW, TIME, MODEL_VERSION, PREDICTION, PROBABILITIES, OUT_OF_RANGE, LABEL, LABEL_TIME}
    )


def probabilities_column(rows: list[list[float]]) -> pl.Series:
    """Class probabilities per row, as the log keeps them: a JSON list each."""
    return pl.Series(LogColumns.PROBABILITIES, [json.dumps(row) for row in rows], dtype=pl.String)


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # ISO-8601 UTC with microseconds: sorts as text


def utc_now() -> str:
    """The log's time format: ISO-8601 UTC, microseconds, sortable as text."""
    # isoformat: a third of strftime's cost, the same text (always six digits of microseconds)
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


INSERT = (
    "INSERT INTO predictions "
    "(request_id, row, time, model_version, features, prediction, probabilities, out_of_range) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_SHADOW = (
    "INSERT INTO shadow_predictions (request_id, row, model_version, prediction, probabilities) VALUES (?, ?, ?, ?, ?)"
)
COUNT_REQUEST = "SELECT count(*) FROM predictions WHERE request_id = ?"
SET_LABEL = "UPDATE predictions SET label = ?, label_time = ? WHERE request_id = ? AND row = ?"


@functools.lru_cache(maxsize=128)
def insert_values(insert: str, rows: int) -> str:
    """`insert` (one of the statements above) of `rows` rows in one statement."""
    head = insert.partition(" VALUES ")[0]
    width = head.count(",") + 1
    return head + " VALUES " + ", ".join([f"({', '.join('?' * width)})"] * rows)


class Backend(Protocol):
    """One connection to the log, driven by the writer thread only: explicit transactions and savepoints.

    `Error` is the driver's base exception: a request whose insert raises it (a duplicate id) fails alone,
    unless it is an `Unavailable` one (a lock timeout, a lost connection), which fails the whole commit.
    `atomic_statements`: a failed statement undoes only itself (SQLite); PostgreSQL instead aborts the
    transaction, so the writer puts a savepoint around every statement that may fail."""

    name: str  # "sqlite" or "postgresql", as /health reports it
    where: str  # the location, for messages (`LogLocation.where`: no password)
    Error: type[Exception]
    Unavailable: type[Exception]
    atomic_statements: bool

    def begin(self, timeout_s: float) -> None:
        """Start a write transaction, waiting at most `timeout_s` for it (another writer's lock)."""

    def execute(self, statement: str) -> None:
        """Run a statement without arguments (SAVEPOINT, RELEASE, COMMIT...)."""

    def execute_many(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one of the statements above (`?` placeholders) once per row, inside the transaction."""

    def insert(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert `rows` with `statement` (`INSERT` or `INSERT_SHADOW`) in as few statements as allowed."""

    def scalar(self, statement: str, args: tuple[Any, ...]) -> Any:
        """The first column of the first row of a query inside the transaction."""

    def rollback(self) -> None:
        """Undo the open transaction, if any; never raises."""

    def close(self) -> None: ...


# the positions of the values of no fixed type (a prediction or label: a number, a class name, a boolean) in
# the arguments of each statement: SQLite stores them as they come; PostgreSQL stores them as jsonb
DYNAMIC = {INSERT: (5,), INSERT_SHADOW: (3,), SET_LABEL: (0,)}
ROWS_PER_STATEMENT = 1000  # 8,000 variables: SQLite allows 32,766, PostgreSQL 65,535


def chunks(rows: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """`rows` in pieces that one multi-row INSERT takes."""
    return [rows[start : start + ROWS_PER_STATEMENT] for start in range(0, len(rows), ROWS_PER_STATEMENT)]
