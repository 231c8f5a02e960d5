"""The durable prediction log: every served prediction, read by monitoring, labelled later by feedback.

One SQLite file in WAL mode (`serve.log_path`, `prediction_log.sqlite`), or one PostgreSQL database
(`serve.log_url`, `prediction_log.postgres`) for replicas on several machines. One row per scored record:

    seq            integer, primary key  insertion order
    request_id     text                  one id per /predict call; (request_id, row) is unique
    row            integer               position of the record in its request, from 0
    time           text                  when it was scored, ISO-8601 UTC with microseconds ("...Z")
    model_version  text                  the registry version that scored it
    features       text                  the record as validated, JSON (features, plus id/timestamp if sent)
    prediction     (any)                 the value (regression) or the predicted class (classification)
    probabilities  text                  class probabilities, JSON (classification only)
    out_of_range   text                  features outside their declared range or set, JSON list (NULL: none)
    label          (any)                 ground truth, attached later by POST /feedback
    label_time     text                  when the label arrived

and, in `shadow_predictions`, what a shadow challenger answered for the same records (see `base`).

Durability: a request's rows (and its shadow rows) are committed in one transaction before its response is
sent, so every acknowledged prediction survives `kill -9` (and a power cut). Writes from concurrent requests go
through one writer thread that commits them together (group commit: one fsync for every request waiting at that
moment, their rows inserted in a few statements; should one request fail, e.g. a duplicate id, each is retried
alone in its own savepoint, so it cannot fail the others). The service awaits its commit (`write_async`) on the
event loop; `write` blocks a thread for callers without one. The writer is the same for both backends; a
backend (`base.Backend`) is only a connection: begin, insert, savepoints, commit.

No writer waits for ever: a write that cannot commit within the log's timeout (another process holds a lock,
the disk is full, the database is down) raises `LogUnavailable`, and nothing of it is acknowledged; the next
commit is tried afresh (reconnecting if need be), so the log recovers by itself. Every queued operation is
resolved, whatever happens to the writer thread, and nothing can be queued once the log is closing.

The column names live in `base.LogColumns`: monitoring and feedback read them from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from evergreen.errors import LabelCountMismatch, LogUnavailable, UnknownRequest
from evergreen.prediction_log.base import (
    COUNT_REQUEST,
    INSERT,
    INSERT_SHADOW,
    ROWS_PER_STATEMENT,
    SET_LABEL,
    Backend,
    utc_now,
)
from evergreen.workspace import LogLocation

if TYPE_CHECKING:
    from evergreen.privacy import Redactor

__all__ = ["PredictionLog", "log_rows", "open_backend"]

logger = logging.getLogger("evergreen.serve")
_MAX_GROUP = 512  # requests per commit at most


def log_rows(
    request_id: str,
    time: str,
    version: str,
    records: list[dict[str, Any]],
    predictions: list[Any],
    probabilities: list[list[float]] | None = None,
    out_of_range: list[list[str]] | None = None,
    redactor: Redactor | None = None,
) -> list[tuple[Any, ...]]:
    """The log rows of one request (one per record), ready for `PredictionLog.write`.

    `redactor`: the project's personal columns (`privacy.Redactor`), hashed or left out of what is stored."""
    if redactor:
        records = [redactor.record(record) for record in records]
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


def open_backend(location: LogLocation, timeout_s: float) -> Backend:
    """The writer's connection to the log at `location`, in its backend.

    Raises `LogUnavailable` naming the location (never its password) when it cannot be opened."""
    if location.kind == "postgresql":
        from evergreen.prediction_log.postgres import PostgresBackend  # psycopg only for a PostgreSQL log

        return PostgresBackend(location, timeout_s)
    from evergreen.prediction_log.sqlite import SQLiteBackend

    assert location.path is not None  # a SQLite location always has its path
    try:
        return SQLiteBackend(location.path, timeout_s)
    except Exception as exc:  # sqlite3.Error, or a folder that cannot be made
        raise LogUnavailable(f"{location.where}: cannot open the prediction log: {exc}") from None


def _noop(_: Backend) -> None:
    return None


