"""End-to-end fixtures: a throwaway copy of the project (its own git and DVC repository) and a runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)  # where `evergreen` and `dvc` are installed


def _project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    return [f for f in listed if (ROOT / f).is_file() and not f.startswith(("tests/", "bench/"))]


Runner = Callable[..., subprocess.CompletedProcess]


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(
        GIT_AUTHOR_NAME="evergreen-test",
        GIT_AUTHOR_EMAIL="test@evergreen.invalid",
        GIT_COMMITTER_NAME="evergreen-test",
        GIT_COMMITTER_EMAIL="test@evergreen.invalid",
    )
    return env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project's tracked files, committed in a new git repository."""
    dest = tmp_path / "project"
    for name in _project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
        target.chmod(0o644 | (target.stat().st_mode & 0o111))
    (dest / "data" / "incoming").mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=dest, check=True, env=_env())
    return dest


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


def ran_stages(output: str) -> list[str]:
    """The stages `dvc repro` actually ran, in order, read off its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
