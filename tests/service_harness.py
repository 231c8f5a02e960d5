"""A small trained project and a real `evergreen serve` process, shared by the service's end-to-end and fault
tests: `build_project` (a model trained, evaluated and exported by the real stages on tiny synthetic data, as
registry versions v1 and v2), `running_server`, `load_clients` (concurrent clients), `wait_for_line` and
`wait_for_health`;
`kill_one_worker_under_load` and `missing_from_log`: the `serve.workers` attack, for either log.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import polars as pl
import psutil
import yaml
from onnx import helper

from evergreen.registry.store import Registry
from evergreen.stages import evaluate as evaluate_stage
from evergreen.stages import export as export_stage
from evergreen.stages import train as train_stage
from evergreen.workspace import LogLocation, Workspace
from tests.harness import TINY, free_port, synthetic, wait_until

BIN = Path(sys.executable).parent
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BATCH = 50
COLUMNS = ["id", "day", "hr", "weather", "temp", "hum"]


def _params() -> dict[str, Any]:
    raw = copy.deepcopy(TINY)
    raw["data"]["columns"][0] = {"name": "id", "type": "str", "role": "id"}  # so there is a string to limit
    raw["model"] = {"hidden": [16], "embedding_dim": 4}
    raw["train"] = {"epochs": 3, "batch_size": 64, "device": "cpu"}
    raw["evaluate"] = {"hgb_max_iter": 20}
    raw["export"] = {"latency_runs": 10, "throughput_batch": 64}
    raw["serve"] = {"max_batch": MAX_BATCH, "max_string_length": 32, "reload_interval_s": 0.2}
    return raw


def _doubled(graph: Path, out: Path) -> None:
    """The same graph with its prediction times two: a second version whose answers are told apart."""
    model = onnx.load(str(graph))
    [output] = model.graph.output
    for node in model.graph.node:
        node.output[:] = [f"{name}_raw" if name == output.name else name for name in node.output]
    model.graph.initializer.append(helper.make_tensor("two", onnx.TensorProto.FLOAT, [], [2.0]))
    model.graph.node.append(helper.make_node("Mul", [f"{output.name}_raw", "two"], [output.name]))
    onnx.save(model, str(out))


@dataclass
class Project:
    root: Path
    registry: Registry
    test: pl.DataFrame  # the test split
    evaluated: np.ndarray  # the evaluate stage's test predictions
    parity_limit: float

    @property
    def workspace(self) -> Workspace:
        return Workspace.open(self.root)

    @property
    def log_location(self) -> LogLocation:
        return self.workspace.prediction_log_location

    def records(self, frame: pl.DataFrame | None = None) -> list[dict[str, Any]]:
        frame = self.test if frame is None else frame
        return frame.select(COLUMNS).with_columns(pl.col("day").cast(pl.String)).to_dicts()


def build_project(root: Path) -> Project:
    """A model trained, evaluated and exported by the real stages on tiny synthetic data, in a registry as
    v1 (champion), with v2 = the same graph times two (not promoted)."""
    (root / "params.yaml").write_text(yaml.safe_dump(_params(), sort_keys=False))
    ws = Workspace.open(root)
    ws.split("train").parent.mkdir(parents=True)
    for name, seed, n in (("train", 1, 500), ("valid", 2, 150), ("test", 3, 150)):
        synthetic(n, seed).with_columns(pl.col("id").cast(pl.String)).write_parquet(ws.split(name))
    train_stage.run(ws)
    evaluate_stage.run(ws)
    export_stage.run(ws)
    registry = Registry(ws.registry)
    card = json.loads(ws.model_card.read_text())
    files = {"model.onnx": ws.onnx_model, "signature.json": ws.signature}
    registry.promote(registry.add(files, card), "test: first champion")
    _doubled(ws.onnx_model, root / "doubled.onnx")
    registry.add({**files, "model.onnx": root / "doubled.onnx"}, {**card, "note": "prediction x 2"})
    evaluated = pl.read_parquet(ws.test_predictions)
    return Project(
        root=root,
        registry=registry,
        test=pl.read_parquet(ws.split("test")),
        evaluated=evaluated["prediction"].to_numpy(),
        parity_limit=json.loads(ws.export_metrics.read_text())["parity_limit"],
    )


def server_env(token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EVERGREEN_API_TOKEN"}
    return env | ({"EVERGREEN_API_TOKEN": token} if token else {})


@contextlib.contextmanager
def running_server(root: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    output = root / f"server-{port}.log"  # a file, not a pipe: a pipe nobody reads would block the server
    with output.open("w") as sink:
        process = subprocess.Popen(
            [str(BIN / "evergreen"), "serve", "--port", str(port), *args],
            cwd=root,
            env=server_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url, process, output), 60, "the server to come up", interval=0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _up(url: str, process: subprocess.Popen, output: Path) -> bool:
    """Whether the server answers /health; a server that exited fails at once, with its output."""
    if process.poll() is not None:
        raise AssertionError(f"the server exited ({process.returncode}):\n{output.read_text()}")
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def load_clients(
    url: str,
    records: list[dict[str, Any]],
    clients: int,
    requests: int | None,
    stop: threading.Event | None = None,
) -> list[list[tuple]]:
    """`clients` threads sending 1-3 records per request, until `requests` each or `stop`: per client the
    (records, answer) pairs acknowledged, then one last list holding ("failures", [...])."""
    results: list[list[tuple]] = [[] for _ in range(clients)]
    failures: list[str] = []

    def run(k: int) -> None:
        rng = random.Random(k)
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            i = 0
            while (requests is None or i < requests) and not (stop is not None and stop.is_set()):
                batch = rng.sample(records, rng.randint(1, 3))
                try:
                    response = client.post("/predict", json={"records": batch})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    return
                if response.status_code != 200:
                    failures.append(response.text)
                    return
                results[k].append((batch, response.json()))
                i += 1

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.append([("failures", failures)])
    return results


def wait_for_line(path: Path, needle: str, deadline_s: float = 10) -> str:
    """The server's output once it holds `needle` (fails after `deadline_s`)."""

    def output() -> str | None:
        text = path.read_text()
        return text if needle in text else None

    return wait_until(output, deadline_s, f"{needle!r} in the server's output", interval=0.05, detail=path.read_text)


