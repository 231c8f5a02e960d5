"""Attacks on the real `evergreen serve` process that used to cost the service a 500 or a poisoned label
(issue 19, part 5): a client closing mid-body, and feedback labels outside the target's declared type and range."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from evergreen.prediction_log.read import read_log
from evergreen.workspace import Workspace
from tests.harness import wait_until
from tests.service_harness import AUTH, TOKEN, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_Y = 1000  # a declared max for the target, so an absurd label is outside the declaration


@pytest.fixture(scope="module")
def module_project(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained project whose target `y` (an int with min 0) also declares a max."""
    root = tmp_path_factory.mktemp("attacks")
    shutil.copy(trained.root / "params.yaml", root / "params.yaml")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    [target] = [c for c in raw["data"]["columns"] if c["name"] == "y"]
    target["max"] = MAX_Y
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copytree(trained.workspace.registry, Workspace.open(root).registry)
    return root


@pytest.fixture(scope="module")
def server(module_project: Path) -> Iterator[tuple[str, Path]]:
    with running_server(module_project) as (url, process):
        yield url, next(module_project.glob("server-*.log"))


def _metric(url: str, name: str) -> float:
    """The sum of a metric's samples (every label set) in the service's `/metrics`."""
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith(name) and not line.startswith("#")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_a_client_closing_mid_body_is_counted_apart_without_a_traceback(server, trained):
    """Promise: a client that announces 1000 bytes, sends 10 and closes is counted as a client disconnect, not
    as a /predict 5xx (which pages through the shipped alert), and the server logs no traceback. Attack: a raw
    socket, three times. Before: each was a /predict 500 with "Exception in ASGI application" in the log."""
    url, output = server
    port = int(url.rsplit(":", 1)[1])
    head = (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head.encode() + b'{"records"')  # 10 bytes of the 1000 announced
            time.sleep(0.2)  # let the server start reading the body before the close
    wait_until(
        lambda: _metric(url, 'evergreen_http_client_disconnects_total{endpoint="/predict"}') == 3,
        20,
        "three client disconnects counted",
        interval=0.1,
        detail=output.read_text,
    )
    assert _metric(url, 'evergreen_http_requests_total{endpoint="/predict",status="5') == 0
    log = output.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    answer = httpx.post(f"{url}/predict", json={"records": trained.records()[:1]}, headers=AUTH, timeout=30)
    assert answer.status_code == 200  # the server is unharmed


def test_feedback_labels_must_fit_the_targets_declared_type_and_range(server, trained, module_project):
    """Promise: a label must be what the declaration of the target allows, as a feature must: 1.5 for an int
    target and 1e15 for a target declared at most 1000 are a 422 naming the label's place and the column, and
    nothing is labelled. Attack: both, through the real service. Before: 1.5 was taken (and landed for training
    as "1"); 1e15 was refused only where a max was declared (still is)."""
    url, _ = server
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        request_id = client.post("/predict", json={"records": trained.records()[:2]}).json()["request_id"]
        for labels, where, says in (
            ([3, 1.5], "labels[1]", "y is declared int"),
            ([1e15, 3], "labels[0]", "outside the declared range of y"),
        ):
            answer = client.post("/feedback", json={"request_id": request_id, "labels": labels})
            assert answer.status_code == 422, answer.text
            body = answer.json()
            assert where in body["error"] and body["detail"][0]["field"] == where, body
            assert says in body["detail"][0]["message"], body
            log = read_log(Workspace.open(module_project).prediction_log_location)
            assert log.filter(log["request_id"] == request_id)["label"].null_count() == 2  # nothing labelled
        accepted = client.post("/feedback", json={"request_id": request_id, "labels": [12.0, 7]})
        assert accepted.status_code == 200 and accepted.json()["labelled"] == 2, accepted.text
