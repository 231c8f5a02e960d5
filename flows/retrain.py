"""Prefect flow `retrain`: land feedback and new arrivals, rebuild the pipeline, let the gate decide.

One retrain at a time per workspace: a trigger that finds another run holding the workspace is skipped with a
log line (it does not queue up and never fails on DVC's lock). A failed retrain leaves the champion serving and
is recorded in the decisions log. A promotion is committed to git (when the workspace is a repository) and its
data pushed to the DVC remote, so the champion can be rebuilt.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from evergreen.config import load_params
from evergreen.errors import EvergreenError
from evergreen.monitoring.feedback import STATE, land_feedback
from evergreen.monitoring.policy import append_entry
from evergreen.orchestration.dag import WorkspaceBusy, workspace_lock
from evergreen.orchestration.promotion import commit_promotion, promotion_outcome, push_data, record_commit
from evergreen.orchestration.tasks import run_dvc_pipeline, version_arrivals
from evergreen.registry.store import Registry
from evergreen.serving.log import read_log


@task
def land_labelled_feedback(workspace: str) -> str | None:
    """Labelled predictions become a new batch in the landing folder."""
    root = Path(workspace)
    params = load_params(root / "params.yaml")
    log = read_log(root / params.serve.log_path, data=params.data)
    path, batch = land_feedback(log, params.data, root / params.data.incoming, root / STATE)
    logger = get_run_logger()
    logger.info("landed %d labelled row(s) to %s", batch.rows.height, path or "nowhere (nothing new)")
    if batch.without_id:
        logger.warning("%d labelled row(s) were not landed: their requests did not send the id", batch.without_id)
    return str(path) if path else None


@flow(name="retrain")
def retrain(workspace: str = ".", reason: str = "scheduled") -> dict[str, str]:
    """Retrain from everything that arrived; returns {stage: ran|skipped} or {"retrain": "skipped"}."""
    root = Path(workspace).resolve()
    logger = get_run_logger()
    params = load_params(root / "params.yaml")
    decisions = root / params.monitor.decisions
    try:
        with workspace_lock(root, wait=False):
            logger.info("retrain (%s)", reason)
            land_labelled_feedback(str(root))
            version_arrivals(str(root), params.data.incoming)
            try:
                outcome = run_dvc_pipeline(root)
            except Exception as exc:
                # the champion keeps serving; the policy sees this entry and does not retry every run
                append_entry(
                    decisions,
                    {"kind": "retrain_result", "status": "failed", "reason": reason, "error": str(exc).splitlines()[0]},
                )
                raise
            promotion = promotion_outcome(root)
            result = {
                "kind": "retrain_result",
                "status": "promoted" if promotion["promoted"] else "not promoted",
                "version": promotion.get("version"),
                "reasons": promotion.get("reasons", []),
            }
            if promotion["promoted"]:
                try:
                    commit = commit_promotion(root, promotion["version"], promotion.get("reasons", []))
                    pushed = push_data(root)
                except EvergreenError as exc:
                    logger.warning("promoted %s, but it is not pinned in git/DVC: %s", promotion["version"], exc)
                    commit, pushed = None, f"not pushed: {exc}"
                record_commit(Registry(root / params.promote.registry_dir), promotion["version"], commit, pushed)
                result |= {"git_commit": commit, "data_push": pushed}
                logger.info("promoted %s (commit %s; %s)", promotion["version"], commit, pushed)
            append_entry(decisions, result)
            return outcome
    except WorkspaceBusy as busy:
        logger.warning("retrain skipped: %s", busy)
        return {"retrain": "skipped"}


if __name__ == "__main__":
    retrain()
