"""End-to-end fixtures: a throwaway copy of the project (its own git and DVC repository), a runner, and the
session's Prefect server (`prefect_api`, from `prefect_harness.py`)."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import run_command

from .prefect_harness import prefect_api  # noqa: F401  (a fixture: imported here, it is the e2e tests')
from .workspace import copy_built, copy_project

Runner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A fresh copy of the project's tracked files, committed in a new git repository.

    For a test that uses the `data_stages_run` fixture (`@pytest.mark.usefixtures("data_stages_run")`), a fresh
    copy of the session's project whose data stages have already run (`dvc repro split`)."""
    if "data_stages_run" in request.fixturenames:
        return copy_built(request.getfixturevalue("data_stages_run"), tmp_path / "project")
    return copy_project(tmp_path / "project")


@pytest.fixture
def run(project: Path) -> Runner:
    """Run a command in the project copy (`tests.harness.run_command`): `run("dvc", "repro")`."""
    return functools.partial(run_command, project)
