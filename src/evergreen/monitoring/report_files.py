"""Persist a monitoring report: its HTML and JSON files, and its snapshot in a local Evidently workspace.

`save_report` writes the snapshot's HTML and JSON, `add_to_workspace` adds it to a local Evidently workspace so
that `evidently ui --workspace DIR` shows the history. What is Evergreen's here: where the files go, the file
lock that keeps two monitor runs apart, and what happens to a workspace file Evidently cannot read (it is set
aside, `open_workspace`). Every call into Evidently goes through `evergreen.monitoring.evidently_adapter`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import filelock

from evergreen.errors import EvergreenError
from evergreen.monitoring.evidently_adapter import (
    Snapshot,
    Workspace,
    add_run,
    damaged_files,
    list_runs,
    load_workspace,
    write_snapshot,
)

# damaged files of the Evidently workspace are moved here (kept for a look, never deleted); Evidently skips a
# folder without a project's metadata.json, so the quarantine inside the workspace is invisible to it and its UI
QUARANTINE = ".quarantine"
_LOCK = ".evergreen.lock"

logger = logging.getLogger("evergreen.monitor")


def save_report(snapshot: Snapshot, html_path: Path | str, json_path: Path | str) -> None:
    """Write the report as a standalone HTML page and as Evidently's JSON (metrics and tests)."""
    for path in (Path(html_path), Path(json_path)):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_snapshot(snapshot, Path(html_path), Path(json_path))


def add_to_workspace(snapshot: Snapshot, workspace_dir: Path | str, project_name: str) -> str:
    """Add the snapshot to the project named `project_name` in a local workspace; return the snapshot id.

    The project (with a dashboard of drift and quality over time) is created on first use and found by name
    afterwards; a file lock keeps two monitor runs from creating it twice.
    """
    root = Path(workspace_dir)
    root.mkdir(parents=True, exist_ok=True)
    # opened under the lock too: Evidently reads every snapshot when it opens a workspace, and one that another
    # run is writing at that moment is torn (and a project that run just created would be created again)
    with filelock.FileLock(str(root / _LOCK)):
        return add_run(open_workspace(root), project_name, snapshot)


def list_snapshots(workspace_dir: Path | str, project_name: str) -> list[str]:
    """Ids of the snapshots the project holds (empty when the project does not exist)."""
    root = Path(workspace_dir)
    root.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(root / _LOCK)):
        return list_runs(open_workspace(root), project_name)


def open_workspace(root: Path) -> Workspace:
    """Evidently's local workspace at `root`, its damaged files set aside first (call with its lock held).

    Evidently reads every project's metadata and every snapshot when it opens a workspace, and one file it
    cannot read (a snapshot cut short by a killed run, a full disk) made every later open raise, so monitoring
    recorded no decision again. Such a file is moved to `root/.quarantine/` with a warning naming it, and the
    workspace opens without it; a project whose metadata is damaged goes there whole, with its snapshots.
    """
    for _ in range(3):  # the damaged files are all found at once; a retry only covers a file damaged meanwhile
        try:
            return load_workspace(root)
        except ValueError as exc:  # JSONDecodeError, Evidently's "malformed", pydantic's ValidationError
            damaged = damaged_files(root, skip=QUARANTINE)
            if not damaged:
                raise EvergreenError(f"{root}: Evidently cannot open this workspace: {_first_line(exc)}") from None
            for path in damaged:
                _quarantine(root, path)
    return load_workspace(root)


def _quarantine(root: Path, path: Path) -> Path:
    """Move `path` (inside `root`) under `root/.quarantine/`, keeping its relative path; returns where it went."""
    target = root / QUARANTINE / path.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    if target.exists():  # the same name set aside before: keep both
        target = target.with_name(f"{target.stem}.{stamp}{target.suffix}")
    path.rename(target)
    what = "project folder (its metadata unreadable; its snapshots with it)" if target.is_dir() else "file"
    logger.warning("Evidently workspace: damaged %s %s moved to %s", what, path, target)
    return target


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
