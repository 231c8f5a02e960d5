"""The Prefect end-to-end tests' one harness: a real Prefect server on a free loopback port, with its own
PREFECT_HOME (`prefect_server`; the session-wide `prefect_api` fixture, registered in `conftest.py`), the
project's deployments served to it (`deployed`) and run (`run_deployed`), and waits on what the server has
seen: a deployment registered, a flow run's logs complete."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.harness import BIN, free_port, wait_until


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _wait_for(url: str, timeout: float, process: subprocess.Popen, log: Path) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(up, timeout, f"{url} to answer", detail=lambda: log.read_text()[-3000:])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def prefect_server(home: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `prefect server start` on a free loopback port; yields the API URL; stops it afterwards.

    `env` adds settings for the server, e.g. PREFECT_API_DATABASE_CONNECTION_URL for a PostgreSQL database.
    """
    port = free_port()
    log = home / "server.log"
    home.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env={**prefect_env(home), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_for(f"{api_url}/health", 120, process, log)
        yield api_url
    finally:
        stop(process)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Prefect server for the session's tests (its API URL): it takes seconds to start. A test that counts
    the server's flow runs, or needs another database, starts its own with `prefect_server`."""
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as url:
        yield url


@contextmanager
def deployed(project: Path, api_url: str, home: Path, *names: str, env: dict[str, str] | None = None) -> Iterator[Path]:
    """`evergreen deploy` in `project` serving its deployments to the server at `api_url`, deployments `names`
    ("flow/deployment") registered there, and this process's Prefect client pointed at that server; yields
    the deploy command's log. `home` holds the client's PREFECT_HOME and the log; `env` adds to its environment."""
    log = home / "deploy.log"
    # the runner looks for runs to start every second, not every 10 s (Prefect's default): each triggered run
    # here would otherwise wait 5 s on average before it starts
    client_env = prefect_env(home / "client-home", api_url) | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"} | (env or {})
    with (
        background([str(BIN / "evergreen"), "deploy"], project, client_env, log),
        temporary_settings({PREFECT_API_URL: api_url}),
    ):
        wait_until_serving(log)
        for name in names:
            wait_for_deployment(name)
        yield log


def run_deployed(name: str, parameters: dict[str, Any], timeout: float = 600) -> FlowRun:
    """Trigger deployment `name` through the API (inside `deployed`) and wait for its run to end."""
    return run_deployment(name, parameters=parameters, timeout=timeout, poll_interval=2)


@contextmanager
def background(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run a long-lived command (e.g. `evergreen deploy`) for the duration of a block."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop(process)


def wait_until_serving(log: Path, timeout: float = 120) -> None:
    """Wait until `evergreen deploy`, writing to `log`, says it is serving its deployments."""
    wait_until(
        lambda: log.exists() and "serving" in log.read_text(),
        timeout,
        "`evergreen deploy` to start serving",
        detail=lambda: log.read_text() if log.exists() else "(no log)",
    )


async def _deployment_exists(name: str) -> bool:
    async with get_client() as client:
        try:
            await client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
        return True


def wait_for_deployment(name: str, timeout: float = 60) -> None:
    """Wait until the server at PREFECT_API_URL has deployment `name` ("flow/deployment")."""
    wait_until(lambda: asyncio.run(_deployment_exists(name)), timeout, f"deployment {name} to be registered")


_LOG_PAGE = 200  # the server's default (and largest) page


async def _read_logs(flow_run_id: UUID) -> list:
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    logs: list = []
    async with get_client() as client:
        while True:  # the server answers at most a page at a time
            page = await client.read_logs(log_filter, limit=_LOG_PAGE, offset=len(logs))
            logs += page
            if len(page) < _LOG_PAGE:
                return logs


def flow_run_logs(flow_run_id: UUID, timeout: float = 60) -> str:
    """All log messages of a finished flow run, as the server at PREFECT_API_URL has them, one a line.

    Runs ship their logs in batches, after the fact: this waits for the flow engine's last line ("Finished
    in state ..." from the flow run itself, not from one of its tasks), so no earlier line is still on its way.
    """

    def complete() -> list | None:
        logs = asyncio.run(_read_logs(flow_run_id))
        finished = any(e.task_run_id is None and e.message.startswith("Finished in state") for e in logs)
        return logs if finished else None

    logs = wait_until(complete, timeout, f"the final log line of flow run {flow_run_id}")
    return "\n".join(entry.message for entry in logs)
