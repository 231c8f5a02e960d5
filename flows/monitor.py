"""Prefect flow `monitor`: compare the latest prediction-log window with the champion's reference, decide.

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

from evergreen.config import load_params
from evergreen.monitoring.monitor import monitor_once
from evergreen.monitoring.policy import append_entry
from evergreen.orchestration.dag import WorkspaceBusy, workspace_lock
from evergreen.orchestration.deploy import entrypoint
from evergreen.orchestration.promotion import DRIFT_EVENT, workspace_resource


@task(retries=1, retry_delay_seconds=10)
def check_window(workspace: str) -> dict[str, Any]:
    """One monitoring run (reads the prediction log and the registry: outside-world I/O, so one retry)."""
    root = Path(workspace)
    return monitor_once(load_params(root / "params.yaml"), root).to_dict()


def _retrain_running(root: Path) -> bool:
    try:
        with workspace_lock(root, wait=False):
            return False
    except WorkspaceBusy:
        return True


@flow(name="monitor")
def monitor(workspace: str = ".") -> dict[str, Any]:
    """Monitor, decide, and trigger a retrain when the policy says so; returns the decision."""
    root = Path(workspace).resolve()
    logger = get_run_logger()
    decision = check_window(str(root))
    logger.info("decision: %s (%s)", decision["action"], "; ".join(decision["reasons"]))
    if decision["action"] != "retrain":
        return decision
    decisions = root / load_params(root / "params.yaml").monitor.decisions
    if _retrain_running(root):
        logger.warning("a retrain is already running in %s: not starting another", root)
        append_entry(decisions, {"kind": "retrain_result", "status": "skipped: a retrain was already running"})
    elif runtime.deployment.id:
        emit_event(event=DRIFT_EVENT, resource=workspace_resource(root), payload={"reasons": decision["reasons"]})
        logger.info("emitted %s: the retrain deployment's trigger takes it from here", DRIFT_EVENT)
    else:
        retrain = load_flow_from_entrypoint(str(root / entrypoint("retrain")))  # no server: run it here
        retrain(workspace=str(root), reason="; ".join(decision["reasons"]))
    return decision


if __name__ == "__main__":
    monitor()
