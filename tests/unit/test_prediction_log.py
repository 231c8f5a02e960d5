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

import polars as pl
import pytest

from evergreen.errors import EvergreenError, LabelCountMismatch, LogUnavailable, UnknownRequest
from evergreen.prediction_log.base import INSERT, Backend, utc_now
from evergreen.prediction_log.read import count_shadow_labels, read_log, read_shadow_pairs
from evergreen.prediction_log.writer import PredictionLog, log_rows
from evergreen.workspace import LogLocation
from tests.harness import wait_until


def _rows(request_id: str, n: int = 2, version: str = "v1", time: str | None = None) -> list[tuple]:
    records = [{"hr": i, "weather": 1, "temp": 0.5, "hum": None, "day": "2024-01-01"} for i in range(n)]
    return log_rows(request_id, time or utc_now(), version, records, [float(10 * i) for i in range(n)])


@pytest.fixture
def log(tmp_path: Path):
    log = PredictionLog(LogLocation.sqlite(tmp_path / "log" / "predictions.db"))
    yield log
    log.close()


def test_rows_read_back_with_one_typed_column_per_feature(log, tiny):
    log.write(_rows("a", 3))
    log.write(_rows("b", 1, version="v2"))
    frame = read_log(log.location, data=tiny.data)
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
    assert read_log(log.location, last_rows=3)["request_id"].to_list() == ["old", "new", "new"]
    assert read_log(log.location, since=dt.datetime(2026, 3, 1))["request_id"].to_list() == ["new", "new"]
    assert read_log(log.location, since="2027-01-01").height == 0


def test_a_log_that_does_not_exist_reads_as_empty(tmp_path, tiny):
    frame = read_log(LogLocation.sqlite(tmp_path / "none.db"), data=tiny.data)
    assert frame.height == 0 and {"hr", "prediction", "label"} <= set(frame.columns)


