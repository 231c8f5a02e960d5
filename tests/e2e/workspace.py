"""A throwaway copy of the project: its tracked (and not ignored) files, in a fresh git repository; light
training params for runs that are about the pipeline, not the model; and what `dvc repro` ran. (The git
identity and the environment for commands in a copy are `tests.harness.GIT_IDENTITY` and `command_env`.)

Used by the end-to-end and fault tests and by the benchmarks that run the real pipeline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.harness import GIT_IDENTITY, ROOT

# light training for tests about the lifecycle, not the model: a few epochs, one ensemble member
FAST_TRAINING = {
    "train.epochs": 4,
    "train.patience": 4,
    "model.ensemble": 1,
    "model.hidden": [64, 64],
    # a few epochs do not beat gradient boosting; the baseline check has its own unit tests
    "promote.baseline": "mean",
    # and so the mean is the only baseline fitted: the others (gradient boosting above all) took about 16 s of
    # every `evaluate`'s 22 on the bundled data, and nothing about the lifecycle reads them
    "evaluate.baselines": ["mean"],
}


def project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    return [f for f in listed if (ROOT / f).is_file() and not f.startswith(("tests/", "bench/"))]


def copy_project(dest: Path) -> Path:
    """Copy the project into `dest` and commit it there; returns `dest`."""
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
        target.chmod(0o644 | (target.stat().st_mode & 0o111))  # shared/ copies arrive read-only
    (dest / "data" / "incoming").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **GIT_IDENTITY}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=dest, check=True, env=env, capture_output=True)
    return dest


def copy_built(source: Path, dest: Path) -> Path:
    """Copy a project copy that has already run stages (its git and DVC state, outputs and cache) to `dest`;
    returns `dest`. `dvc` there sees the same lock file and outputs, so what ran in `source` is up to date."""
    return Path(shutil.copytree(source, dest, symlinks=True))


def ran_stages(output: str) -> list[str]:
    """The stages `dvc repro` actually ran, in order, read off its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
