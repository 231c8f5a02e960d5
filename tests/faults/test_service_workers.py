"""Several server processes on one prediction log (`serve.workers`, issue 12): `kill -9` of one worker under
concurrent load loses no acknowledged prediction, the log stays sound, the other worker keeps serving, and
uvicorn starts a new one."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import httpx
import psutil
import pytest

from evergreen.serving.log import read_log
from tests.service_harness import AUTH, load_clients, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _workers(pid: int) -> list[psutil.Process]:
    """uvicorn's worker processes under the supervisor `pid` (not multiprocessing's resource tracker)."""
    return [p for p in psutil.Process(pid).children() if "spawn_main" in " ".join(p.cmdline())]


def test_kill_9_of_one_of_two_workers_keeps_every_acknowledged_prediction(make_project, trained):
    """Promise: with two processes committing to one SQLite log, every prediction answered 200 is in the log
    with all its records, whichever process dies, and the file is sound. Attack: 8 clients, 1-3 records per
    request, then SIGKILL of one worker."""
    ws = make_project({"serve.workers": 2})
    with running_server(ws.root) as (url, process):
        workers = _workers(process.pid)
        assert len(workers) == 2
        stop = threading.Event()
        outcome: list[list[tuple]] = []
        loader = threading.Thread(target=lambda: outcome.extend(load_clients(url, trained.records(), 8, None, stop)))
        loader.start()
        deadline = time.monotonic() + 20
        while read_log(ws.prediction_log).height < 200:  # both under load for real before the kill
            assert time.monotonic() < deadline and loader.is_alive()
            time.sleep(0.05)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait(10)  # dead for real
        after: list[tuple] = []
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
            for i in range(20):  # the surviving worker (or the one uvicorn starts again) keeps answering
                batch = trained.records()[i : i + 2]
                response = client.post("/predict", json={"records": batch})
                assert response.status_code == 200, response.text
                after.append((batch, response.json()))
        stop.set()
        loader.join(60)
        deadline = time.monotonic() + 30
        while len([w for w in _workers(process.pid) if w.pid != workers[0].pid]) < 2:
            assert time.monotonic() < deadline, "no worker was started in place of the killed one"
            time.sleep(0.2)
    *per_client, _ = outcome
    acknowledged = [(batch, answer) for client in per_client for batch, answer in client] + after
    assert len(acknowledged) > 50
    rows_per_request = dict(read_log(ws.prediction_log).group_by("request_id").len().iter_rows())
    # every acknowledged request with all its records, listed together when some are not
    short = [a["request_id"] for batch, a in acknowledged if rows_per_request.get(a["request_id"]) != len(batch)]
    assert short == []
    integrity = sqlite3.connect(ws.prediction_log)
    try:
        assert integrity.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        integrity.close()
