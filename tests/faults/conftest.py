"""Fixtures for the fault tests of the prediction service: one model trained for the whole session by the real
stages (`tests.e2e.test_service.build_project`), and per test a fresh project folder holding a copy of its
registry and params, with its own prediction log, so a test may break what it likes."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from evergreen.config import with_overrides
from evergreen.serving.service import PredictionService
from evergreen.workspace import Workspace
from tests.service_harness import Project, build_project


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The tiny trained project: v1 champion, v2 = v1's graph times two (not promoted)."""
    return build_project(tmp_path_factory.mktemp("faults-model"))


MakeProject = Callable[..., Workspace]


@pytest.fixture
def make_project(trained: Project, tmp_path: Path) -> MakeProject:
    """`make_project(**overrides)`: a new project root under tmp_path with the trained registry copied in and
    params.yaml written with the dotted `overrides` (e.g. `{"serve.log_timeout_s": 1.0}`); its Workspace."""
    count = iter(range(1000))

    def make(overrides: dict[str, Any] | None = None) -> Workspace:
        root = tmp_path / f"project-{next(count)}"
        source = trained.workspace
        params = with_overrides(source.params, overrides or {})
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        ws = Workspace.open(root)
        shutil.copytree(source.registry, ws.registry)
        return ws

    return make


@pytest.fixture
def service(make_project: MakeProject) -> Iterator[PredictionService]:
    """The service without HTTP on a fresh copy of the trained project."""
    with PredictionService(make_project()) as service:
        yield service
