"""The prediction log in PostgreSQL (`serve.log_url`, issue 12): two server workers commit to a real PostgreSQL
15 (the throwaway cluster of `tests.postgres_harness`); `kill -9` of one under concurrent load loses no
acknowledged prediction; monitoring reads the same log; a log URL that cannot be used stops `evergreen serve`
with one readable line naming it, without its password."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from evergreen.prediction_log.read import read_log
from evergreen.workspace import LogLocation
from tests.harness import free_port
from tests.service_harness import (
    AUTH,
    BIN,
    kill_one_worker_under_load,
    missing_from_log,
    running_server,
    server_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_kill_9_of_one_of_two_workers_on_postgresql_keeps_every_acknowledged_prediction(
    make_project, trained, postgres
):
    """Promise: with two processes committing to one PostgreSQL log, every prediction answered 200 is in the
    log with all its records, whichever process dies; the other worker keeps serving and uvicorn starts a new
    one; monitoring reads the log from the same place. Attack: 8 clients, 1-3 records each, SIGKILL of one."""
    url = postgres.create_database("served_log")
    ws = make_project({"serve.workers": 2, "serve.log_url": url})
    location = ws.prediction_log_location
    assert location == LogLocation.postgresql(url)
    with running_server(ws.root) as (base, process):
        assert httpx.get(f"{base}/health", headers=AUTH).json()["log_backend"] == "postgresql"
        acknowledged, after = kill_one_worker_under_load(
            base, process, trained.records(), lambda: read_log(location).height
        )
        with httpx.Client(base_url=base, headers=AUTH, timeout=10) as client:
            labelled = client.post("/feedback", json={"request_id": after[0][1]["request_id"], "labels": [3.0, 2]})
            assert labelled.status_code == 200 and labelled.json()["labelled"] == 2
    log = read_log(location, data=ws.params.data)  # where `evergreen monitor` reads
    assert missing_from_log(acknowledged, log) == []
    assert log.select("request_id", "row").is_unique().all()
    assert log.filter(log["request_id"] == after[0][1]["request_id"])["label"].to_list() == [3.0, 2.0]
    assert not ws.prediction_log.exists()  # nothing went to the SQLite file


def _serve_error(root, env: dict[str, str] | None = None) -> str:
    """`evergreen serve`'s output when it refuses to start (it must not start)."""
    result = subprocess.run(
        [str(BIN / "evergreen"), "serve", "--port", str(free_port())],
        cwd=root, env=server_env() | (env or {}), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_log_url_that_cannot_be_used_stops_serve_with_one_line_naming_it_without_its_password(make_project):
    """An unreachable database, a URL in an unset environment variable, and a URL that is not PostgreSQL's:
    each is one `error:` line at start-up naming the setting or the place, never the password of a URL that
    could not be used."""
    port = free_port()  # nothing listens there
    ws = make_project({"serve.log_url": f"postgresql://evergreen:s3cret@127.0.0.1:{port}/log"})
    unreachable = _serve_error(ws.root)
    assert f"postgresql://evergreen:***@127.0.0.1:{port}/log: cannot open the prediction log" in unreachable
    assert "s3cret" not in unreachable

    ws = make_project({"serve.log_url_env": "EVERGREEN_TEST_LOG_URL"})
    unset = _serve_error(ws.root)
    assert "EVERGREEN_TEST_LOG_URL" in unset and "holds no URL" in unset
    through_env = _serve_error(ws.root, {"EVERGREEN_TEST_LOG_URL": f"postgresql://u:hidden@127.0.0.1:{port}/x"})
    assert f"127.0.0.1:{port}/x: cannot open the prediction log" in through_env and "hidden" not in through_env

    ws = make_project()
    (ws.root / "params.yaml").write_text(
        (ws.root / "params.yaml").read_text().replace("log_url: null", "log_url: mysql://db/x")
    )
    wrong = _serve_error(ws.root)
    assert "serve.log_url: not a PostgreSQL URL" in wrong and "mysql://db/x" in wrong
