"""The prediction log in one SQLite file in WAL mode (`serve.log_path`): the writer's backend and the reads.

Durability: `synchronous=FULL`, so a commit survives `kill -9` and a power cut. Other processes (monitoring,
the other server workers of `serve.workers`) read and write the same file at the same time: SQLite's write lock
serialises the writers, and a writer that finds it taken tries again every fraction of a millisecond until its
timeout (`begin`).
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from evergreen.errors import EvergreenError
from evergreen.prediction_log.base import LogColumns, chunks, insert_values

__all__ = ["SQLiteBackend", "fetch", "table_columns"]

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
CREATE TABLE IF NOT EXISTS shadow_predictions (
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    prediction,
    probabilities TEXT,
    PRIMARY KEY (request_id, row, model_version)
);
CREATE INDEX IF NOT EXISTS shadow_predictions_version ON shadow_predictions (model_version);
"""
_FIRST_PAUSE_S, _LAST_PAUSE_S = 0.0001, 0.002  # between tries of a write lock another process holds


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # autocommit off by hand (isolation_level=None): transactions and savepoints are explicit
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


class SQLiteBackend:
    """The writer's connection to a SQLite log (see `base.Backend`)."""

    name = "sqlite"
    Error = sqlite3.Error
    Unavailable = sqlite3.OperationalError  # locked, disk full, I/O error
    atomic_statements = True

    def __init__(self, path: Path, timeout_s: float):
        self.where = str(path)
        self.conn = _connect(path, timeout_s)
        # the writer's only wait for a lock is `begin`'s (inside a write transaction WAL mode waits for none)
        self.conn.execute("PRAGMA busy_timeout=0")

    def begin(self, timeout_s: float) -> None:
        """BEGIN IMMEDIATE, tried again every fraction of a millisecond until `timeout_s` has passed.

        SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms... between tries: with two server processes
        taking turns on the write lock every millisecond, its sleeps, not the other writer, would set the p99.
        Meanwhile more requests queue up, and the next commit takes them all."""
        deadline = time.monotonic() + timeout_s
        pause = _FIRST_PAUSE_S
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.5))  # jittered: two writers do not retry in lockstep
            pause = min(2 * pause, _LAST_PAUSE_S)

    # close every cursor here: one freed later by another thread would reset a statement this thread may be
    # running (sqlite3 "bad parameter or other API misuse")
    def execute(self, statement: str) -> None:
        self.conn.execute(statement).close()

    def execute_many(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        self.conn.executemany(statement, rows).close()

    def insert(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        # one statement per thousand rows, not one per row: the sqlite3 module gives the GIL back around every
        # statement step, and getting it back can take the switch interval (5 ms) while the event loop computes
        for chunk in chunks(rows):
            self.conn.execute(insert_values(statement, len(chunk)), [v for row in chunk for v in row]).close()

    def scalar(self, statement: str, args: tuple[Any, ...]) -> Any:
        cursor = self.conn.execute(statement, args)
        try:
            return cursor.fetchone()[0]
        finally:
            cursor.close()

    def rollback(self) -> None:
        with contextlib.suppress(Exception):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


# ----------------------------------------------------------------------------------------------- reading
def _read(path: Path, query: str, args: list[Any]) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()


def fetch(path: Path, query: str, args: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of `query` on the log at `path`; none when the log, or the table read, does not exist yet."""
    if not path.exists():
        return []
    try:
        return _read(path, query, args)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # e.g. a log written before shadow models existed
            return []
        raise EvergreenError(f"{path}: cannot read the prediction log: {exc}") from None


def table_columns(path: Path) -> set[str]:
    """The columns of the log's predictions table (a log from an earlier version may lack some)."""
    if not path.exists():
        return set()
    return {row[1] for row in fetch(path, "PRAGMA table_info(predictions)", [])}
