"""Where an artefact came from: the code version and the data hashes DVC recorded for it."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from evergreen.params_file import load_plain

__all__ = ["code_version", "data_hashes", "read_data_hashes"]


def data_hashes(lock: dict[str, Any]) -> dict[str, str]:
    """The md5 of every data dependency of the `train` stage recorded in a parsed dvc.lock."""
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    entries = stages.get("train", {}).get("deps", []) or stages.get("split", {}).get("outs", [])
    return {e["path"]: e["md5"] for e in entries if str(e.get("path", "")).startswith("data/") and "md5" in e}


def read_data_hashes(dvc_lock: Path) -> dict[str, str]:
    """`data_hashes` of a dvc.lock file; empty when the pipeline has not been locked yet."""
    # DVC writes dvc.lock in YAML 1.2 (ruamel), with params values in it: read it with the same YAML
    return data_hashes(load_plain(dvc_lock.read_text()) or {}) if dvc_lock.exists() else {}


def code_version(root: Path) -> dict[str, str | None]:
    """The git commit of the project at `root` (None outside git) and the installed package version."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None  # not a git checkout, or no commit yet
    try:
        version = metadata.version("evergreen-ml")
    except metadata.PackageNotFoundError:
        version = None
    return {"git_commit": commit, "package_version": version}
