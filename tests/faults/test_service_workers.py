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
from prometheus_client.parser import text_string_to_metric_families

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


def _predict_count(text: str) -> tuple[float, float]:
    """(answered /predict 200s, rows scored) in a /metrics exposition."""
    requests = rows = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "evergreen_http_requests_total" and sample.labels == {
                "endpoint": "/predict",
                "status": "200",
            }:
                requests += sample.value
            elif sample.name == "evergreen_rows_scored_total":
                rows += sample.value
    return requests, rows


def test_metrics_count_every_worker_whichever_answers_the_scrape(make_project, trained):
    """Promise: with two workers, /metrics sums both (prometheus-client's multiprocess mode), so every scrape
    reports every request, whichever worker answers it. Before: each worker reported its own counts only."""
    ws = make_project({"serve.workers": 2})
    sent = 60
    with running_server(ws.root) as (url, process):
        assert len(_workers(process.pid)) == 2
        rows = 0
        for i in range(sent):  # a new connection each: the kernel hands them to either worker
            batch = trained.records()[i % 50 : i % 50 + 1 + i % 2]
            response = httpx.post(f"{url}/predict", json={"records": batch}, headers=AUTH, timeout=10)
            assert response.status_code == 200, response.text
            rows += len(batch)
        counts = set()
        for _ in range(8):  # a new connection per scrape, as Prometheus would
            scraped = httpx.get(f"{url}/metrics", headers=AUTH, timeout=10)
            assert scraped.status_code == 200
            counts.add(_predict_count(scraped.text))
        assert counts == {(float(sent), float(rows))}
        assert "evergreen_model_info" in scraped.text  # the collectors read at scrape time are there too
