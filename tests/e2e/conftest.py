"""End-to-end fixtures: a throwaway copy of the project (its own git and DVC repository) and a runner."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .workspace import command_env, copy_project

Runner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project's tracked files, committed in a new git repository."""
    return copy_project(tmp_path / "project")


@pytest.fixture
def run(project: Path) -> Runner:
    """Run a command in the project copy; returns the completed process (stdout and stderr merged)."""

    def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            args, cwd=project, env=command_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}")
        return done

    return _run
