"""Bodies and settings built to break the service's front door, against the real server (issue 10 e)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from evergreen.errors import ServeError
from evergreen.serving.app import api_token
from tests.harness import free_port
from tests.service_harness import AUTH, BIN, running_server, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(trained) -> Iterator[tuple[str, dict]]:
    with running_server(trained.root) as (url, _):
        yield url, trained.records()[0]


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], headers=AUTH, timeout=30) as client:
        yield client


def _post(client: httpx.Client, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/predict", content=body, headers=JSON if headers is None else headers)


def test_bodies_that_crashed_the_parser_are_a_400(server, client):
    """Promise: any body is answered with a 4xx and a one-line error, never a 500 with a traceback. Attack:
    100,000 nested `[` (RecursionError in the parser) and a 5,000-digit integer (Python's int digit limit).
    Before: both were a 500."""
    _, good = server
    cases = [
        b"[" * 100_000,
        b'{"records": ' + b"[" * 100_000,
        json.dumps({"records": [good]}).replace('"hr": 19', '"hr": ' + "1" * 5000).encode(),
        b'{"records": [{"temp": ' + b"9" * 5000 + b"}]}",
    ]
    assert "1" * 5000 in cases[2].decode()
    for body in cases:
        response = _post(client, body)
        assert response.status_code == 400, (body[:60], response.text[:300])
        assert "not valid JSON" in response.json()["error"] and len(response.content) < 1000
    assert _post(client, json.dumps({"records": [good]}).encode()).status_code == 200


def test_an_unknown_key_is_echoed_clipped(server, client):
    """Promise: an error repeats at most 80 characters of a client's key, and lists at most 20 problems, so an
    error body stays small whatever was sent; a key that cannot be encoded is not a 500. Attack: a 10,000-character
    unknown key in a record and at the top level, 5,000 unknown keys, a lone surrogate as a key. Before: the
    key came back in full."""
    _, good = server
    long_key = "k" * 10_000
    for body in ({"records": [{**good, long_key: 1}]}, {"records": [good], long_key: 1}):
        response = _post(client, json.dumps(body).encode())
        assert response.status_code == 422 and len(response.content) < 1000, response.text[:300]
        assert "k" * 80 + "…" in response.json()["error"] and "k" * 81 not in response.text
    many = {"records": [{**good, **{f"unknown_{i}": 1 for i in range(5000)}}]}
    response = _post(client, json.dumps(many).encode())
    assert response.status_code == 422 and len(response.json()["detail"]) == 20
    assert response.json()["error"].startswith("5000 invalid field(s)") and len(response.content) < 5000
    surrogate = b'{"records": [{"\\ud800": 1}], "\\udfff": 2}'
    assert _post(client, surrogate).status_code == 422


def test_a_body_not_sent_as_json_is_a_415(server, client):
    """Promise: POST bodies are read as JSON only when sent as `application/json` (charset allowed); any other
    content type, or none, is a 415 and nothing is scored. Attack: the same valid JSON as text/plain, as a form,
    without a content type. Before: text/plain was scored and logged."""
    _, good = server
    body = json.dumps({"records": [good]}).encode()
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        response = _post(client, body, headers)
        assert response.status_code == 415 and "application/json" in response.json()["error"], headers
    feedback = client.post("/feedback", content=b'{"request_id": "x", "labels": [1]}', headers={})
    assert feedback.status_code == 415
    assert _post(client, body, {"Content-Type": "Application/JSON; charset=utf-8"}).status_code == 200


@pytest.mark.parametrize("token", ["", " ", "\t\n"])
def test_a_blank_token_refuses_to_start(trained, token):
    """Promise: a token of only whitespace is never accepted: start-up fails with a `ServeError` naming the
    variable (the command exits 1). Attack: `EVERGREEN_API_TOKEN=' '`. Before: the service started, and the
    guard compared against a token no client could send."""
    serve = trained.workspace.params.serve
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(serve.token_env, token)
        with pytest.raises(ServeError, match=serve.token_env):
            api_token(serve)
    if token == " ":
        done = subprocess.run(
            [str(BIN / "evergreen"), "serve", "--port", str(free_port())],
            cwd=trained.root,
            env=server_env(token=None) | {serve.token_env: token},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1 and "blank" in done.stderr
