"""The prediction log in PostgreSQL (`serve.log_url`): for several server workers, or replicas on several
machines, committing to one database. The writer's backend and the reads; psycopg 3.

The tables are SQLite's (see `base`), with the values of no fixed type (predictions, labels) as `jsonb`, so
that a number, a class name and a boolean read back as they were written, as SQLite's dynamic typing does.
Durability is PostgreSQL's own: a COMMIT returns once its WAL record is flushed (`synchronous_commit` on).
Each connection sets `lock_timeout` and `statement_timeout` to the log's timeout, so no write waits longer.

Round trips set the commit's time, not PostgreSQL's work: the statements without arguments (BEGIN, SAVEPOINT,
RELEASE, COMMIT) are held back and sent together, ahead of the next statement that has arguments or as the
commit itself. A group commit is then three round trips (BEGIN and SAVEPOINT; the INSERT; RELEASE and COMMIT)
instead of five; an error in a held-back statement surfaces at that send, inside the same transaction.
The schema is created when missing, under an advisory lock: workers starting at once do not race.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from evergreen.errors import EvergreenError, LogUnavailable
from evergreen.prediction_log.base import DYNAMIC, chunks, insert_values
from evergreen.workspace import LogLocation

__all__ = ["PostgresBackend", "fetch"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS predictions (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        request_id TEXT NOT NULL,
        row INTEGER NOT NULL,
        time TEXT NOT NULL,
        model_version TEXT NOT NULL,
        features TEXT NOT NULL,
        prediction JSONB,
        probabilities TEXT,
        label JSONB,
        label_time TEXT,
        out_of_range TEXT,
        UNIQUE (request_id, row)
    )""",
    "CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time)",
    """CREATE TABLE IF NOT EXISTS shadow_predictions (
        request_id TEXT NOT NULL,
        row INTEGER NOT NULL,
        model_version TEXT NOT NULL,
        prediction JSONB,
        probabilities TEXT,
        PRIMARY KEY (request_id, row, model_version)
    )""",
    # the shadow gate reads one version's rows
    "CREATE INDEX IF NOT EXISTS shadow_predictions_version ON shadow_predictions (model_version)",
]
_SCHEMA_LOCK = 0x45564752  # "EVGR": the advisory lock the schema is created under
_CONNECT_TIMEOUT_S = 10  # a reader's wait for the server


@functools.lru_cache(maxsize=256)
def _sql(statement: str) -> str:
    """A statement of `base` (`?` placeholders) in psycopg's style."""
    return statement.replace("?", "%s")


def _why(exc: BaseException) -> str:
    """psycopg's message, on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _connect(url: str, timeout_s: float) -> psycopg.Connection:
    milliseconds = max(1, int(timeout_s * 1000))
    return psycopg.connect(
        url,
        autocommit=True,  # transactions are explicit (BEGIN, SAVEPOINT, COMMIT), as with SQLite
        connect_timeout=max(1, math.ceil(timeout_s)),
        options=f"-c lock_timeout={milliseconds} -c statement_timeout={milliseconds}",
    )


class PostgresBackend:
    """The writer's connection to a PostgreSQL log (see `base.Backend`); reconnects after losing it."""

    name = "postgresql"
    Error = psycopg.Error
    Unavailable = psycopg.OperationalError  # lock or statement timeout, connection lost, server shutting down
    atomic_statements = False  # an error aborts the whole transaction: the writer adds savepoints

    def __init__(self, location: LogLocation, timeout_s: float):
        self.url, self.where, self.timeout_s = location.secret_url(), location.where, timeout_s
        self._held: list[str] = []  # statements without arguments not sent yet
        try:
            self.conn = _connect(self.url, timeout_s)
            self._create_schema()
        except psycopg.Error as exc:
            raise LogUnavailable(f"{self.where}: cannot open the prediction log: {_why(exc)}") from None

    def _create_schema(self) -> None:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                self.conn.execute(statement)

    def begin(self, timeout_s: float) -> None:
        if self.conn.closed:  # lost (the server restarted, the network dropped): this commit tries afresh
            self.conn = _connect(self.url, timeout_s)
        self._held = ["BEGIN"]

    def execute(self, statement: str) -> None:
        self._held.append(statement)
        if statement == "COMMIT":
            self._send_held()

    def _send_held(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        query = "; ".join(held)  # no arguments: one simple query, several statements
        try:
            self.conn.execute(query)
        except psycopg.OperationalError:
            if held[0] != "BEGIN" or not self.conn.closed:
                raise
            # the connection was lost while idle (a server restart, an idle timeout, a proxy): nothing of this
            # transaction reached the server, so it starts again on a new connection, and no request fails
            self.conn = _connect(self.url, self.timeout_s)
            self.conn.execute(query)

    def execute_many(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        self._send_held()
        with self.conn.cursor() as cursor:
            cursor.executemany(_sql(statement), [_adapt(row, DYNAMIC.get(statement, ())) for row in rows])

    def insert(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        self._send_held()
        dynamic = DYNAMIC.get(statement, ())
        for chunk in chunks(rows):
            values = [v for row in chunk for v in _adapt(row, dynamic)]
            self.conn.execute(_sql(insert_values(statement, len(chunk))), values)

    def scalar(self, statement: str, args: tuple[Any, ...]) -> Any:
        self._send_held()
        row = self.conn.execute(_sql(statement), args).fetchone()
        return None if row is None else row[0]

    def rollback(self) -> None:
        self._held = []  # a BEGIN never sent leaves nothing to undo
        with contextlib.suppress(Exception):
            if not self.conn.closed and self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


def _adapt(row: tuple[Any, ...], dynamic: tuple[int, ...]) -> tuple[Any, ...]:
    if not dynamic:
        return row
    return tuple(Jsonb(v) if i in dynamic and v is not None else v for i, v in enumerate(row))


# ----------------------------------------------------------------------------------------------- reading
def fetch(location: LogLocation, query: str, args: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of `query` on the log at `location`; none when its tables do not exist yet (nothing served)."""
    try:  # no statement timeout: a window of a million rows may take a while
        url = location.secret_url()
        with psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
            return conn.execute(_sql(query), args).fetchall()
    except psycopg.errors.UndefinedTable:
        return []
    except psycopg.Error as exc:
        raise EvergreenError(f"{location.where}: cannot read the prediction log: {_why(exc)}") from None
