"""Helpers shared by the tests (and the benchmarks): import them from here, never from another test module.

- `ROOT`, `TINY`: the project root, and a tiny declared dataset (params mapping) for unit tests;
- `synthetic`, `SMALL_MODEL`, `SMALL_TRAIN`: rows of that dataset with a learnable target, and a network and
  training config small enough to train in well under a second on one CPU thread;
- `free_port`: a free loopback TCP port for a server under test;
- `wait_until`: poll for something to happen, with a deadline and a failure that says what never happened;
- `run_command`, `command_env`, `GIT_IDENTITY`, `BIN`: run `evergreen`, `dvc`, git or Python in a project
  folder as a user would, its output kept for the failure message;
- `imported_when_used`, `REPORT_MODULES`: a module imported on the first use of its names rather than at
  collection, and the test modules that import Evidently or Great Expectations that way.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from evergreen.config import ModelConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # where this interpreter's `evergreen`, `dvc` and `prefect` are installed
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "evergreen-test",
    "GIT_AUTHOR_EMAIL": "test@evergreen.invalid",
    "GIT_COMMITTER_NAME": "evergreen-test",
    "GIT_COMMITTER_EMAIL": "test@evergreen.invalid",
}

TINY: dict[str, Any] = {
    "data": {
        "source": "in/*.csv",
        "task": "regression",
        "timestamp": {"column": "day", "hour_column": "hr"},
        "columns": [
            {"name": "id", "type": "int", "role": "id", "min": 1},
            {"name": "day", "type": "date", "role": "timestamp"},
            {"name": "hr", "type": "int", "role": "feature", "kind": "categorical", "min": 0, "max": 23},
            {
                "name": "weather",
                "type": "int",
                "role": "feature",
                "kind": "categorical",
                "allowed": [1, 2, 3],
            },
            {"name": "temp", "type": "float", "role": "feature", "min": 0, "max": 1, "out_of_range": "clip"},
            {
                "name": "hum",
                "type": "float",
                "role": "feature",
                "min": 0,
                "max": 1,
                "missing": "impute_median",
            },
            {"name": "y", "type": "int", "role": "target", "min": 0},
        ],
    },
}

SMALL_MODEL = ModelConfig(hidden=[16], embedding_dim=4, dropout=0.1, crosses=[["hr", "weather"]])
SMALL_TRAIN = TrainConfig(epochs=6, batch_size=64, lr=0.01, patience=20, device="cpu")


def synthetic(n: int, seed: int, task: str = "regression") -> pl.DataFrame:
    """Rows of the `TINY` dataset whose target depends on hour, weather and temperature (not humidity)."""
    rng = np.random.default_rng(seed)
    hr, weather = rng.integers(0, 24, n), rng.integers(1, 4, n)
    temp, hum = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    signal = 20 + 30 * np.sin(hr / 24 * np.pi) + 40 * temp - 8 * weather
    if task == "regression":
        y = np.maximum(0, signal + rng.normal(0, 3, n)).round()
    else:  # imbalanced: about one row in eight is class 1
        y = (signal + rng.normal(0, 5, n) > np.quantile(signal, 0.87)).astype(float)
    day = [dt.date(2024, 1, 1) + dt.timedelta(days=int(i) // 24) for i in range(n)]
    return pl.DataFrame(
        {"id": np.arange(1, n + 1) + seed * 100_000, "day": day, "hr": hr, "weather": weather,
         "temp": temp, "hum": hum, "y": y},
        schema={"id": pl.Int64, "day": pl.Date, "hr": pl.Int64, "weather": pl.Int64, "temp": pl.Float64,
                "hum": pl.Float64, "y": pl.Int64},
    )  # fmt: skip


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The tests that run Evidently or Great Expectations (about 8 s to import the two). Their modules import them on
# first use (`imported_when_used`), not when collected, and with `-n` they all run on one worker
# (`pytest_xdist_make_scheduler` in tests/conftest.py): the other of the fast suite's two workers never imports them.
REPORT_MODULES = frozenset(
    {
        "tests/data/test_suites_on_bundled_data.py",
        "tests/unit/test_evidently_adapter.py",
        "tests/unit/test_monitor_reruns.py",
        "tests/unit/test_partitions.py",
        "tests/unit/test_privacy.py",
        "tests/unit/test_retention.py",
        "tests/unit/test_validation.py",
    }
)


class imported_when_used:  # noqa: N801 - used like a module
    """The module `name`, imported on the first use of one of its names rather than when the test module is.

    Not importlib's `LazyLoader`: pytest's collection reads attributes (`__test__`, fixture markers) of
    everything in a test module, and any attribute read of a lazy module imports it. Here only a public name
    does. Patch the module's attributes by their dotted name (`monkeypatch.setattr("pkg.mod.X", v)`).
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # what pytest looks for; a test uses only the module's public names
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._name), attr)


T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What a test waited for did not happen in time (an assertion failure, not an error in the harness)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.5,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    Fails with `WaitTimeout` naming `what` (and `detail()`, e.g. the tail of a log) when `timeout` seconds
    pass first. Use it instead of a fixed sleep: wait for the event that proves the thing happened, or, for
    "nothing else happened", for the event after which it could no longer happen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f":\n{detail()}" if detail is not None else ""
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


def command_env() -> dict[str, str]:
    """The environment for `evergreen`, `dvc` and git in a project copy: this interpreter's scripts first on
    PATH (DVC stages call `evergreen` by name), and a git identity (promotions commit)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **GIT_IDENTITY}


def run_command(
    cwd: Path,
    *args: str | Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `args` in `cwd` (environment: `command_env()` updated by `env`), stdout and stderr merged in
    `.stdout`.

    With `check`, a non-zero exit fails the test with the command and the tail of its output: the output is
    what says why, and a bare CalledProcessError would hide it.
    """
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env={**command_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        command = " ".join(str(arg) for arg in args)
        raise AssertionError(f"{command} failed ({done.returncode}) in {cwd}:\n{done.stdout[-6000:]}")
    return done
