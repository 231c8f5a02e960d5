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
    out_of_range   TEXT                  features outside their declared range or set, JSON list (NULL: none)
    label          (target's type)       ground truth, attached later by POST /feedback
    label_time     TEXT                  when the label arrived

Durability: `synchronous=FULL`, and a request's rows are committed before its response is sent, so every
acknowledged prediction survives `kill -9` (and a power cut). Writes from concurrent requests go through one
writer thread that commits them together (group commit: one fsync for every request waiting at that moment,
their rows inserted in one statement; should one request fail, e.g. a duplicate id, each is retried alone in
its own savepoint, so it cannot fail the others). The service awaits its commit (`write_async`) on the event
loop; `write` blocks a thread for callers without one. Other processes (monitoring, the other server workers
of `serve.workers`) read and write the same file at the same time: SQLite's write lock serialises the writers,
and a writer that finds it taken tries again every fraction of a millisecond until its timeout.

No writer waits for ever: a write that cannot commit within the log's timeout (another process holds a lock,
the disk is full) raises `LogUnavailable`, and nothing of it is acknowledged; the next commit is tried afresh,
so the log recovers by itself when the lock goes. Every queued operation is resolved, whatever happens to the
writer thread, and nothing can be queued once the log is closing.

The column names live in `LogColumns`: monitoring and feedback read them from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import polars as pl

from evergreen.config import DataConfig
from evergreen.data.schema import polars_type
from evergreen.errors import EvergreenError

__all__ = [
    "TIME_FORMAT",
    "LabelCountMismatch",
    "LogColumns",
    "LogUnavailable",
    "PredictionLog",
    "UnknownRequest",
    "log_rows",
    "read_log",
    "utc_now",
]

logger = logging.getLogger("evergreen.serve")


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
    # what `read_log` puts around the record's fields: never a feature, never an unexpected column
    METADATA = frozenset(
        {SEQ, REQUEST_ID, ROW, TIME, MODEL_VERSION, PREDICTION, PROBABILITIES, OUT_OF_RANGE, LABEL, LABEL_TIME}
    )


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
    out_of_range TEXT,
    UNIQUE (request_id, row)
);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
"""
_INSERT = (
    "INSERT INTO predictions "
    "(request_id, row, time, model_version, features, prediction, probabilities, out_of_range) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_MAX_GROUP = 512  # requests per commit at most
_ROWS_PER_STATEMENT = 1000  # 8,000 variables: SQLite allows 32,766
_FIRST_PAUSE_S, _LAST_PAUSE_S = 0.0001, 0.002  # between tries of a write lock another process holds


class UnknownRequest(EvergreenError):
    """Feedback for a request id that the log does not hold."""


class LabelCountMismatch(EvergreenError):
    """Feedback whose number of labels differs from the number of records the request scored."""


class LogUnavailable(EvergreenError):
    """The log did not take a write in time (locked by another process, disk full, closed): nothing of that
    write is acknowledged."""


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # ISO-8601 UTC with microseconds: sorts as text


def utc_now() -> str:
    """The log's time format: ISO-8601 UTC, microseconds, sortable as text."""
    # isoformat: a third of strftime's cost, the same text (always six digits of microseconds)
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # autocommit off by hand (isolation_level=None): transactions and savepoints are explicit below
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    conn.executescript(_SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    if LogColumns.OUT_OF_RANGE not in columns:  # a log written before the column existed
        with contextlib.suppress(sqlite3.OperationalError):  # another process may have just added it
            conn.execute(f"ALTER TABLE predictions ADD COLUMN {LogColumns.OUT_OF_RANGE} TEXT")
    return conn


def log_rows(
    request_id: str,
    time: str,
    version: str,
    records: list[dict[str, Any]],
    predictions: list[Any],
    probabilities: list[list[float]] | None = None,
    out_of_range: list[list[str]] | None = None,
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
            json.dumps(out_of_range[i]) if out_of_range and out_of_range[i] else None,
        )
        for i, (record, prediction) in enumerate(zip(records, predictions, strict=True))
    ]


def _noop(_: sqlite3.Connection) -> None:
    return None


