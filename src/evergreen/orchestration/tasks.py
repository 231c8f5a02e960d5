"""Prefect tasks: thin wrappers over the DVC helpers, shared by the flows in `flows/`.

Task names are the DVC stage names. Retries come from `orchestration.retries`, so only the stages that touch
the outside world (reading the source) retry; pure computation does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from evergreen.orchestration.dag import changed_stages, open_repo, pipeline_stages, run_stage
from evergreen.orchestration.landing import version_landing
from evergreen.orchestration.overrides import apply_overrides
from evergreen.workspace import Workspace

if TYPE_CHECKING:
    from evergreen.dvc_adapter import Repo

SKIPPED = "Skipped"


@task(cache_policy=NO_CACHE)  # a stage's inputs are files DVC hashes, not task arguments
def dvc_stage(repo: Repo, name: str, known_up_to_date: bool) -> State | str:
    """Run one DVC stage unless DVC finds it up to date; then the task ends in a `Skipped` state."""
    logger = get_run_logger()
    if known_up_to_date or not run_stage(repo, name, on_line=logger.info):
        logger.info("%s is up to date: skipped", name)
        return Completed(name=SKIPPED, message=f"{name} is up to date", data="skipped")
    return "ran"


@task(retries=2, retry_delay_seconds=5)
def version_arrivals(workspace: str, incoming: str) -> str:
    """Version the landing folder with DVC so each arrival is a new raw-data version."""
    output = version_landing(Path(workspace), incoming)
    get_run_logger().info("landing folder %s versioned: %s", incoming, output or "no change")
    return output


def run_dvc_pipeline(
    root: Path, targets: list[str] | None = None, set_params: dict[str, Any] | None = None
) -> dict[str, str]:
    """Run the DAG stage by stage in DVC's order inside the current flow; returns {stage: ran|skipped}.

    A failing stage raises with that stage's message, so the flow fails and later stages do not run.
    """
    apply_overrides(root / "params.yaml", set_params or {})
    config = Workspace.open(root).params.orchestration
    outcome: dict[str, str] = {}
    with open_repo(root) as repo:
        changed = changed_stages(repo)
        for name in pipeline_stages(repo, targets):
            stage_task = dvc_stage.with_options(
                name=name,
                task_run_name=name,
                retries=config.retries.get(name, 0),
                retry_delay_seconds=config.retry_delay_seconds,
            )
            # until a stage runs, the up-front check holds; after that DVC re-checks each stage itself
            known_up_to_date = name not in changed and "ran" not in outcome.values()
            state = stage_task(repo, name, known_up_to_date, return_state=True)
            state.result()  # raises the stage's error
            outcome[name] = "skipped" if state.name == SKIPPED else "ran"
    return outcome


@task(cache_policy=NO_CACHE)  # a study's trials are in its database, not in task arguments
def tune_worker(workspace: str, overrides: dict[str, Any] | None = None, threads: int | None = 1) -> dict[str, Any]:
    """One worker of the shared Optuna study, on whichever process the task runner (Dask) gives it."""
    from evergreen.tuning.study import run_worker  # torch and Optuna: only in the processes that tune

    return run_worker(workspace, overrides, threads)