class _Insert:
    """The operation inserting one request's rows, and its shadow's; the writer inserts a group's together
    (`PredictionLog._insert_together`)."""

    __slots__ = ("rows", "shadow_rows")

    def __init__(self, rows: list[tuple[Any, ...]], shadow_rows: list[tuple[Any, ...]] | None = None):
        self.rows = rows
        self.shadow_rows = shadow_rows or []

    def __call__(self, backend: Backend) -> None:
        backend.insert(INSERT, self.rows)
        if self.shadow_rows:
            backend.insert(INSERT_SHADOW, self.shadow_rows)


class _Label:
    """The operation labelling the records of an earlier request, in their order; how many got a label."""

    __slots__ = ("labels", "request_id")

    def __init__(self, request_id: str, labels: list[Any]):
        self.request_id, self.labels = request_id, labels

    def __call__(self, backend: Backend) -> int:
        count = backend.scalar(COUNT_REQUEST, (self.request_id,))
        if count == 0:
            raise UnknownRequest(f"no prediction with request id {self.request_id!r} in the log")
        if count != len(self.labels):
            raise LabelCountMismatch(
                f"request {self.request_id!r} scored {count} record(s) but {len(self.labels)} label(s) were sent"
            )
        now = utc_now()
        updates = [(value, now, self.request_id, i) for i, value in enumerate(self.labels) if value is not None]
        backend.execute_many(SET_LABEL, updates)
        return len(updates)


_Operation = Callable[[Backend], Any]