class _Insert:
    """The operation inserting one request's rows; the writer inserts a group's together (`_insert_together`)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[Any, ...]]):
        self.rows = rows

    def __call__(self, conn: sqlite3.Connection) -> None:
        # close the cursor here: one freed later by the waiting thread would reset a statement this
        # thread may be running (sqlite3 "bad parameter or other API misuse")
        conn.executemany(_INSERT, self.rows).close()


@functools.lru_cache(maxsize=64)
def _insert_values(rows: int) -> str:
    """One INSERT of `rows` rows."""
    return _INSERT.partition(" VALUES ")[0] + " VALUES " + ", ".join([f"({', '.join('?' * 8)})"] * rows)


_Operation = Callable[[sqlite3.Connection], Any]


class PredictionLog:
    """The writer side of the log: `write` returns once the rows are durable, or raises `LogUnavailable`
    within about `timeout_s` (the SQLite busy timeout, and how long a caller waits for its commit)."""

    def __init__(
        self, path: Path | str, timeout_s: float = 30.0, on_commit: Callable[[float, int], None] | None = None
    ):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.on_commit = on_commit  # told (seconds, operations) after each commit; the service's metrics
        self._conn = _connect(self.path, timeout_s)
        # the writer's only wait for a lock is `_begin`'s (inside a write transaction WAL mode waits for none)
        self._conn.execute("PRAGMA busy_timeout=0")
        self._queue: queue.Queue[tuple[_Operation, Future] | None] = queue.Queue()
        self._lock = threading.Lock()  # `submit` and `close` under it: nothing is queued behind the stop mark
        self._open = True
        self._failure: str | None = None  # why the last commit failed; None once one succeeds again
        self._writer = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------------------------------- writing
    def submit(self, operation: _Operation) -> Future:
        """Queue an operation on the connection; its future resolves after the commit that includes it.

        Cancel the future before it runs and the operation is skipped. Raises `LogUnavailable` once closed."""
        future: Future = Future()
        with self._lock:
            if not self._open:
                raise LogUnavailable(f"{self.path}: the prediction log is closed")
            self._queue.put((operation, future))
        return future

    def _wait(self, future: Future, timeout_s: float) -> Any:
        try:
            return future.result(timeout_s)
        except TimeoutError:
            if future.cancel():  # still queued: it will never run, so the refusal is exact
                raise LogUnavailable(
                    f"{self.path}: the prediction log took no write within {timeout_s:g} s "
                    "(another process may hold a lock on it)"
                ) from None
        try:  # running: its transaction holds the write lock and its commit follows
            return future.result(timeout_s)
        except TimeoutError:
            raise LogUnavailable(f"{self.path}: a commit to the prediction log took over {timeout_s:g} s") from None

    async def _wait_async(self, future: Future, timeout_s: float) -> Any:
        """`_wait` for the event loop: the same two deadlines, and no thread blocked while the commit runs."""
        try:
            async with asyncio.timeout(timeout_s):
                # a timeout cancels the wrapper, and the wrapper cancels `future` if it is still queued
                return await asyncio.wrap_future(future)
        except TimeoutError:
            if future.cancelled():  # it will never run, so the refusal is exact
                raise LogUnavailable(
                    f"{self.path}: the prediction log took no write within {timeout_s:g} s "
                    "(another process may hold a lock on it)"
                ) from None
        try:  # running: its transaction holds the write lock and its commit follows
            async with asyncio.timeout(timeout_s):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            raise LogUnavailable(f"{self.path}: a commit to the prediction log took over {timeout_s:g} s") from None

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert the rows of one request (see `log_rows`) and wait until they are committed."""
        self._wait(self.submit(_Insert(rows)), self.timeout_s)

    async def write_async(self, rows: list[tuple[Any, ...]]) -> None:
        """`write` for the event loop: the caller awaits its commit instead of blocking a thread on it."""
        await self._wait_async(self.submit(_Insert(rows)), self.timeout_s)

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

        return self._wait(self.submit(label), self.timeout_s)

    def check(self, timeout_s: float) -> str | None:
        """None when a write transaction commits within `timeout_s` now; otherwise why the log is unavailable."""
        try:
            self._wait(self.submit(_noop), timeout_s)
        except Exception as exc:
            return str(exc)
        return None

    def close(self) -> None:
        """Finish what is queued, then close the connection."""
        with self._lock:
            if self._open:
                self._open = False
                self._queue.put(None)
        self._writer.join()
        self._conn.close()

    def _run(self) -> None:
        group: list[tuple[_Operation, Future] | None] = []
        try:
            stop = False
            while not stop:
                group = [self._queue.get()]
                while len(group) < _MAX_GROUP:
                    try:
                        group.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = None in group
                self._commit([item for item in group if item is not None])
                group = []
        finally:
            # whatever ends this thread, nobody may wait for ever: refuse new work, fail what is queued, and
            # give the write lock back to the other processes
            with self._lock:
                self._open = False
            with contextlib.suppress(Exception):
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            while True:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopped = LogUnavailable(f"{self.path}: the prediction log writer has stopped")
            _fail([item for item in group if item is not None], stopped)

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, tried again every fraction of a millisecond until `timeout_s` has passed.

        SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms... between tries: with two server processes
        taking turns on the write lock every millisecond, its sleeps, not the other writer, would set the p99.
        Meanwhile more requests queue up, and the next commit takes them all."""
        deadline = time.monotonic() + self.timeout_s
        pause = _FIRST_PAUSE_S
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.5))  # jittered: two writers do not retry in lockstep
            pause = min(2 * pause, _LAST_PAUSE_S)

    def _insert_together(self, inserts: list[tuple[_Insert, Future]]) -> bool:
        """The rows of consecutive requests in as few statements as the variable limit allows; False (and
        nothing written) when one fails, so that each request is then tried alone.

        Why: the sqlite3 module gives the GIL back around every statement step, and a thread wanting it back
        waits up to the switch interval (5 ms) while the event loop computes. Three statements per request
        made a group's commit last tens of milliseconds under load; a handful per group does not."""
        rows = [row for insert, _ in inserts for row in insert.rows]
        # one statement undoes itself when it fails; several need a savepoint around them
        several = len(rows) > _ROWS_PER_STATEMENT
        if several:
            self._conn.execute("SAVEPOINT together")
        try:
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start : start + _ROWS_PER_STATEMENT]
                self._conn.execute(_insert_values(len(chunk)), [value for row in chunk for value in row]).close()
        except sqlite3.Error:  # e.g. a request id already in the log: find which, one request at a time
            if several:
                self._conn.execute("ROLLBACK TO together")
                self._conn.execute("RELEASE together")
            return False
        if several:
            self._conn.execute("RELEASE together")
        return True

    def _commit(self, group: list[tuple[_Operation, Future]]) -> None:
        if not group:
            return
        done: list[tuple[Future, Any]] = []
        started = time.perf_counter()
        try:
            self._begin()  # waits up to the timeout for another writer's lock
            # a cancelled one's caller gave up waiting and answered 503: write nothing for it
            running = [(op, future) for op, future in group if future.set_running_or_notify_cancel()]
            start = 0
            while start < len(running):
                end = start
                while end < len(running) and isinstance(running[end][0], _Insert):
                    end += 1
                if end > start and self._insert_together(running[start:end]):
                    done += [(future, None) for _, future in running[start:end]]
                    start = end
                    continue
                for operation, future in running[start : max(end, start + 1)]:
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
                start = max(end, start + 1)
            self._conn.execute("COMMIT")
        except Exception as exc:  # locked, disk full, I/O error: nobody in the group is acknowledged
            with contextlib.suppress(Exception):
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            failure = f"{self.path}: the prediction log cannot commit: {exc}"
            if self._failure is None:
                logger.error("%s; requests get 503 until it can", failure)
            self._failure = failure
            _fail(group, LogUnavailable(failure))
            return
        seconds = time.perf_counter() - started
        if self._failure is not None:
            logger.warning("%s: the prediction log commits again", self.path)
            self._failure = None
        for future, result in done:
            future.set_result(result)
        if self.on_commit is not None:
            with contextlib.suppress(Exception):  # a metrics hook must never stop the writer
                self.on_commit(seconds, len(done))


