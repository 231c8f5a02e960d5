"""The prediction log: durable, exactly once under concurrent writers, labelled later, read as a frame."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from evergreen.serving.log import (
    _INSERT,
    LabelCountMismatch,
    LogUnavailable,
    PredictionLog,
    UnknownRequest,
    log_rows,
    read_log,
    utc_now,
)


def _rows(request_id: str, n: int = 2, version: str = "v1", time: str | None = None) -> list[tuple]:
    records = [{"hr": i, "weather": 1, "temp": 0.5, "hum": None, "day": "2024-01-01"} for i in range(n)]
    return log_rows(request_id, time or utc_now(), version, records, [float(10 * i) for i in range(n)])


@pytest.fixture
def log(tmp_path: Path):
    log = PredictionLog(tmp_path / "log" / "predictions.db")
    yield log
    log.close()


def test_rows_read_back_with_one_typed_column_per_feature(log, tiny):
    log.write(_rows("a", 3))
    log.write(_rows("b", 1, version="v2"))
    frame = read_log(log.path, data=tiny.data)
    assert frame["request_id"].to_list() == ["a", "a", "a", "b"] and frame["row"].to_list() == [0, 1, 2, 0]
    assert frame["model_version"].to_list() == ["v1", "v1", "v1", "v2"]
    assert frame["hr"].to_list() == [0, 1, 2, 0] and frame["hum"].null_count() == 4
    assert frame["day"].to_list() == [dt.date(2024, 1, 1)] * 4 and frame["id"].null_count() == 4
    assert frame["prediction"].to_list() == [0.0, 10.0, 20.0, 0.0]
    assert str(frame["time"].dtype) == "Datetime(time_unit='us', time_zone='UTC')"
    assert frame["label"].null_count() == 4


def test_last_rows_and_since_select_the_newest_rows(log):
    log.write(_rows("old", 2, time="2026-01-01T00:00:00.000000Z"))
    log.write(_rows("new", 2, time="2026-06-01T00:00:00.000000Z"))
    assert read_log(log.path, last_rows=3)["request_id"].to_list() == ["old", "new", "new"]
    assert read_log(log.path, since=dt.datetime(2026, 3, 1))["request_id"].to_list() == ["new", "new"]
    assert read_log(log.path, since="2027-01-01").height == 0


def test_a_log_that_does_not_exist_reads_as_empty(tmp_path, tiny):
    frame = read_log(tmp_path / "none.db", data=tiny.data)
    assert frame.height == 0 and {"hr", "prediction", "label"} <= set(frame.columns)


def test_concurrent_writers_are_logged_exactly_once(log, tmp_path):
    second = PredictionLog(log.path)  # another writer on the same file, as a second server would be

    def client(writer: PredictionLog, name: str) -> None:
        for i in range(40):
            writer.write(_rows(f"{name}-{i}", 3))

    threads = [threading.Thread(target=client, args=(log if k % 2 else second, f"c{k}")) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.close()
    frame = read_log(log.path)
    assert frame.height == 8 * 40 * 3
    assert frame.select("request_id", "row").is_unique().all()
    assert frame.group_by("request_id").len()["len"].to_list() == [3] * 320


def test_a_failing_request_does_not_fail_the_others_in_its_commit(log):
    log.write(_rows("dup", 1))
    errors: list[Exception] = []

    def write(request_id: str) -> None:
        try:
            log.write(_rows(request_id, 1))
        except sqlite3.IntegrityError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(rid,)) for rid in ["ok1", "dup", "ok2", "ok3"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 1
    assert sorted(read_log(log.path)["request_id"].to_list()) == ["dup", "ok1", "ok2", "ok3"]


def test_labels_attach_to_an_earlier_request_in_record_order(log):
    log.write(_rows("r1", 3))
    assert log.attach_labels("r1", [5, None, 7.5]) == 2
    frame = read_log(log.path)
    assert frame["label"].to_list() == [5, None, 7.5]
    assert frame["label_time"].null_count() == 1
    log.attach_labels("r1", [6, 6, 6])  # a corrected label replaces the earlier one
    assert read_log(log.path)["label"].to_list() == [6, 6, 6]


def test_labels_for_an_unknown_request_or_of_the_wrong_count_are_refused(log):
    log.write(_rows("r1", 2))
    with pytest.raises(UnknownRequest, match="'nope'"):
        log.attach_labels("nope", [1])
    with pytest.raises(LabelCountMismatch, match="scored 2 record"):
        log.attach_labels("r1", [1, 2, 3])
    assert read_log(log.path)["label"].null_count() == 2


def test_classification_rows_keep_their_class_and_probabilities(log):
    records = [{"hr": 1}, {"hr": 2}]
    log.write(log_rows("c", utc_now(), "v1", records, ["no", "yes"], [[0.9, 0.1], [0.3, 0.7]]))
    frame = read_log(log.path)
    assert frame["prediction"].to_list() == ["no", "yes"]
    assert frame["probabilities"].to_list() == ["[0.9, 0.1]", "[0.3, 0.7]"]


_WRITER = textwrap.dedent(
    """
    import sys
    from evergreen.serving.log import PredictionLog, log_rows, utc_now
    log = PredictionLog(sys.argv[1])
    i = 0
    while True:
        log.write(log_rows(f"r{i}", utc_now(), "v1", [{"hr": i}], [float(i)]))
        print(f"r{i}", flush=True)  # acknowledged: the write returned
        i += 1
    """
)


def test_every_acknowledged_write_survives_kill_9(tmp_path):
    path = tmp_path / "predictions.db"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True, bufsize=1)
    acknowledged: list[str] = []
    assert writer.stdout is not None
    deadline = time.monotonic() + 30
    while len(acknowledged) < 50 and time.monotonic() < deadline:
        acknowledged.append(writer.stdout.readline().strip())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    acknowledged += [line.strip() for line in writer.stdout if line.strip()]
    logged = set(read_log(path)["request_id"].to_list())
    assert len(acknowledged) >= 50
    assert set(acknowledged) <= logged


# ------------------------------------------------------------------------------ nothing waits for ever
def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection holding the log's write lock (as another process would)."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_a_held_lock_fails_the_write_within_the_timeout_and_the_log_recovers(tmp_path, caplog):
    """Promise: a write that cannot commit raises `LogUnavailable` within about the timeout, writes nothing,
    and the next write after the lock goes commits. Before: the waiting futures were never resolved."""
    log = PredictionLog(tmp_path / "predictions.db", timeout_s=0.5)
    holder = _hold_write_lock(log.path)
    try:
        start = time.monotonic()
        with pytest.raises(LogUnavailable):
            log.write(_rows("refused", 2))
        assert time.monotonic() - start < 2.0
        assert log.check(0.5) is not None  # what /health reports
    finally:
        holder.rollback()
        holder.close()
    log.write(_rows("accepted", 1))
    assert log.check(0.5) is None
    log.close()
    assert read_log(log.path)["request_id"].to_list() == ["accepted"]
    assert "cannot commit" in caplog.text and "commits again" in caplog.text


def test_close_finishes_queued_writes_and_refuses_new_ones(tmp_path):
    """Promise: every write queued before `close` is committed and answered; one after it raises at once."""
    log = PredictionLog(tmp_path / "predictions.db")
    futures = [log.submit(lambda conn, i=i: conn.executemany(_INSERT, _rows(f"q{i}", 1)).close()) for i in range(50)]
    log.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(LogUnavailable, match="closed"):
        log.write(_rows("late", 1))
    assert read_log(log.path).height == 50


class _Fatal(BaseException):
    """An error no `except Exception` catches: it ends the writer thread."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_thread_that_dies_answers_every_waiter(tmp_path):
    """Promise: if the writer thread ends unexpectedly, every queued write fails with `LogUnavailable` and
    later ones are refused at once; no caller waits for ever. Before: they hung."""
    log = PredictionLog(tmp_path / "predictions.db")
    holder = _hold_write_lock(log.path)  # queue the work up behind the lock, then let the writer die on it

    def die(_: sqlite3.Connection) -> None:
        raise _Fatal()

    fatal = log.submit(die)
    queued = [log.submit(lambda conn: None) for _ in range(5)]
    holder.rollback()
    holder.close()
    for future in [fatal, *queued]:
        assert isinstance(future.exception(timeout=10), LogUnavailable)
    with pytest.raises(LogUnavailable):
        log.write(_rows("after", 1))
    log.close()
    other = PredictionLog(log.path, timeout_s=1)  # the dead writer's transaction did not keep the lock
    other.write(_rows("other", 1))
    other.close()
    assert read_log(log.path)["request_id"].to_list() == ["other"]


