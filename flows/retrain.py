"""Prefect flow `retrain`: take what arrived in the landing folder, rebuild the pipeline, gate the model.

One retrain at a time per workspace: a trigger that finds another run holding the workspace is skipped with a
log line (it does not queue up behind it and never fails on DVC's lock).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from evergreen.config import load_params
from evergreen.orchestration.dag import WorkspaceBusy, workspace_lock
from evergreen.orchestration.tasks import run_dvc_pipeline, version_arrivals


@flow(name="retrain")
def retrain(workspace: str = ".") -> dict[str, str]:
    """Version new arrivals and run the whole pipeline; returns {stage: ran|skipped} or {"retrain": "skipped"}."""
    root = Path(workspace).resolve()
    logger = get_run_logger()
    try:
        with workspace_lock(root, wait=False):
            version_arrivals(str(root), load_params(root / "params.yaml").data.incoming)
            return run_dvc_pipeline(root)
    except WorkspaceBusy as busy:
        logger.warning("retrain skipped: %s", busy)
        return {"retrain": "skipped"}


if __name__ == "__main__":
    retrain()