class PredictionLog:
    """The writer side of the log: `write` returns once the rows are durable, or raises `LogUnavailable`
    within about `timeout_s` (how long a commit may wait for a lock, and a caller for its commit).

    `location`: where the log lives (`Workspace.prediction_log_location`). Opening it raises `LogUnavailable`
    when it cannot be opened (a database that does not answer, a folder that cannot be made).
    """

    def __init__(
        self, location: LogLocation, timeout_s: float = 30.0, on_commit: Callable[[float, int], None] | None = None
    ):
        self.location = location
        self.timeout_s = timeout_s
        self.on_commit = on_commit  # told (seconds, operations) after each commit; the service's metrics
        self.backend = open_backend(self.location, timeout_s)
        self.where = self.backend.where  # for messages: the path, or the URL without its password
        self._queue: queue.Queue[tuple[_Operation, Future] | None] = queue.Queue()
        self._lock = threading.Lock()  # `submit` and `close` under it: nothing is queued behind the stop mark
        self._open = True
        self._failure: str | None = None  # why the last commit failed; None once one succeeds again
        self._writer = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._writer.start()

    @property
    def kind(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.location.kind

    # ------------------------------------------------------------------------------------------- writing
    def submit(self, operation: _Operation) -> Future:
        """Queue an operation on the backend; its future resolves after the commit that includes it.

        Cancel the future before it runs and the operation is skipped. Raises `LogUnavailable` once closed."""
        future: Future = Future()
        with self._lock:
            if not self._open:
                raise LogUnavailable(f"{self.where}: the prediction log is closed")
            self._queue.put((operation, future))
        return future

    def _refused(self, timeout_s: float) -> LogUnavailable:
        return LogUnavailable(
            f"{self.where}: the prediction log took no write within {timeout_s:g} s "
            "(another process may hold a lock on it)"
        )

    def _too_slow(self, timeout_s: float) -> LogUnavailable:
        return LogUnavailable(f"{self.where}: a commit to the prediction log took over {timeout_s:g} s")

    def _wait(self, future: Future, timeout_s: float) -> Any:
        try:
            return future.result(timeout_s)
        except TimeoutError:
            if future.cancel():  # still queued: it will never run, so the refusal is exact
                raise self._refused(timeout_s) from None
        try:  # running: its transaction is open and its commit follows
            return future.result(timeout_s)
        except TimeoutError:
            raise self._too_slow(timeout_s) from None

    async def _wait_async(self, future: Future, timeout_s: float) -> Any:
        """`_wait` for the event loop: the same two deadlines, and no thread blocked while the commit runs."""
        try:
            async with asyncio.timeout(timeout_s):
                # a timeout cancels the wrapper, and the wrapper cancels `future` if it is still queued
                return await asyncio.wrap_future(future)
        except TimeoutError:
            if future.cancelled():  # it will never run, so the refusal is exact
                raise self._refused(timeout_s) from None
        try:  # running: its transaction is open and its commit follows
            async with asyncio.timeout(timeout_s):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            raise self._too_slow(timeout_s) from None

    def write(self, rows: list[tuple[Any, ...]], shadow_rows: list[tuple[Any, ...]] | None = None) -> None:
        """Insert the rows of one request (see `log_rows`) and wait until they are committed.

        `shadow_rows`: what a shadow challenger answered for the same records, tuples `(request_id, row,
        model_version, prediction, probabilities JSON or None)`, committed in the same transaction."""
        self._wait(self.submit(_Insert(rows, shadow_rows)), self.timeout_s)

    async def write_async(self, rows: list[tuple[Any, ...]], shadow_rows: list[tuple[Any, ...]] | None = None) -> None:
        """`write` for the event loop: the caller awaits its commit instead of blocking a thread on it."""
        await self._wait_async(self.submit(_Insert(rows, shadow_rows)), self.timeout_s)

    def attach_labels(self, request_id: str, labels: list[Any]) -> int:
        """Label the records of an earlier request, in their order (None leaves a row unlabelled).

        Returns how many rows got a label. A label sent again replaces the earlier one.
        """
        return self._wait(self.submit(_Label(request_id, labels)), self.timeout_s)

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
        self.backend.close()

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
            self.backend.rollback()
            while True:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopped = LogUnavailable(f"{self.where}: the prediction log writer has stopped")
            _fail([item for item in group if item is not None], stopped)

    def _insert_together(self, inserts: list[tuple[_Insert, Future]]) -> bool:
        """The rows of consecutive requests in as few statements as the backend allows; False (and nothing
        written) when one fails, so that each request is then tried alone.

        Why: per-statement costs (a GIL hand-back around every SQLite step, a round trip to PostgreSQL) made a
        group's commit last tens of milliseconds under load when each request had its own statements."""
        backend = self.backend
        rows = [row for insert, _ in inserts for row in insert.rows]
        shadow = [row for insert, _ in inserts for row in insert.shadow_rows]
        # one statement undoes itself when it fails (SQLite); several, or a PostgreSQL one, need a savepoint
        guarded = not backend.atomic_statements or len(rows) > ROWS_PER_STATEMENT or bool(shadow)
        if guarded:
            backend.execute("SAVEPOINT together")
        try:
            backend.insert(INSERT, rows)
            if shadow:
                backend.insert(INSERT_SHADOW, shadow)
        except backend.Error as exc:  # e.g. a request id already in the log: find which, one request at a time
            if isinstance(exc, backend.Unavailable):  # a lock timeout, a lost connection: every request's fate
                raise
            if guarded:
                backend.execute("ROLLBACK TO together")
                backend.execute("RELEASE together")
            return False
        if guarded:
            backend.execute("RELEASE together")
        return True

    def _commit(self, group: list[tuple[_Operation, Future]]) -> None:
        if not group:
            return
        backend = self.backend
        done: list[tuple[Future, Any]] = []
        # a request that failed alone is told so once the others are committed: should the commit fail (the
        # connection lost under it, say), its error was a symptom, and it gets `LogUnavailable` like them
        failed: list[tuple[Future, Exception]] = []
        started = time.perf_counter()
        try:
            backend.begin(self.timeout_s)  # waits up to the timeout for another writer's lock
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
                    backend.execute("SAVEPOINT op")
                    try:
                        result = operation(backend)
                    except Exception as exc:  # this request fails; the others in the group still commit
                        if isinstance(exc, backend.Unavailable):  # not this request's fault: the group's
                            raise
                        backend.execute("ROLLBACK TO op")
                        backend.execute("RELEASE op")
                        failed.append((future, exc))
                    else:
                        backend.execute("RELEASE op")
                        done.append((future, result))
                start = max(end, start + 1)
            backend.execute("COMMIT")
        except Exception as exc:  # locked, disk full, database gone: nobody in the group is acknowledged
            backend.rollback()
            failure = f"{self.where}: the prediction log cannot commit: {' '.join(str(exc).split())}"
            if self._failure is None:
                logger.error("%s; requests get 503 until it can", failure)
            self._failure = failure
            _fail(group, LogUnavailable(failure))
            return
        seconds = time.perf_counter() - started
        if self._failure is not None:
            logger.warning("%s: the prediction log commits again", self.where)
            self._failure = None
        for future, result in done:
            future.set_result(result)
        for future, exc in failed:
            future.set_exception(exc)
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
