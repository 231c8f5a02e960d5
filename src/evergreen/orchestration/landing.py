"""The landing folder as a DVC-versioned input: each arrival becomes a new version of `data/incoming`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from evergreen.errors import EvergreenError


def version_landing(workspace: Path, incoming: str) -> str:
    """Record the landing folder's current content with `dvc add`; returns DVC's output."""
    (workspace / incoming).mkdir(parents=True, exist_ok=True)
    dvc = str(Path(sys.executable).parent / "dvc")
    done = subprocess.run([dvc, "add", incoming], cwd=workspace, capture_output=True, text=True)
    if done.returncode != 0:
        raise EvergreenError(f"dvc add {incoming} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def land_file(source: Path, workspace: Path, incoming: str) -> Path:
    """Copy a file into the landing folder (never overwriting an earlier arrival)."""
    if not source.is_file():
        raise EvergreenError(f"{source}: no such file to land")
    target = workspace / incoming / source.name
    if target.exists():
        raise EvergreenError(f"{target} already exists: give each arrival its own name (e.g. a date)")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return target
