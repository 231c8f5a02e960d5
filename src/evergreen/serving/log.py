"""The durable prediction log: every served prediction, read by monitoring, labelled later by feedback.

One SQLite file in WAL mode (`serve.log_path`), one row per scored record:

    seq            INTEGER PRIMARY KEY   insertion order
    request_id     TEXT                  one id per /predict call; (request_id, row) is unique
    row            INTEGER               position of the record in its request, from 0
    time           TEXT                  when it was scored, ISO-8601 UTC with microseconds ("...Z")
    model_version  TEXT                  the registry version that scored it
    features       TEXT                  the record as validated, JSON (features, plus id/timestamp if sent)
    prediction     REAL or TEXT          the value (regression) or the predicted class (classification)
    probabilities  TEXT                  class probabilities, JSON (classification only)
    label          (target's type)       ground truth, attached later by POST /feedback
    label_time     TEXT                  when the label arrived

Durability: `synchronous=FULL`, and a request's rows are committed before its response is sent, so every
acknowledged prediction survives `kill -9` (and a power cut). Writes from concurrent requests go through one
writer thread that commits them together (group commit: one fsync for every request waiting at that moment),
each request in its own savepoint so one failing request cannot fail the others. Other processes (monitoring,
a second server) can read and write the same file at the same time; SQLite's locks and a busy timeout
serialise them.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import polars as pl

from evergreen.config import DataConfig
from evergreen.data.schema import polars_type
from evergreen.errors import EvergreenError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    time TEXT NOT NULL,
    model_version TEXT NOT NULL,
    features TEXT NOT NULL,
    prediction,
    probabilities TEXT,
    label,
    label_time TEXT,
    UNIQUE (request_id, row)
);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
"""
_INSERT = (
    "INSERT INTO predictions (request_id, row, time, model_version, features, prediction, probabilities) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_MAX_GROUP = 512  # requests per commit at most


class UnknownRequest(EvergreenError):
    """Feedback for a request id that the log does not hold."""


class LabelCountMismatch(EvergreenError):
    """Feedback whose number of labels differs from the number of records the request scored."""


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # ISO-8601 UTC with microseconds: sorts as text


def utc_now() -> str:
    """The log's time format: ISO-8601 UTC, microseconds, sortable as text."""
    return dt.datetime.now(dt.UTC).strftime(TIME_FORMAT)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # autocommit off by hand (isolation_level=None): transactions and savepoints are explicit below
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def log_rows(
    request_id: str,
    time: str,
    version: str,
    records: list[dict[str, Any]],
    predictions: list[Any],
    probabilities: list[list[float]] | None = None,
) -> list[tuple[Any, ...]]:
    """The log rows of one request (one per record), ready for `PredictionLog.write`."""
    return [
        (
            request_id,
            i,
            time,
            version,
            json.dumps(record, default=str, separators=(",", ":")),
            prediction,
            None if probabilities is None else json.dumps(probabilities[i]),
        )
        for i, (record, prediction) in enumerate(zip(records, predictions, strict=True))
    ]


_Operation = Callable[[sqlite3.Connection], Any]


class PredictionLog:
    """The writer side of the log: `write` returns once the rows are durable."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._conn = _connect(self.path)
        self._conn.executescript(_SCHEMA)
        self._queue: queue.Queue[tuple[_Operation, Future] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------------------------------- writing
    def submit(self, operation: _Operation) -> Future:
        """Queue an operation on the connection; its future resolves after the commit that includes it."""
        future: Future = Future()
        self._queue.put((operation, future))
        return future

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert the rows of one request (see `log_rows`) and wait until they are committed."""

        def insert(conn: sqlite3.Connection) -> None:
            # close the cursor here: one freed later by the waiting thread would reset a statement this
            # thread may be running (sqlite3 "bad parameter or other API misuse")
            conn.executemany(_INSERT, rows).close()

        self.submit(insert).result()

    def attach_labels(self, request_id: str, labels: list[Any]) -> int:
        """Label the records of an earlier request, in their order (None leaves a row unlabelled).

        Returns how many rows got a label. A label sent again replaces the earlier one.
        """

        def label(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("SELECT count(*) FROM predictions WHERE request_id = ?", (request_id,))
            (count,) = cursor.fetchone()
            cursor.close()
            if count == 0:
                raise UnknownRequest(f"no prediction with request id {request_id!r} in the log")
            if count != len(labels):
                raise LabelCountMismatch(
                    f"request {request_id!r} scored {count} record(s) but {len(labels)} label(s) were sent"
                )
            now = utc_now()
            updates = [(value, now, request_id, i) for i, value in enumerate(labels) if value is not None]
            conn.executemany(
                "UPDATE predictions SET label = ?, label_time = ? WHERE request_id = ? AND row = ?", updates
            ).close()
            return len(updates)

        return self.submit(label).result()

    def close(self) -> None:
        """Finish what is queued, then close the connection."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        self._conn.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            group = [self._queue.get()]
            while len(group) < _MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if None in group:
                stop = True
            self._commit([item for item in group if item is not None])

    def _commit(self, group: list[tuple[_Operation, Future]]) -> None:
        if not group:
            return
        done: list[tuple[Future, Any]] = []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for operation, future in group:
                self._conn.execute("SAVEPOINT op")
                try:
                    result = operation(self._conn)
                except Exception as exc:  # this request fails; the others in the group still commit
                    self._conn.execute("ROLLBACK TO op")
                    self._conn.execute("RELEASE op")
                    future.set_exception(exc)
                else:
                    self._conn.execute("RELEASE op")
                    done.append((future, result))
            self._conn.execute("COMMIT")
        except Exception as exc:  # the commit failed (disk full, I/O error): nobody is acknowledged
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            for future, _ in done:
                future.set_exception(exc)
            return
        for future, result in done:
            future.set_result(result)


# ----------------------------------------------------------------------------------------------- reading
def _feature_dtypes(data: DataConfig) -> dict[str, pl.DataType]:
    from evergreen.serving.schema import request_columns

    features, annotations = request_columns(data)
    return {c.name: polars_type(c) for c in [*features, *annotations]}


_COLUMNS = ["request_id", "row", "time", "model_version", "features", "prediction", "probabilities"]
_COLUMNS += ["label", "label_time"]


def _query(last_rows: int | None, since: dt.datetime | str | None) -> tuple[str, list[Any]]:
    where, args = "", []
    if since is not None:
        if isinstance(since, dt.datetime):
            since = (since if since.tzinfo else since.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
            since = since.strftime(TIME_FORMAT)
        where, args = " WHERE time >= ?", [since]
    newest = ""
    if last_rows is not None:
        newest, args = " ORDER BY seq DESC LIMIT ?", [*args, int(last_rows)]
    inner = f"SELECT seq, {', '.join(_COLUMNS)} FROM predictions{where}{newest}"
    return f"SELECT {', '.join(_COLUMNS)} FROM ({inner}) ORDER BY seq", args


def _utc(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC")


def read_log(
    path: Path | str,
    last_rows: int | None = None,
    since: dt.datetime | str | None = None,
    data: DataConfig | None = None,
) -> pl.DataFrame:
    """The log as a frame with one column per feature (typed as declared when `data` is given).

    Columns: request_id, row, time (UTC), model_version, the features (and id/timestamp columns), prediction,
    probabilities, label, label_time. `last_rows` keeps the newest rows, `since` the rows scored at or after
    a time (a naive datetime is taken as UTC). A log that does not exist yet is an empty frame.
    """
    path = Path(path)
    rows: list[tuple[Any, ...]] = []
    if path.exists():
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            rows = conn.execute(*_query(last_rows, since)).fetchall()
        except sqlite3.OperationalError as exc:
            raise EvergreenError(f"{path}: cannot read the prediction log: {exc}") from None
        finally:
            conn.close()
    frame = pl.DataFrame(rows, schema=_COLUMNS, orient="row", infer_schema_length=None)
    text = frame["features"].cast(pl.String)
    if data is not None:
        dtypes = _feature_dtypes(data)
        temporal = {n: t for n, t in dtypes.items() if t in (pl.Date(), pl.Datetime("us"))}
        as_text = {n: pl.String() if n in temporal else t for n, t in dtypes.items()}
        features = text.str.json_decode(pl.Struct(as_text)).struct.unnest()
        features = features.with_columns(
            pl.col(n).str.to_date() if t == pl.Date() else pl.col(n).str.to_datetime(time_unit="us")
            for n, t in temporal.items()
        )
    elif frame.height:
        features = text.str.json_decode(infer_schema_length=None).struct.unnest()
    else:
        features = pl.DataFrame()
    numeric = data is not None and data.task == "regression"
    outcome = [pl.col(n).cast(pl.Float64) if numeric else pl.col(n) for n in ("prediction", "label")]
    head = frame.select(
        pl.col("request_id").cast(pl.String),
        pl.col("row").cast(pl.Int64),
        _utc("time"),
        pl.col("model_version").cast(pl.String),
    )
    tail = frame.select(outcome[0], pl.col("probabilities").cast(pl.String), outcome[1], _utc("label_time"))
    return pl.concat([head, features, tail], how="horizontal")