def _fail(group: list[tuple[_Operation, Future]], exc: Exception) -> None:
    """Resolve every future of `group` not resolved yet with `exc` (a cancelled one stays cancelled)."""
    for _, future in group:
        if future.done():
            continue
        # a queued future is moved to running first: then its caller can no longer cancel it under our feet
        if future.running() or future.set_running_or_notify_cancel():
            future.set_exception(exc)


# ----------------------------------------------------------------------------------------------- reading
def _feature_dtypes(data: DataConfig) -> dict[str, pl.DataType]:
    from evergreen.serving.schema import request_columns

    features, annotations = request_columns(data)
    return {c.name: polars_type(c) for c in [*features, *annotations]}


C = LogColumns
_COLUMNS = [C.REQUEST_ID, C.ROW, C.TIME, C.MODEL_VERSION, C.FEATURES, C.PREDICTION, C.PROBABILITIES]
_COLUMNS += [C.OUT_OF_RANGE, C.LABEL, C.LABEL_TIME]


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

    Columns (see `LogColumns`): request_id, row, time (UTC), model_version, the features (and id/timestamp
    columns), prediction, probabilities, out_of_range (list of feature names), label, label_time. `last_rows`
    keeps the newest rows, `since` the rows scored at or after a time (a naive datetime is taken as UTC). A log
    that does not exist yet is an empty frame.
    """
    path = Path(path)
    rows: list[tuple[Any, ...]] = []
    if path.exists():
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            columns = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
            rows = conn.execute(*_query(last_rows, since, old=C.OUT_OF_RANGE not in columns)).fetchall()
        except sqlite3.OperationalError as exc:
            raise EvergreenError(f"{path}: cannot read the prediction log: {exc}") from None
        finally:
            conn.close()
    frame = pl.DataFrame(rows, schema=_COLUMNS, orient="row", infer_schema_length=None)
    text = frame[C.FEATURES].cast(pl.String)
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
