"""Shared fixtures: the tiny declared dataset for unit tests, and the bundled params.

Shared constants and helpers live in `tests/harness.py`; import them from there.
"""

from __future__ import annotations

import copy
import gc
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from evergreen.config import Params, parse_params
from tests.harness import ROOT, TINY

# folders of slow tests only: a `-m "not slow"` run does not import them (their Prefect, service and pipeline
# harnesses cost each pytest worker about 14 s of a fast run's collection); `_every_test_there_is_slow` keeps
# the promise
ONLY_SLOW = ("e2e", "model")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("markexpr") == "not slow" and collection_path.is_relative_to(ROOT / "tests"):
        parts = collection_path.relative_to(ROOT / "tests").parts
        return True if parts and parts[0] in ONLY_SLOW else None
    return None


@pytest.hookimpl(optionalhook=True)  # xdist's hook: pytest -p no:xdist must still run
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With xdist's default (`--dist load`), `REPORT_MODULES` run together on one worker (tests/scheduling.py)."""
    if config.getvalue("dist") != "load":
        return None
    from tests.scheduling import ReportsOnOneWorker

    return ReportsOnOneWorker(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test in a slow-only folder (`ONLY_SLOW`) that is not marked slow would never run in a fast run."""
    for item in items:
        parts = item.path.relative_to(ROOT / "tests").parts if item.path.is_relative_to(ROOT / "tests") else ()
        if parts and parts[0] in ONLY_SLOW and item.get_closest_marker("slow") is None:
            raise pytest.UsageError(f"{item.nodeid} is in tests/{parts[0]}, where every test must be marked slow")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """An xdist worker freezes what the tests leave behind before its interpreter exits.

    The interpreter's last garbage collections walk every object still alive (torch, Evidently, GX and the
    tests' data): 2 to 4 s per worker, which the run waits for. Frozen objects are skipped, so one still alive in
    a reference cycle is never finalized: every test closes its files, writers and connections itself. Only in a
    worker, which exits next: a process that runs `pytest.main()` and goes on would keep its garbage.
    """
    if hasattr(config, "workerinput"):
        gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Train the tests' tiny networks on one CPU thread.

    Their matrices are too small to gain from more threads, and on cores that other processes keep busy,
    torch's threads wait on each other: the training tests ran about four times slower with two threads.
    Only this process is affected; the pipeline that end-to-end tests run in subprocesses keeps its own.
    """
    torch = sys.modules.get("torch")  # imported by the collected tests that train; none of them: no cost
    if torch is not None:
        torch.set_num_threads(1)


@pytest.fixture
def tiny_raw() -> dict[str, Any]:
    """A fresh, mutable copy of the tiny params mapping."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny(tiny_raw: dict[str, Any]) -> Params:
    return parse_params(tiny_raw)


@pytest.fixture(scope="session")
def bundled_params() -> Params:
    return parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster for the whole run (each test creates its own database in it)."""
    from tests.postgres_harness import postgres_cluster

    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def data_stages_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project whose data stages have run (`dvc repro split`), built once for the session: tests
    about what follows the data take fresh copies of it (`tests.e2e.workspace.copy_built`) instead of each
    ingesting, validating, cleaning and splitting the bundled table again (half a minute each time).

    An end-to-end test gets such a copy as its `project` with `@pytest.mark.usefixtures("data_stages_run")`."""
    from tests.e2e.workspace import copy_project
    from tests.harness import run_command

    project = copy_project(tmp_path_factory.mktemp("data-stages-run") / "project")
    run_command(project, "dvc", "repro", "split")
    return project