def _written_concurrently(log: PredictionLog, location: LogLocation, clients: int, requests: int) -> pl.DataFrame:
    """`clients` threads write `requests` requests of 3 rows each, alternating between `log` and a second writer
    on the same log (as a second server would be); returns the log as read back."""
    second = PredictionLog(location)

    def client(writer: PredictionLog, name: str) -> None:
        for i in range(requests):
            writer.write(_rows(f"{name}-{i}", 3))

    threads = [threading.Thread(target=client, args=(log if k % 2 else second, f"c{k}")) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.close()
    return read_log(location)


def test_concurrent_writers_are_logged_exactly_once(log, tmp_path):
    frame = _written_concurrently(log, log.location, clients=8, requests=40)
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
    assert sorted(read_log(log.location)["request_id"].to_list()) == ["dup", "ok1", "ok2", "ok3"]


def test_labels_attach_to_an_earlier_request_in_record_order(log):
    log.write(_rows("r1", 3))
    assert log.attach_labels("r1", [5, None, 7.5]) == 2
    frame = read_log(log.location)
    assert frame["label"].to_list() == [5, None, 7.5]
    assert frame["label_time"].null_count() == 1
    log.attach_labels("r1", [6, 6, 6])  # a corrected label replaces the earlier one
    assert read_log(log.location)["label"].to_list() == [6, 6, 6]


def test_labels_for_an_unknown_request_or_of_the_wrong_count_are_refused(log):
    log.write(_rows("r1", 2))
    with pytest.raises(UnknownRequest, match="'nope'"):
        log.attach_labels("nope", [1])
    with pytest.raises(LabelCountMismatch, match="scored 2 record"):
        log.attach_labels("r1", [1, 2, 3])
    assert read_log(log.location)["label"].null_count() == 2


def test_classification_rows_keep_their_class_and_probabilities(log):
    records = [{"hr": 1}, {"hr": 2}]
    log.write(log_rows("c", utc_now(), "v1", records, ["no", "yes"], [[0.9, 0.1], [0.3, 0.7]]))
    frame = read_log(log.location)
    assert frame["prediction"].to_list() == ["no", "yes"]
    assert frame["probabilities"].to_list() == ["[0.9, 0.1]", "[0.3, 0.7]"]


def _shadow(request_id: str, n: int, version: str = "s1", offset: float = 1.0) -> list[tuple]:
    return [(request_id, i, version, float(10 * i) + offset, None) for i in range(n)]


def test_shadow_rows_pair_with_their_labelled_champion_rows(log, tiny):
    """A shadow model's answers are logged beside the champion's; `read_shadow_pairs` gives, per labelled
    record the shadow scored, the label, the champion's and the shadow's predictions, typed as `read_log`."""
    log.write(_rows("a", 2), shadow_rows=_shadow("a", 2))
    log.write(_rows("b", 3), shadow_rows=_shadow("b", 3) + _shadow("b", 3, version="s2", offset=2.0))
    log.write(_rows("c", 1))  # scored before the shadow went live: never paired
    log.attach_labels("a", [1, None])
    log.attach_labels("b", [4, 5, 6])
    log.attach_labels("c", [7])
    pairs = read_shadow_pairs(log.location, "s1", tiny.data)
    assert pairs.columns == [
        "request_id", "row", "time", "model_version", "label", "prediction", "probabilities",
        "shadow_prediction", "shadow_probabilities",
    ]  # fmt: skip
    assert list(pairs.select("request_id", "row").iter_rows()) == [("a", 0), ("b", 0), ("b", 1), ("b", 2)]
    assert pairs["label"].to_list() == [1.0, 4.0, 5.0, 6.0] and pairs["label"].dtype == pl.Float64
    assert pairs["prediction"].to_list() == [0.0, 0.0, 10.0, 20.0]
    assert pairs["shadow_prediction"].to_list() == [1.0, 1.0, 11.0, 21.0]
    assert pairs["model_version"].to_list() == ["v1"] * 4
    assert read_shadow_pairs(log.location, "s2", tiny.data)["shadow_prediction"].to_list() == [2.0, 12.0, 22.0]
    assert count_shadow_labels(log.location, "s1") == 4 and count_shadow_labels(log.location, "s2") == 3
    assert count_shadow_labels(log.location, "none") == 0
    assert read_shadow_pairs(log.location, "none", tiny.data).height == 0


def test_shadow_rows_commit_with_their_request_or_not_at_all(log):
    """The champion's rows and the shadow's are one transaction: a request whose shadow rows fail (here a
    duplicate) is refused whole, and the others of its group still commit with their shadow rows."""
    import asyncio

    log.write(_rows("x", 1), shadow_rows=_shadow("x", 1))

    async def many() -> list:
        writes = [
            log.write_async(_rows("ok", 1), shadow_rows=_shadow("ok", 1)),
            log.write_async(_rows("bad", 1), shadow_rows=_shadow("x", 1)),  # its shadow row already exists
        ]
        return await asyncio.gather(*writes, return_exceptions=True)

    outcomes = asyncio.run(many())
    assert outcomes[0] is None and isinstance(outcomes[1], sqlite3.IntegrityError)
    assert sorted(read_log(log.location)["request_id"].to_list()) == ["ok", "x"]
    with sqlite3.connect(log.location.path) as conn:
        shadow = conn.execute("SELECT request_id FROM shadow_predictions ORDER BY request_id").fetchall()
    assert shadow == [("ok",), ("x",)]


def test_a_log_without_shadow_rows_has_no_pairs(tmp_path, tiny):
    assert read_shadow_pairs(LogLocation.sqlite(tmp_path / "none.db"), "s1", tiny.data).height == 0
    assert count_shadow_labels(LogLocation.sqlite(tmp_path / "none.db"), "s1") == 0


_WRITER = textwrap.dedent(
    """
    import sys
    from evergreen.prediction_log.base import utc_now
    from evergreen.prediction_log.writer import PredictionLog, log_rows
    from evergreen.workspace import LogLocation
    log = PredictionLog(LogLocation.sqlite(sys.argv[1]))
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

    def fifty_acknowledged() -> bool:
        acknowledged.append(writer.stdout.readline().strip())
        return len(acknowledged) >= 50

    try:
        wait_until(fifty_acknowledged, 30, "50 acknowledged writes", interval=0)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    acknowledged += [line.strip() for line in writer.stdout if line.strip()]
    logged = set(read_log(LogLocation.sqlite(path))["request_id"].to_list())
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
    log = PredictionLog(LogLocation.sqlite(tmp_path / "predictions.db"), timeout_s=0.5)
    holder = _hold_write_lock(log.location.path)
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
    assert read_log(log.location)["request_id"].to_list() == ["accepted"]
    assert "cannot commit" in caplog.text and "commits again" in caplog.text


def test_close_finishes_queued_writes_and_refuses_new_ones(tmp_path):
    """Promise: every write queued before `close` is committed and answered; one after it raises at once."""
    log = PredictionLog(LogLocation.sqlite(tmp_path / "predictions.db"))
    futures = [log.submit(lambda backend, i=i: backend.insert(INSERT, _rows(f"q{i}", 1))) for i in range(50)]
    log.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(LogUnavailable, match="closed"):
        log.write(_rows("late", 1))
    assert read_log(log.location).height == 50


class _Fatal(BaseException):
    """An error no `except Exception` catches: it ends the writer thread."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_thread_that_dies_answers_every_waiter(tmp_path):
    """Promise: if the writer thread ends unexpectedly, every queued write fails with `LogUnavailable` and
    later ones are refused at once; no caller waits for ever. Before: they hung."""
    log = PredictionLog(LogLocation.sqlite(tmp_path / "predictions.db"))
    holder = _hold_write_lock(log.location.path)  # queue the work up behind the lock, then let the writer die on it

    def die(_: Backend) -> None:
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
    other = PredictionLog(log.location, timeout_s=1)  # the dead writer's transaction did not keep the lock
    other.write(_rows("other", 1))
    other.close()
    assert read_log(log.location)["request_id"].to_list() == ["other"]


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
    location = LogLocation.sqlite(path)
    assert read_log(location)["out_of_range"].to_list() == [[]]
    log = PredictionLog(location)
    log.write(log_rows("new", utc_now(), "v1", [{"hr": 30}], [1.0], out_of_range=[["hr"]]))
    log.close()
    assert read_log(location)["out_of_range"].to_list() == [[], ["hr"]]


def test_concurrent_awaited_writes_share_commits_and_each_is_logged(tmp_path):
    """Group commit groups: 64 requests awaiting their commit on one event loop take far fewer commits than
    64 (each commit is one fsync), and every one of them is in the log afterwards."""
    import asyncio

    commits: list[int] = []
    log = PredictionLog(LogLocation.sqlite(tmp_path / "predictions.db"), on_commit=lambda _, n: commits.append(n))

    async def many() -> None:
        await asyncio.gather(*(log.write_async(_rows(f"r{i}", 1)) for i in range(64)))

    try:
        asyncio.run(many())
    finally:
        log.close()
    assert sum(commits) == 64
    assert len(commits) < 16, commits
    assert read_log(log.location)["request_id"].n_unique() == 64


def test_an_awaited_write_behind_a_held_lock_is_refused_within_the_timeout_and_never_committed(tmp_path):
    import asyncio

    log = PredictionLog(LogLocation.sqlite(tmp_path / "predictions.db"), timeout_s=0.5)
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
    assert read_log(log.location)["request_id"].to_list() == ["after"]


def test_a_lock_held_briefly_by_another_writer_delays_a_write_but_does_not_fail_it(tmp_path):
    """Two server processes take turns on the write lock: a write waits for the other's commit (retrying
    within the timeout), it is not refused."""
    log = PredictionLog(LogLocation.sqlite(tmp_path / "predictions.db"), timeout_s=5.0)
    holder = sqlite3.connect(tmp_path / "predictions.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(INSERT, _rows("other", 1)[0])
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    log.write(_rows("mine", 1))
    waited = time.monotonic() - started
    release.join()
    holder.close()
    log.close()
    assert 0.25 < waited < 1.0  # it waited for the lock, and took it soon after it went
    assert sorted(read_log(log.location)["request_id"].to_list()) == ["mine", "other"]


def test_a_duplicate_inside_a_group_inserted_together_fails_alone(tmp_path):
    """The writer inserts a group's rows in one statement; when one request of the group fails (its id is
    already logged), that statement is undone and each request is tried alone: only the duplicate fails."""
    import asyncio

    commits: list[int] = []
    location = LogLocation.sqlite(tmp_path / "predictions.db")
    log = PredictionLog(location, timeout_s=5.0, on_commit=lambda _, n: commits.append(n))
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
    counts = dict(read_log(log.location).group_by("request_id").len().iter_rows())
    assert counts == {"dup": 2, "a": 2, "b": 2, "c": 2, "d": 2}


def test_a_duplicate_in_a_group_of_over_a_thousand_rows_fails_alone(tmp_path):
    """Over `ROWS_PER_STATEMENT` rows, a group is inserted in several statements under a savepoint: when
    the last one fails, the earlier ones are undone too, and each request is then tried alone."""
    import asyncio

    log = PredictionLog(LogLocation.sqlite(tmp_path / "predictions.db"), timeout_s=5.0)
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
    counts = dict(read_log(log.location).group_by("request_id").len().iter_rows())
    assert counts == {"dup": 1, **{f"big{i}": 300 for i in range(4)}}


# ------------------------------------------------------------------------------- both backends, one writer
_DATABASES = iter(range(10**6))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def any_log(request, tmp_path: Path):
    """A log on each backend: a SQLite file, and a fresh database of the throwaway PostgreSQL cluster."""
    if request.param == "sqlite":
        location = LogLocation.sqlite(tmp_path / "predictions.db")
    else:
        url = request.getfixturevalue("postgres").create_database(f"log_{os.getpid()}_{next(_DATABASES)}")
        location = LogLocation.postgresql(url)
    log = PredictionLog(location, timeout_s=5.0)
    yield log
    log.close()


def test_each_backend_logs_reads_and_labels_alike(any_log, tiny):
    """Promise: the same rows, types and labels read back from SQLite and PostgreSQL (a prediction and a label
    of no fixed type keep theirs: a float here, a class name below)."""
    any_log.write(_rows("a", 3))
    any_log.write(_rows("b", 1, version="v2"), shadow_rows=_shadow("b", 1))
    assert any_log.attach_labels("a", [5, None, 7.5]) == 2
    any_log.attach_labels("b", [1])
    frame = read_log(any_log.location, data=tiny.data)
    assert frame["request_id"].to_list() == ["a", "a", "a", "b"] and frame["row"].to_list() == [0, 1, 2, 0]
    assert frame["hr"].to_list() == [0, 1, 2, 0] and frame["day"].to_list() == [dt.date(2024, 1, 1)] * 4
    assert frame["prediction"].to_list() == [0.0, 10.0, 20.0, 0.0]
    assert frame["label"].to_list() == [5.0, None, 7.5, 1.0] and frame["label_time"].null_count() == 1
    assert read_log(any_log.location, last_rows=2)["request_id"].to_list() == ["a", "b"]
    assert read_shadow_pairs(any_log.location, "s1", tiny.data)["shadow_prediction"].to_list() == [1.0]
    assert count_shadow_labels(any_log.location, "s1") == 1
    with pytest.raises(UnknownRequest, match="'nope'"):
        any_log.attach_labels("nope", [1])
    with pytest.raises(LabelCountMismatch, match="scored 3 record"):
        any_log.attach_labels("a", [1])


def test_each_backend_keeps_class_names(any_log):
    records = [{"hr": 1}, {"hr": 2}]
    any_log.write(log_rows("c", utc_now(), "v1", records, ["no", "yes"], [[0.9, 0.1], [0.3, 0.7]]))
    any_log.attach_labels("c", ["yes", "yes"])
    frame = read_log(any_log.location)
    assert frame["prediction"].to_list()[:2] == ["no", "yes"] and frame["label"].to_list()[:2] == ["yes", "yes"]
    assert frame["probabilities"].to_list()[:2] == ["[0.9, 0.1]", "[0.3, 0.7]"]


def test_each_backend_fails_a_duplicate_alone_within_a_group(any_log):
    """Promise: a group commit whose one request fails (its id is already logged, or its shadow row) commits
    the others, with their shadow rows; on PostgreSQL, where an error aborts the transaction, too."""
    import asyncio

    commits: list[int] = []
    any_log.on_commit = lambda _, n: commits.append(n)
    any_log.write(_rows("dup", 2), shadow_rows=_shadow("dup", 2))

    async def many() -> list:
        ids = ["a", "b", "dup", "c", "d"]
        writes = [any_log.write_async(_rows(i, 2), shadow_rows=_shadow(i, 2)) for i in ids]
        writes.append(any_log.write_async(_rows("e", 1), shadow_rows=_shadow("dup", 1)))
        return await asyncio.gather(*writes, return_exceptions=True)

    outcomes = asyncio.run(many())
    assert [o is None for o in outcomes] == [True, True, False, True, True, False]
    counts = dict(read_log(any_log.location).group_by("request_id").len().iter_rows())
    assert counts == {"dup": 2, "a": 2, "b": 2, "c": 2, "d": 2}
    any_log.attach_labels("a", [1, 2])
    assert count_shadow_labels(any_log.location, "s1") == 2
    assert any_log.check(1.0) is None


def test_each_backend_logs_concurrent_writers_exactly_once(any_log):
    frame = _written_concurrently(any_log, any_log.location, clients=6, requests=20)
    assert frame.height == 6 * 20 * 3
    assert frame.select("request_id", "row").is_unique().all()


@pytest.mark.slow
def test_a_postgresql_log_that_cannot_be_reached_is_refused_naming_it_without_its_password():
    from tests.harness import free_port

    location = LogLocation.postgresql(f"postgresql://evergreen:s3cret@127.0.0.1:{free_port()}/log")
    with pytest.raises(LogUnavailable) as refused:
        PredictionLog(location, timeout_s=1.0)
    message = str(refused.value)
    assert "127.0.0.1" in message and "cannot open the prediction log" in message and "s3cret" not in message
    with pytest.raises(EvergreenError, match="cannot read the prediction log") as unread:
        read_log(location)
    assert "s3cret" not in str(unread.value)


@pytest.mark.slow
def test_a_postgresql_log_survives_the_database_dropping_its_connection(postgres):
    """Promise: a connection the server dropped while idle (a restart, an idle timeout) costs no request: the
    next commit starts on a new one. A connection dropped mid-commit fails that commit with `LogUnavailable`
    (nothing acknowledged), and the commit after it reconnects."""
    import psycopg

    url = postgres.create_database(f"log_{os.getpid()}_drop")
    location = LogLocation.postgresql(url)

    def drop_connections() -> None:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )

    log = PredictionLog(location, timeout_s=2.0)
    try:
        log.write(_rows("before", 1))
        drop_connections()
        log.write(_rows("after idle drop", 1))

        def drop_then_insert(backend: Backend) -> None:  # the connection goes inside the transaction
            backend.insert(INSERT, _rows("mid-commit", 1))
            drop_connections()
            backend.insert(INSERT, _rows("mid-commit, too", 1))

        with pytest.raises(LogUnavailable, match="cannot commit"):
            log.submit(drop_then_insert).result(10)
        log.write(_rows("after", 1))
    finally:
        log.close()
    assert read_log(location)["request_id"].to_list() == ["before", "after idle drop", "after"]


def test_the_workspace_names_one_log_location(tiny, tmp_path, monkeypatch):
    """`prediction_log_location`: the SQLite path by default, serve.log_url, or the URL in serve.log_url_env;
    both at once, a URL that is not PostgreSQL's, or an unset variable are refused naming the setting."""
    from evergreen.config import with_overrides
    from evergreen.errors import ConfigError
    from evergreen.workspace import Workspace

    def location(overrides: dict) -> LogLocation:
        return Workspace(tmp_path, with_overrides(tiny, overrides)).prediction_log_location

    default = location({})
    assert default.kind == "sqlite" and default.path == tmp_path / tiny.serve.log_path and default.url is None
    declared = location({"serve.log_url": "postgresql://me@db:5432/log"})
    assert declared.kind == "postgresql" and declared.path is None
    assert declared == LogLocation.postgresql("postgresql://me@db:5432/log")
    monkeypatch.setenv("LOG_URL_FOR_TEST", "postgresql://me:pw@db/log")
    from_env = location({"serve.log_url_env": "LOG_URL_FOR_TEST"})
    assert from_env.kind == "postgresql" and from_env.secret_url() == "postgresql://me:pw@db/log"
    with pytest.raises(ConfigError, match="log_url or log_url_env, not both"):
        location({"serve.log_url": "postgresql://db/x", "serve.log_url_env": "LOG_URL_FOR_TEST"})
    with pytest.raises(ConfigError, match="serve.log_url: .*not a PostgreSQL URL"):
        location({"serve.log_url": "sqlite:///x.db"})
    monkeypatch.setenv("LOG_URL_FOR_TEST", "db.example.com")
    with pytest.raises(EvergreenError, match="LOG_URL_FOR_TEST, which does not hold a PostgreSQL URL"):
        location({"serve.log_url_env": "LOG_URL_FOR_TEST"})


def test_a_log_location_shown_anywhere_has_no_password():
    """`str`, `repr`, `where` and the dataclass's fields of a location mask the URL's password (in the user part
    or the query); only `secret_url()`, for the code that connects, reveals it."""
    user = LogLocation.postgresql("postgresql://me:pw@db:5432/log")
    query = LogLocation.postgresql("postgresql://db/log?user=me&password=pw&sslmode=require")
    assert str(user) == user.where == "postgresql://me:***@db:5432/log"
    assert query.where == "postgresql://db/log?user=me&password=***&sslmode=require"
    for location in (user, query):
        assert "pw" not in f"{location} {location!r} {vars(location)} {location.url!r}"
    assert user.secret_url() == "postgresql://me:pw@db:5432/log"
    assert str(LogLocation.sqlite(Path("monitoring/predictions.db"))) == "monitoring/predictions.db"


def test_a_log_location_is_one_backend_or_refused():
    """A location is a SQLite path or a PostgreSQL URL, never both or neither; a SQLite one reveals no URL."""
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        LogLocation.postgresql("mysql://me:pw@db/log")
    with pytest.raises(ValueError, match="a sqlite log location takes a path"):
        LogLocation("sqlite")
    with pytest.raises(ValueError, match="a postgresql log location takes a URL"):
        LogLocation("postgresql", path=Path("x.db"))
    with pytest.raises(ValueError, match="has no URL"):
        LogLocation.sqlite("x.db").secret_url()


@pytest.mark.slow
def test_a_postgresql_table_lock_refuses_a_write_within_the_timeout_and_the_log_recovers(postgres):
    """Promise: a PostgreSQL log that cannot take a write (another session locks the table) refuses it with
    `LogUnavailable` within about the timeout, each request of the group once (not once per request in turn),
    and takes writes again once the lock goes."""
    import asyncio

    import psycopg

    url = postgres.create_database(f"log_{os.getpid()}_lock")
    location = LogLocation.postgresql(url)
    log = PredictionLog(location, timeout_s=0.5)
    holder = psycopg.connect(url)
    try:
        holder.execute("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")

        async def many() -> list:
            writes = [log.write_async(_rows(f"r{i}", 1)) for i in range(4)]
            return await asyncio.gather(*writes, return_exceptions=True)

        started = time.monotonic()
        outcomes = asyncio.run(many())
        assert all(isinstance(o, LogUnavailable) for o in outcomes), outcomes
        assert time.monotonic() - started < 1.8
        assert log.check(1.0) is None  # a probe writes nothing: it needs no lock on the table
    finally:
        holder.rollback()
        holder.close()
    log.write(_rows("after", 1))
    log.close()
    assert read_log(location)["request_id"].to_list() == ["after"]


@pytest.mark.slow
def test_postgresql_workers_starting_at_once_all_open_the_log(postgres):
    """Promise: several workers creating the tables of a fresh database at the same moment all start (without
    the advisory lock, concurrent `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL's catalog)."""
    url = postgres.create_database(f"log_{os.getpid()}_race")
    location = LogLocation.postgresql(url)
    opened: list[PredictionLog] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(6)

    def open_log() -> None:
        barrier.wait()
        try:
            opened.append(PredictionLog(location, timeout_s=5.0))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_log) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, log in enumerate(opened):
        log.write(_rows(f"w{i}", 1))
        log.close()
    assert errors == [] and len(opened) == 6
    assert read_log(location).height == 6


def test_each_backend_pairs_a_classifiers_shadow_rows_in_the_targets_type(any_log, tiny_raw):
    """A classifier's labels and both models' classes read back in the target's declared type, on SQLite and
    on PostgreSQL (where they are stored as jsonb), with both models' probabilities."""
    from evergreen.config import parse_params

    tiny_raw["data"]["task"] = "classification"
    tiny_raw["data"]["columns"][-1] = {"name": "y", "type": "str", "role": "target", "allowed": ["no", "yes"]}
    data = parse_params(tiny_raw).data
    records = [{"hr": 1}, {"hr": 2}]
    shadow = [("c", 0, "s1", "yes", "[0.4, 0.6]"), ("c", 1, "s1", "no", "[0.8, 0.2]")]
    any_log.write(log_rows("c", utc_now(), "v1", records, ["no", "yes"], [[0.9, 0.1], [0.3, 0.7]]), shadow)
    any_log.attach_labels("c", ["yes", "yes"])
    pairs = read_shadow_pairs(any_log.location, "s1", data)
    assert pairs["label"].dtype == pl.String and pairs["label"].to_list() == ["yes", "yes"]
    assert pairs["prediction"].to_list() == ["no", "yes"] and pairs["shadow_prediction"].to_list() == ["yes", "no"]
    assert pairs["probabilities"].to_list() == ["[0.9, 0.1]", "[0.3, 0.7]"]
    assert pairs["shadow_probabilities"].to_list() == ["[0.4, 0.6]", "[0.8, 0.2]"]
