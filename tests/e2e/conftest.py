"""End-to-end fixtures: a throwaway copy of the project (its own git and DVC repository) and a runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .workspace import GIT_IDENTITY, copy_project

BIN = str(Path(sys.executable).parent)  # where `evergreen` and `dvc` are installed


Runner = Callable[..., subprocess.CompletedProcess]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **GIT_IDENTITY}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project's tracked files, committed in a new git repository."""
    return copy_project(tmp_path / "project")


@pytest.fixture
def run(project: Path) -> Runner:
    """Run a command in the project copy; returns the completed process (stdout and stderr merged)."""

    def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            args, cwd=project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}")
        return done

    return _run
