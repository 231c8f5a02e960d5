"""What the prediction log forgets: rows older than `serve.log_retention_days`, and one id's rows on request
(`evergreen forget --id`, the right to erasure). Either backend (a `LogLocation`: SQLite or PostgreSQL).

A row's label lives in the row, so deleting a prediction deletes its label; what a shadow challenger answered
for the same record (`shadow_predictions`) goes with it. Rows are deleted a few thousand at a time, each batch
its own short transaction: the service keeps committing between batches instead of waiting (and answering
503) behind one long delete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from evergreen.config import DataConfig
from evergreen.errors import EvergreenError
from evergreen.prediction_log.base import TIME_FORMAT
from evergreen.workspace import LogLocation

__all__ = ["Deleted", "apply_retention", "delete_older_than", "forget_id", "id_value"]

_BATCH = 5000  # rows per transaction: placeholders stay far under either database's limit


@dataclass(frozen=True)
class Deleted:
    """How many rows a deletion removed: predictions (with their labels) and shadow answers."""

    predictions: int = 0
    shadow: int = 0


class _Log:
    """One connection to the log for deleting: `?` statements on SQLite, `%s` on PostgreSQL."""

    def __init__(self, location: LogLocation):
        self.postgres = location.kind == "postgresql"
        self.where = location.where
        self.shadow = True  # whether the log has a shadow_predictions table
        if location.path is None:
            import psycopg  # only for a PostgreSQL log

            self.conn: Any = psycopg.connect(location.secret_url(), autocommit=True, connect_timeout=10)
        else:
            self.conn = sqlite3.connect(location.path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout=30000")

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self.postgres:
            with self.conn.transaction():
                yield
            return
        self.conn.execute("BEGIN IMMEDIATE")  # the write lock first: no reader-to-writer upgrade to fail
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def rows(self, statement: str, args: list[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(self.sql(statement), args).fetchall()

    def run(self, statement: str, args: list[Any]) -> int:
        return self.conn.execute(self.sql(statement), args).rowcount

    def tables(self) -> set[str]:
        """The log's tables present (a log written before shadow models has no shadow_predictions)."""
        if self.postgres:
            query = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        else:
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        return {name for (name,) in self.rows(query, [])} & {"predictions", "shadow_predictions"}

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def _opened(location: LogLocation) -> Iterator[_Log | None]:
    """The log, or None when it holds nothing yet (no file, no tables); a failure names the log, no password."""
    if location.path is not None and not location.path.exists():
        yield None
        return
    try:
        log = _Log(location)
    except Exception as exc:  # sqlite3.Error, psycopg.Error
        raise EvergreenError(f"{location.where}: cannot open the prediction log: {_why(exc)}") from None
    try:
        log.shadow = "shadow_predictions" in (tables := log.tables())
        yield log if "predictions" in tables else None  # no table: nothing was ever served
    except EvergreenError:
        raise
    except Exception as exc:  # locked for longer than the timeout, the database gone mid-way
        raise EvergreenError(f"{log.where}: cannot delete from the prediction log: {_why(exc)}") from None
    finally:
        log.close()


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _delete(log: _Log, where: str, args: list[Any]) -> Deleted:
    """Delete the predictions matching `where` (and their shadow answers), a batch per transaction."""
    predictions = shadow = 0
    while True:
        with log.transaction():
            found = log.rows(f"SELECT seq, request_id, row FROM predictions WHERE {where} LIMIT {_BATCH}", args)
            if not found:
                break
            seqs = [seq for seq, _, _ in found]
            marks = ", ".join("?" * len(seqs))
            if log.shadow:  # first: their predictions' rows say which shadow answers are theirs
                shadow += log.run(
                    "DELETE FROM shadow_predictions WHERE EXISTS (SELECT 1 FROM predictions p WHERE "
                    f"p.seq IN ({marks}) AND p.request_id = shadow_predictions.request_id "
                    "AND p.row = shadow_predictions.row)",
                    seqs,
                )
            predictions += log.run(f"DELETE FROM predictions WHERE seq IN ({marks})", seqs)
        if len(found) < _BATCH:
            break
    return Deleted(predictions, shadow)


def delete_older_than(location: LogLocation, days: float, now: dt.datetime | None = None) -> Deleted:
    """Delete the predictions (and labels, and shadow answers) scored more than `days` days before `now`
    (UTC; default the current time). A log that does not exist yet deletes nothing."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if now.tzinfo is not None:
        now = now.astimezone(dt.UTC).replace(tzinfo=None)
    cutoff = (now - dt.timedelta(days=days)).strftime(TIME_FORMAT)  # the log's times sort as text
    with _opened(location) as log:
        if log is None:
            return Deleted()
        return _delete(log, "time < ?", [cutoff])
    return Deleted()  # the log has no tables yet


def id_value(data: DataConfig, text: str) -> Any:
    """The id typed on the command line as the log stores it: typed as the id column is declared, and as its
    keyed hash where the column is `pii: hash`. `EvergreenError` when there is no id column, it is dropped
    from the log, or the text is not of its type."""
    column = data.id_column
    if column is None:
        raise EvergreenError("forget --id: data.columns declares no id column (role: id) to find rows by")
    if column.pii == "drop":
        raise EvergreenError(
            f"forget --id: the id column {column.name!r} is declared pii: drop, so the log holds no id to find"
        )
    try:
        value: Any = {"int": int, "float": float}.get(column.type, str)(text)
    except ValueError:
        raise EvergreenError(f"forget --id {text!r}: the id column {column.name!r} is of type {column.type}") from None
    if column.pii == "hash":
        from evergreen.privacy import Redactor

        return Redactor(data).value(column.name, value)
    return value


def forget_id(location: LogLocation, data: DataConfig, text: str) -> Deleted:
    """Delete every prediction (with its label and shadow answers) of the record whose id is `text`."""
    column = data.id_column
    value = id_value(data, text)
    with _opened(location) as log:
        if log is None:
            return Deleted()
        assert column is not None  # id_value raised otherwise
        if log.postgres:  # the stored JSON's field as text: 17 is "17", "abc" is "abc"
            where = "(features::jsonb ->> ?) = ?"
            args = [column.name, value if isinstance(value, str) else json.dumps(value)]
        else:  # SQLite's json_extract gives the value with its JSON type
            where = "json_extract(features, ?) = ?"
            args = ['$."' + column.name.replace('"', '\\"') + '"', value]
        return _delete(log, where, args)
    return Deleted()


def apply_retention(location: LogLocation, days: float | None, now: dt.datetime | None = None) -> Deleted | None:
    """`serve.log_retention_days` (`days`) applied to the log: what was deleted, or None when it keeps everything
    (the setting is null). `evergreen monitor` and the `monitor` flow call this before reading."""
    if days is None:
        return None
    return delete_older_than(location, days, now)
