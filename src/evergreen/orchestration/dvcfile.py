"""`dvc.yaml` read as plain YAML: the stage list and each stage's declared deps, without importing DVC.

`dvc.yaml` is the only list of stages. The CLI checks a stage name against it (cheaply: DVC calls
`evergreen stage NAME` once per stage), and a test compares each stage's imports with the deps listed here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from evergreen.errors import EvergreenError

__all__ = ["STAGE_LOG_ENV", "declared_deps", "declared_stages"]

STAGE_LOG_ENV = "EVERGREEN_STAGE_LOG"  # set by an orchestrator: a stage command copies its output lines there


def _stages(dvc_yaml: Path) -> dict:
    try:
        stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages")
    except (OSError, yaml.YAMLError) as exc:
        raise EvergreenError(f"{dvc_yaml}: cannot read the pipeline: {exc}") from None
    if not isinstance(stages, dict) or not stages:
        raise EvergreenError(f"{dvc_yaml}: declares no stages")
    return stages


def declared_stages(dvc_yaml: Path) -> list[str]:
    """The stage names `dvc.yaml` declares, in file order."""
    return list(_stages(dvc_yaml))


def declared_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """Each stage's `deps` as written (paths relative to the project root; `${...}` left unresolved)."""
    return {name: [str(d) for d in (stage.get("deps") or [])] for name, stage in _stages(dvc_yaml).items()}