def test_a_log_written_before_the_out_of_range_column_is_read_and_extended(tmp_path):
    """A log from an earlier version (no `out_of_range` column) reads with empty flags, and gains the column."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE predictions (seq INTEGER PRIMARY KEY, request_id TEXT, row INTEGER, time TEXT, "
            "model_version TEXT, features TEXT, prediction, probabilities TEXT, label, label_time TEXT)"
        )
        conn.execute(
            "INSERT INTO predictions VALUES (1, 'old', 0, ?, 'v1', '{\"hr\": 1}', 2.0, NULL, NULL, NULL)", (utc_now(),)
        )
    assert read_log(path)["out_of_range"].to_list() == [[]]
    log = PredictionLog(path)
    log.write(log_rows("new", utc_now(), "v1", [{"hr": 30}], [1.0], out_of_range=[["hr"]]))
    log.close()
    assert read_log(path)["out_of_range"].to_list() == [[], ["hr"]]


def test_concurrent_awaited_writes_share_commits_and_each_is_logged(tmp_path):
    """Group commit groups: 64 requests awaiting their commit on one event loop take far fewer commits than
    64 (each commit is one fsync), and every one of them is in the log afterwards."""
    import asyncio

    commits: list[int] = []
    log = PredictionLog(tmp_path / "predictions.db", on_commit=lambda _, n: commits.append(n))

    async def many() -> None:
        await asyncio.gather(*(log.write_async(_rows(f"r{i}", 1)) for i in range(64)))

    try:
        asyncio.run(many())
    finally:
        log.close()
    assert sum(commits) == 64
    assert len(commits) < 16, commits
    assert read_log(log.path)["request_id"].n_unique() == 64


def test_an_awaited_write_behind_a_held_lock_is_refused_within_the_timeout_and_never_committed(tmp_path):
    import asyncio

    log = PredictionLog(tmp_path / "predictions.db", timeout_s=0.5)
    holder = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(LogUnavailable):
            asyncio.run(log.write_async(_rows("blocked", 1)))
        assert time.monotonic() - started < 2.0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    asyncio.run(log.write_async(_rows("after", 1)))  # the lock gone, the log takes writes again
    log.close()
    assert read_log(log.path)["request_id"].to_list() == ["after"]


def test_a_lock_held_briefly_by_another_writer_delays_a_write_but_does_not_fail_it(tmp_path):
    """Two server processes take turns on the write lock: a write waits for the other's commit (retrying
    within the timeout), it is not refused."""
    log = PredictionLog(tmp_path / "predictions.db", timeout_s=5.0)
    holder = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(_INSERT, _rows("other", 1)[0])
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    log.write(_rows("mine", 1))
    waited = time.monotonic() - started
    release.join()
    holder.close()
    log.close()
    assert 0.25 < waited < 1.0  # it waited for the lock, and took it soon after it went
    assert sorted(read_log(log.path)["request_id"].to_list()) == ["mine", "other"]


def test_a_duplicate_inside_a_group_inserted_together_fails_alone(tmp_path):
    """The writer inserts a group's rows in one statement; when one request of the group fails (its id is
    already logged), that statement is undone and each request is tried alone: only the duplicate fails."""
    import asyncio

    commits: list[int] = []
    log = PredictionLog(tmp_path / "predictions.db", timeout_s=5.0, on_commit=lambda _, n: commits.append(n))
    log.write(_rows("dup", 2))
    holder = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # everything below queues up behind it, then commits as one group
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()

    async def many() -> list:
        ids = ["a", "b", "dup", "c", "d"]
        return await asyncio.gather(*(log.write_async(_rows(i, 2)) for i in ids), return_exceptions=True)

    outcomes = asyncio.run(many())
    log.close()
    holder.close()
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "NoneType", "IntegrityError", "NoneType", "NoneType"]
    assert commits[-1] == 4  # one commit for the four that succeeded
    counts = dict(read_log(log.path).group_by("request_id").len().iter_rows())
    assert counts == {"dup": 2, "a": 2, "b": 2, "c": 2, "d": 2}


def test_a_duplicate_in_a_group_of_over_a_thousand_rows_fails_alone(tmp_path):
    """Over `_ROWS_PER_STATEMENT` rows, a group is inserted in several statements under a savepoint: when
    the last one fails, the earlier ones are undone too, and each request is then tried alone."""
    import asyncio

    log = PredictionLog(tmp_path / "predictions.db", timeout_s=5.0)
    log.write(_rows("dup", 1))
    holder = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()

    async def many() -> list:
        writes = [log.write_async(_rows(f"big{i}", 300)) for i in range(4)] + [log.write_async(_rows("dup", 1))]
        return await asyncio.gather(*writes, return_exceptions=True)

    outcomes = asyncio.run(many())
    log.close()
    holder.close()
    assert [o is None for o in outcomes] == [True] * 4 + [False]
    counts = dict(read_log(log.path).group_by("request_id").len().iter_rows())
    assert counts == {"dup": 1, **{f"big{i}": 300 for i in range(4)}}
