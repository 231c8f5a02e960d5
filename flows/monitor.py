"""Prefect flow `monitor`: compare the latest prediction-log window with the champion's reference, decide.
Each run first deletes the predictions older than `serve.log_retention_days` (hourly, as deployed).

When the policy says retrain, the retrain goes through Prefect: a monitor run that came from a deployment
emits an `evergreen.drift.detected` event, and the `retrain` deployment has a trigger on it. A monitor run
without a server (ad hoc, ephemeral) runs the retrain flow directly. A retrain already running is never joined
by a second one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.events import emit_event
from prefect.flows import load_flow_from_entrypoint

from evergreen.artifacts.decisions import RetrainDecision, RetrainResult, append_entry
from evergreen.errors import WorkspaceBusy
from evergreen.monitoring.monitor import monitor_once
from evergreen.orchestration.dag import workspace_lock
from evergreen.orchestration.deploy import entrypoint
from evergreen.orchestration.promotion import DRIFT_EVENT, workspace_resource
from evergreen.prediction_log.retention import apply_retention
from evergreen.workspace import Workspace


@task(retries=1, retry_delay_seconds=10)
def check_window(workspace: str) -> RetrainDecision:
    """One monitoring run (reads the prediction log and the registry: outside-world I/O, so one retry)."""
    return monitor_once(Workspace.open(workspace))


@task(retries=1, retry_delay_seconds=10)
def enforce_retention(workspace: str) -> int:
    """Delete the predictions older than `serve.log_retention_days` (none when null); how many went."""
    ws = Workspace.open(workspace)
    deleted = apply_retention(ws.prediction_log_location, ws.params.serve.log_retention_days)
    return 0 if deleted is None else deleted.predictions


def _retrain_running(ws: Workspace) -> bool:
    try:
        with workspace_lock(ws.run_lock, wait=False):
            return False
    except WorkspaceBusy:
        return True


@flow(name="monitor")
def monitor(workspace: str = ".") -> dict[str, Any]:
    """Monitor, decide, and trigger a retrain when the policy says so; returns the decision (as in the log)."""
    root = Path(workspace).resolve()
    logger = get_run_logger()
    deleted = enforce_retention(str(root))  # first: the window is read from what the log may keep
    if deleted:
        logger.info("retention: deleted %d prediction(s) past serve.log_retention_days", deleted)
    decision = check_window(str(root))
    reason = "; ".join(decision.reasons)
    logger.info("decision: %s (%s)", decision.action, reason)
    if decision.action != "retrain":
        return decision.to_dict()
    ws = Workspace.open(root)
    if _retrain_running(ws):
        logger.warning("a retrain is already running in %s: not starting another", root)
        skipped = RetrainResult(status="skipped", reason=reason, reasons=["a retrain was already running"])
        append_entry(ws.decisions, skipped)
    elif runtime.deployment.id:
        emit_event(event=DRIFT_EVENT, resource=workspace_resource(root), payload={"reasons": decision.reasons})
        logger.info("emitted %s: the retrain deployment's trigger takes it from here", DRIFT_EVENT)
    else:
        retrain = load_flow_from_entrypoint(str(root / entrypoint("retrain")))  # no server: run it here
        retrain(workspace=str(root), reason=reason)
    return decision.to_dict()


if __name__ == "__main__":
    monitor()
