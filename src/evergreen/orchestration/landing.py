"""The landing folder as a DVC-versioned input: each arrival becomes a new version of `data/incoming`."""

from __future__ import annotations

import shutil
from pathlib import Path

from evergreen import dvc_adapter
from evergreen.data.io import list_landing
from evergreen.errors import EvergreenError


def unversioned_arrivals(folder: Path) -> list[Path]:
    """Landing files that have no DVC pointer (`<file>.dvc`) yet."""
    return [Path(f) for f in list_landing(folder) if not Path(f"{f}.dvc").exists()]


def version_landing(workspace: Path, incoming: str) -> str:
    """`dvc add` each new landing file, so each arrival is versioned and pulled back with its commit.

    Files are tracked one by one (not the folder), so the folder itself stays in git and a fresh clone has it.
    """
    folder = workspace / incoming
    folder.mkdir(parents=True, exist_ok=True)
    new = unversioned_arrivals(folder)
    if not new:
        return "no new arrivals"
    targets = [str(p.relative_to(workspace)) if p.is_absolute() else str(p) for p in new]
    dvc_adapter.add(workspace, targets)
    return f"versioned {len(targets)} new arrival(s): {', '.join(p.name for p in new)}"


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
