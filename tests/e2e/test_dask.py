"""The data stages on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on loopback.

The stages run as the real CLI (`evergreen stage ...`, as `dvc repro` runs them) with the scheduler's address in
`EVERGREEN_DASK_SCHEDULER`, on a small project of several partitions; the same stages run in this process, one
partition after another, on a copy of it. The outputs must be the same bytes, part by part; the workers' own
task logs must show the partition tasks; and a worker killed while it validates must cost nothing but time:
Dask gives its partitions to the other worker, and the result is the same as the local run's.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from evergreen.parallel import SCHEDULER_ENV, SYNCHRONOUS
from evergreen.workspace import Workspace
from tests.harness import ROOT, TINY, free_port, run_command, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

BIN = Path(sys.executable).parent
HEADER = "id,day,hr,weather,temp,hum,y\n"
STAGES = ("ingest", "validate_raw", "clean", "validate_clean")
OUTPUTS = ("data/raw", "data/clean", "data/quarantine", "metrics", "reports/validation/raw.json",
           "reports/validation/clean.json")  # fmt: skip


def _rows(first: int, n: int, day: str) -> str:
    # a repeated id (first - 1) with another target in every batch after the first: a key conflict per partition
    rows = "".join(f"{i},{day},{i % 24},{1 + i % 3},0.{i % 9 + 1},0.5,{i}\n" for i in range(first, first + n))
    return rows + (f"{first - 1},{day},0,1,0.5,0.5,999\n" if first > 1 else "")


def _project(path: Path) -> Path:
    (path / "in").mkdir(parents=True)
    (path / "data" / "incoming").mkdir(parents=True)
    (path / "in" / "source.csv").write_text(HEADER + _rows(1, 40, "2011-01-01"))
    for day in range(2, 6):
        (path / "data/incoming" / f"2011-01-0{day}.csv").write_text(HEADER + _rows(day * 100, 30, f"2011-01-0{day}"))
    params: dict[str, Any] = {**TINY, "ingest": {"max_key_conflicts": 0.5}}
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(ROOT / "dvc.yaml", path / "dvc.yaml")  # the CLI checks stage names against it
    subprocess.run([BIN / "evergreen", "expectations", "generate"], cwd=path, check=True, capture_output=True)
    return path


def _stage(project: Path, stage: str, scheduler: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, SCHEDULER_ENV: scheduler, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.Popen(
        [BIN / "evergreen", "stage", stage], cwd=project, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen,
    )  # fmt: skip


def _run(project: Path, stage: str, scheduler: str) -> str:
    """`evergreen stage <stage>` on `scheduler`, to the end; what it printed."""
    return run_command(project, BIN / "evergreen", "stage", stage, env={SCHEDULER_ENV: scheduler}, timeout=120).stdout


def _files(project: Path) -> dict[str, bytes]:
    found = {}
    for name in OUTPUTS:
        path = project / name
        for file in sorted([path] if path.is_file() else path.rglob("*")):
            if file.is_file():
                found[str(file.relative_to(project))] = file.read_bytes()
    return found


class Cluster:
    def __init__(self, base: Path) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        base.mkdir()
        self.logs = base
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"])
        for name in ("w1", "w2"):
            # no nanny: killing the process kills the worker, nothing restarts it behind the test's back
            args = ["worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
            self._start(name, [*args, "--host", "127.0.0.1"])

    def _start(self, name: str, args: list[str]) -> None:
        # started elsewhere than the project: workers must not depend on the stage's working directory
        log = (self.logs / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen([BIN / "dask", *args], cwd=self.logs, stdout=log, stderr=log)

    def client(self) -> Any:
        from distributed import Client

        return Client(self.address, timeout="30s")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path / "cluster")
    try:
        with running.client() as client:
            client.wait_for_workers(2, timeout=60)
        yield running
    finally:
        running.stop()


def _tasks_per_worker(cluster: Cluster) -> dict[str, set[str]]:
    """Each worker's own record of the partition tasks it computed (its state machine's log)."""
    with cluster.client() as client:
        logs = client.run(
            lambda dask_worker: sorted(
                {
                    str(e[0])
                    for e in dask_worker.state.log
                    if str(e[0]).startswith("evergreen-") and e[1] == "compute-task"
                }
            )
        )
    return {address: set(keys) for address, keys in logs.items()}


def _run_here(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local reference: the same stages in this process, one partition after another."""
    monkeypatch.setenv(SCHEDULER_ENV, SYNCHRONOUS)
    ws = Workspace.open(project)
    for stage in STAGES:
        importlib.import_module(f"evergreen.stages.{stage}").run(ws)


def test_the_data_stages_on_a_dask_cluster_match_a_local_run(
    tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _project(tmp_path / "local")
    _run_here(local, monkeypatch)
    remote = _project(tmp_path / "remote")

    out = _run(remote, "ingest", cluster.address)
    assert "5 partition(s), 5 new or changed" in out and cluster.address in out
    workers = {a: keys for a, keys in _tasks_per_worker(cluster).items() if keys}
    assert len(workers) == 2, f"both workers should have run partitions: {workers}"
    assert sum(len(k) for k in workers.values()) == 10  # two passes over five partitions
    assert all(any(k.startswith("evergreen-ingest-stage-") for k in keys) for keys in workers.values())

    # a worker killed while it validates: its partitions go to the other worker, nothing half-done is kept
    validating = _stage(remote, "validate_raw", cluster.address)
    docs = remote / "reports/validation/docs/raw"
    wait_until(lambda: docs.is_dir() and any(p.is_dir() for p in docs.iterdir()), 60, "a first partition validated")
    assert validating.poll() is None, "validate_raw ended before the kill: the test would prove nothing"
    cluster.procs["w2"].kill()
    out, _ = validating.communicate(timeout=120)
    assert validating.returncode == 0, out
    assert "5 validated now" in out

    for stage in ("clean", "validate_clean"):
        out = _run(remote, stage, cluster.address)
    assert "5 partition(s), 5 validated now" in out
    local_files, remote_files = _files(local), _files(remote)
    assert list(local_files) == list(remote_files)  # the same parts, by name (fingerprints included)
    different = [name for name in local_files if local_files[name] != remote_files[name]]
    assert not different, f"differ from the local run: {different}"
    assert len([n for n in local_files if n.startswith("data/clean/clean.parquet/")]) == 5
