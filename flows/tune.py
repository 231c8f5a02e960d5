"""Prefect flow `tune`: an Optuna study whose workers are Prefect tasks on the Dask task runner.

The study lives in `tune.storage` (SQLite in the project, or PostgreSQL), so this flow, `evergreen tune` and
`evergreen tune --worker` on other machines all add trials to the same study. `dask_address` sends the worker
tasks to an existing Dask cluster (`tcp://scheduler:8786`) instead of local processes; its workers must see the
project folder and, for more than one machine, a PostgreSQL storage.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect_dask import DaskTaskRunner

from evergreen.orchestration.tasks import tune_worker
from evergreen.tuning.run import finish
from evergreen.tuning.study import open_study, workspace_with


@flow(name="tune-workers")
def tune_workers(workspace: str, count: int, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """`count` worker tasks at once, one per Dask worker process; returns each one's pid and trial count."""
    futures = [tune_worker.submit(workspace, overrides, 1) for _ in range(count)]
    return [future.result() for future in futures]


@flow(name="tune")
def tune(
    workspace: str = ".", workers: int | None = None, n_trials: int | None = None, dask_address: str | None = None
) -> dict[str, Any]:
    """Run the study up to n_trials with `workers` Dask worker processes; returns the study's summary."""
    chosen = {"tune.workers": workers, "tune.n_trials": n_trials}
    overrides = {k: v for k, v in chosen.items() if v is not None}
    ws = workspace_with(workspace, overrides)
    open_study(ws)  # created once here, before the workers race for it
    count = ws.params.tune.workers
    # the worker processes report to this run's API: the server's, or without one the temporary server this
    # process started (each would otherwise start a temporary server of its own)
    api = {"PREFECT_API_URL": str(get_client(sync_client=True).api_url)}
    cluster = {"n_workers": count, "threads_per_worker": 1, "processes": True, "dashboard_address": None, "env": api}
    runner = DaskTaskRunner(address=dask_address) if dask_address else DaskTaskRunner(cluster_kwargs=cluster)
    ran = tune_workers.with_options(task_runner=runner)(str(ws.root), count, overrides)
    outcome = finish(str(ws.root), overrides)
    logger = get_run_logger()
    for worker in ran:
        logger.info("worker %s:%s ran %d trial(s)", worker["host"], worker["pid"], worker["trials"])
    for line in outcome.lines:
        logger.info(line)
    return outcome.summary.to_dict()


if __name__ == "__main__":
    tune()
