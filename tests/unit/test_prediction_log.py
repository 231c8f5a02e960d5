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
