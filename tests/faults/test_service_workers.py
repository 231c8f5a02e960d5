"""Several server processes on one prediction log (`serve.workers`, issue 12): `kill -9` of one worker under
concurrent load loses no acknowledged prediction, the log stays sound, the other worker keeps serving, and
uvicorn starts a new one."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from evergreen.prediction_log.read import read_log
from tests.service_harness import (
    AUTH,
    kill_one_worker_under_load,
    missing_from_log,
    running_server,
    server_workers,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_kill_9_of_one_of_two_workers_keeps_every_acknowledged_prediction(make_project, trained):
    """Promise: with two processes committing to one SQLite log, every prediction answered 200 is in the log
    with all its records, whichever process dies, and the file is sound. Attack: 8 clients, 1-3 records per
    request, then SIGKILL of one worker."""
    ws = make_project({"serve.workers": 2})
    with running_server(ws.root) as (url, process):
        acknowledged, _ = kill_one_worker_under_load(
            url, process, trained.records(), lambda: read_log(ws.prediction_log_location).height
        )
    assert missing_from_log(acknowledged, read_log(ws.prediction_log_location)) == []
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
        assert len(server_workers(process.pid)) == 2
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
