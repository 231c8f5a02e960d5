"""Prefect flow `retrain`: land feedback and new arrivals, rebuild the pipeline, let the gate decide.

One retrain at a time per workspace: a trigger that finds another run holding the workspace is skipped with a
log line (it does not queue up and never fails on DVC's lock). A failed retrain leaves the champion serving and
is recorded in the decisions log. A promotion is committed to git (when the workspace is a repository) and its
data pushed to the DVC remote, so the champion can be rebuilt.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from evergreen.artifacts.decisions import RetrainResult, append_entry
from evergreen.errors import EvergreenError, WorkspaceBusy
from evergreen.monitoring.feedback import land_feedback
from evergreen.orchestration.dag import workspace_lock
from evergreen.orchestration.promotion import commit_promotion, promotion_outcome, push_data, record_commit
from evergreen.orchestration.tasks import run_dvc_pipeline, version_arrivals
from evergreen.prediction_log.read import read_log
from evergreen.registry.shadow import record_replaced
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace


@task
def land_labelled_feedback(workspace: str) -> str | None:
    """Labelled predictions become a new batch in the landing folder."""
    ws = Workspace.open(workspace)
    log = read_log(ws.prediction_log_location, data=ws.params.data)
    path, batch = land_feedback(log, ws.params.data, ws.incoming, ws.feedback_state)
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
    ws = Workspace.open(root)
    params, decisions = ws.params, ws.decisions
    try:
        with workspace_lock(ws.run_lock, wait=False):
            logger.info("retrain (%s)", reason)
            land_labelled_feedback(str(root))
            version_arrivals(str(root), params.data.incoming)
            try:
                outcome = run_dvc_pipeline(root)
            except Exception as exc:
                # the champion keeps serving; the policy sees this entry and does not retry every run
                error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                append_entry(decisions, RetrainResult(status="failed", reason=reason, error=error))
                raise
            promotion = promotion_outcome(ws.promotion_metrics)
            result = RetrainResult(
                status="promoted" if promotion.promoted else "shadow" if promotion.shadow else "not promoted",
                reason=reason,
                version=promotion.version,
                reasons=promotion.reasons,
            )
            if promotion.promoted and promotion.version:
                try:
                    commit = commit_promotion(root, promotion.version, promotion.reasons)
                    pushed = push_data(root)
                except EvergreenError as exc:
                    logger.warning("promoted %s, but it is not pinned in git/DVC: %s", promotion.version, exc)
                    commit, pushed = None, f"not pushed: {exc}"
                record_commit(Registry(ws.registry), promotion.version, commit, pushed)
                result = result.model_copy(update={"git_commit": commit, "data_push": pushed})
                logger.info("promoted %s (commit %s; %s)", promotion.version, commit, pushed)
            append_entry(decisions, result)
            if promotion.shadow:  # a shadow it replaced before its verdict gets a decision of its own
                for ended in record_replaced(ws):
                    logger.info("shadow %s: replaced by %s before its verdict", ended.version, ended.replaced_by)
            return outcome
    except WorkspaceBusy as busy:
        logger.warning("retrain skipped: %s", busy)
        return {"retrain": "skipped"}


if __name__ == "__main__":
    retrain()