def wait_for_health(
    client: httpx.Client, holds: Callable[[dict[str, Any]], bool], what: str, timeout: float = 10
) -> dict[str, Any]:
    """The service's `/health` answer once `holds` it (fails after `timeout`, showing the last answer): the
    watcher reloads the registry on its own schedule, so a test waits for the state it expects, not a time."""

    def answer() -> dict[str, Any] | None:
        health = client.get("/health").json()
        return health if holds(health) else None

    return wait_until(answer, timeout, what, interval=0.05, detail=lambda: str(client.get("/health").json()))


def server_workers(pid: int) -> list[psutil.Process]:
    """uvicorn's worker processes under the supervisor `pid` (not multiprocessing's resource tracker)."""
    return [p for p in psutil.Process(pid).children() if "spawn_main" in " ".join(p.cmdline())]


def kill_one_worker_under_load(
    base: str, supervisor: subprocess.Popen, records: list[dict[str, Any]], logged_rows: Any
) -> tuple[list[tuple], list[tuple]]:
    """The `serve.workers: 2` attack, whatever the log: 8 clients send 1-3 records per request; once
    `logged_rows()` counts 200, one worker is killed with SIGKILL; 20 more requests must each be answered 200
    (by the survivor or the worker uvicorn starts again), and a replacement must start within 30 s.

    Returns (every acknowledged (batch, answer), the 20 answered after the kill), for the caller to find in
    its log.
    """
    workers = server_workers(supervisor.pid)
    assert len(workers) == 2
    stop = threading.Event()
    outcome: list[list[tuple]] = []
    loader = threading.Thread(target=lambda: outcome.extend(load_clients(base, records, 8, None, stop)))
    loader.start()
    wait_until(  # both workers under load for real before the kill
        lambda: logged_rows() >= 200 or not loader.is_alive(), 20, "200 rows logged under load", interval=0.05
    )
    assert loader.is_alive(), "the clients stopped before the kill"
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].wait(10)  # dead for real
    after: list[tuple] = []
    with httpx.Client(base_url=base, headers=AUTH, timeout=10) as client:
        for i in range(20):
            batch = records[i : i + 2]
            response = client.post("/predict", json={"records": batch})
            assert response.status_code == 200, response.text
            after.append((batch, response.json()))
    stop.set()
    loader.join(60)
    wait_until(
        lambda: len([w for w in server_workers(supervisor.pid) if w.pid != workers[0].pid]) >= 2,
        30,
        "a worker started in place of the killed one",
        interval=0.2,
    )
    *per_client, _ = outcome
    acknowledged = [(batch, answer) for client in per_client for batch, answer in client] + after
    assert len(acknowledged) > 50
    return acknowledged, after


def missing_from_log(acknowledged: list[tuple], log: pl.DataFrame) -> list[str]:
    """Request ids answered 200 whose records are not all in the log (listed together)."""
    rows_per_request = dict(log.group_by("request_id").len().iter_rows())
    return [a["request_id"] for batch, a in acknowledged if rows_per_request.get(a["request_id"]) != len(batch)]
