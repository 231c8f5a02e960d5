"""Prefect in production: the Prefect server backed by PostgreSQL (its documented production database), on a
throwaway cluster. Deploy, run the pipeline through the server, see the run completed, in PostgreSQL's tables."""

from __future__ import annotations

import psycopg
import pytest

from .prefect_harness import deployed, flow_run_logs, prefect_server, run_deployed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_pipeline_runs_through_a_prefect_server_on_postgresql(postgres, project, tmp_path):
    postgres.create_database("prefect")
    database = {"PREFECT_API_DATABASE_CONNECTION_URL": postgres.url("prefect", driver="asyncpg")}
    with (
        prefect_server(tmp_path / "server-home", env=database) as api_url,
        deployed(project, api_url, tmp_path, "pipeline/pipeline"),
    ):
        flow_run = run_deployed("pipeline/pipeline", {"workspace": str(project), "targets": ["split"]}, timeout=300)
        logs = flow_run_logs(flow_run.id)
    assert flow_run.state.is_completed(), logs
    assert (project / "data/split/train.parquet").exists()

    # the server kept the run in PostgreSQL, not in a SQLite file under its PREFECT_HOME
    with psycopg.connect(postgres.url("prefect")) as connection:
        state, name = connection.execute(
            "SELECT state_type, name FROM flow_run WHERE id = %s", (flow_run.id,)
        ).fetchone()
        deployments = {row[0] for row in connection.execute("SELECT name FROM deployment")}
    assert state == "COMPLETED" and name == flow_run.name
    assert {"pipeline", "retrain", "monitor", "tune"} <= deployments
    assert not list((tmp_path / "server-home").glob("*.db"))
