"""Prefect deployments built from `orchestration.deployments` in params.yaml.

Deployments without a work pool are *served*: `evergreen deploy` registers them with the Prefect server at
PREFECT_API_URL and stays up to execute their runs (Prefect's `serve`). A deployment with `work_pool` (e.g.
`gpu`) is registered to that pool instead, and runs wherever `prefect worker start --pool gpu` is running with
access to this workspace: that is how training moves to a GPU machine while everything else stays here.
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Cron

from evergreen.config import DeploymentConfig, OrchestrationConfig
from evergreen.orchestration.promotion import DRIFT_EVENT, workspace_resource


def entrypoint(flow_name: str) -> str:
    """The file entrypoint of a flow in `flows/`."""
    return f"flows/{flow_name}.py:{flow_name}"


def _schedule_kwargs(config: DeploymentConfig) -> dict:
    schedules = [Cron(config.cron, timezone=config.timezone)] if config.cron else []
    return {"schedules": schedules, "paused": config.paused}


def drift_trigger(root: Path) -> DeploymentEventTrigger:
    """Run the retrain deployment when this workspace's monitor reports drift."""
    return DeploymentEventTrigger(
        name="retrain on drift",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": workspace_resource(root)["prefect.resource.id"]},
        parameters={"workspace": str(root), "reason": "drift detected by the monitor flow"},
    )


def build_deployments(root: Path, orchestration: OrchestrationConfig) -> tuple[list[RunnerDeployment], list[str]]:
    """Register work-pool deployments now; return the ones to serve, and a line describing each deployment."""
    served: list[RunnerDeployment] = []
    names: list[str] = []
    triggers = {"retrain": [drift_trigger(root)]}
    for flow_name, config in orchestration.deployments.items():
        flow = load_flow_from_entrypoint(str(root / entrypoint(flow_name)))
        parameters = {"workspace": str(root), **config.parameters}
        common = {
            "name": flow_name,
            "parameters": parameters,
            "tags": ["evergreen"],
            "triggers": triggers.get(flow_name),
            **_schedule_kwargs(config),
        }
        if config.work_pool:
            source = flow.from_source(source=str(root), entrypoint=entrypoint(flow_name))
            source.deploy(work_pool_name=config.work_pool, build=False, push=False, **common)
        else:
            served.append(flow.to_deployment(**common))
        where = f"work pool {config.work_pool!r}" if config.work_pool else "served here"
        when = f"cron {config.cron!r} {config.timezone}" if config.cron else "on demand"
        names.append(f"{flow.name}/{flow_name}: {when}, {where}")
    return served, names


def serve_deployments(served: list[RunnerDeployment]) -> None:
    """Serve deployments from this process until it is stopped (Prefect's `serve`)."""
    serve(*served, print_starting_message=False)
