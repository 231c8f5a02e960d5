"""`kill -9` of the real service under concurrent load (issue 10 g)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading

import pytest

from evergreen.prediction_log.read import read_log
from tests.harness import wait_until
from tests.service_harness import load_clients, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_kill_9_under_load_keeps_every_acknowledged_prediction_and_a_sound_log(make_project, trained):
    """Promise: every prediction answered 200 is in the log with all its records, whenever the process dies,
    and the log file is sound afterwards. Attack: 8 clients sending 1-3 records per request, then SIGKILL."""
    ws = make_project()
    with running_server(ws.root) as (url, process):
        stop = threading.Event()
        outcome: list[list[tuple]] = []
        loader = threading.Thread(target=lambda: outcome.extend(load_clients(url, trained.records(), 8, None, stop)))
        loader.start()
        wait_until(  # under load for real before the kill
            lambda: read_log(ws.prediction_log_location).height >= 100 or not loader.is_alive(),
            15,
            "100 rows logged under load",
            interval=0.05,
        )
        assert loader.is_alive(), "the clients stopped before the kill"
        os.kill(process.pid, signal.SIGKILL)
        loader.join(60)
        stop.set()
    *per_client, [(_, failures)] = outcome
    assert failures, "the clients never saw the server die"
    acknowledged = [(batch, answer) for client in per_client for batch, answer in client]
    assert len(acknowledged) > 20
    log = read_log(ws.prediction_log_location)
    counts = dict(log.group_by("request_id").len().iter_rows())
    for batch, answer in acknowledged:
        assert counts.get(answer["request_id"]) == len(batch), answer["request_id"]
    with sqlite3.connect(ws.prediction_log) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
