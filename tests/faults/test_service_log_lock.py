"""A prediction log locked by another process, with the real service (`evergreen serve`) running (issue 10 a)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from evergreen.prediction_log.read import read_log
from tests.harness import wait_until
from tests.service_harness import AUTH, running_server, wait_for_line

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_S = 1.0
# another process takes the write lock and holds it until told to let go
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
print("released", flush=True)
"""


def test_a_locked_log_is_a_503_within_the_timeout_and_the_service_recovers(make_project, trained):
    """Promise: a request whose commit cannot happen is answered 503 within about `serve.log_timeout_s` (never
    hangs), `/health` answers 503 with `log: unavailable` while the lock is held, a line says so, and the
    service recovers by itself when the lock goes. Attack: another process holds BEGIN EXCLUSIVE on the log
    while requests arrive. Before: the batch's futures were never resolved and every request hung for good."""
    ws = make_project({"serve.log_timeout_s": TIMEOUT_S})
    body = {"records": trained.records()[:2]}
    with running_server(ws.root) as (url, _), httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        output = ws.root / f"server-{url.rsplit(':', 1)[1]}.log"
        first = client.post("/predict", json=body)
        assert first.status_code == 200
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(ws.prediction_log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            answers: list[tuple[int, float]] = []

            def send() -> None:
                start = time.monotonic()
                status = client.post("/predict", json=body).status_code
                answers.append((status, time.monotonic() - start))

            senders = [threading.Thread(target=send) for _ in range(4)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(20)
            assert [status for status, _ in answers] == [503] * 4
            assert max(seconds for _, seconds in answers) < 2 * TIMEOUT_S + 1.5  # bounded, not for good
            health = client.get("/health")
            assert health.status_code == 503
            assert health.json()["log"] == "unavailable" and health.json()["status"] == "degraded"
            wait_for_line(output, "cannot commit")
        finally:
            assert locker.stdin is not None
            locker.stdin.write("\n")
            locker.stdin.flush()
            locker.wait(10)
        again = wait_until(
            lambda: (answer := client.post("/predict", json=body)).status_code == 200 and answer,
            10,
            "a prediction answered 200 once the lock is released",
            interval=0.05,
        )
        assert client.get("/health").json() == {
            "status": "ok",
            "model_version": "v1",
            "log": "ok",
            "log_backend": "sqlite",
        }
        wait_for_line(output, "commits again")
    log = read_log(ws.prediction_log_location)
    assert {first.json()["request_id"], again.json()["request_id"]} <= set(log["request_id"])
    assert log.height == 4  # two acknowledged requests of two records; no 503 was logged
