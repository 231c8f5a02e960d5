"""Prefect flow `pipeline`: the DVC DAG from `dvc.yaml`, one task per stage, in DVC's own order.

DVC decides what is up to date (those tasks end `Skipped`); each stage's output goes to the Prefect logs.
`set_params` works like `dvc exp run -S key=value`: the overrides are validated, then written to params.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from evergreen.orchestration.dag import workspace_lock
from evergreen.orchestration.tasks import run_dvc_pipeline
from evergreen.workspace import Workspace


@flow(name="pipeline")
def pipeline(
    workspace: str = ".", targets: list[str] | None = None, set_params: dict[str, Any] | None = None
) -> dict[str, str]:
    """Bring the pipeline (or `targets` and what they need) up to date; returns {stage: ran|skipped}."""
    root = Path(workspace).resolve()
    # one orchestrated run per workspace: DVC's repository lock would fail a second concurrent `repro`
    with workspace_lock(Workspace.open(root).run_lock, wait=True):
        return run_dvc_pipeline(root, targets, set_params)


if __name__ == "__main__":
    pipeline()
