"""The pipeline as Prefect deployments on a real Prefect server: register, trigger through the API, watch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from .prefect_harness import deployed, flow_run_logs, run_deployed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _trigger(api_url: str, project: Path, tmp_path: Path, parameters: dict):
    """Serve the project's deployments, trigger `pipeline`, wait; returns (flow run, its logs)."""
    with deployed(project, api_url, tmp_path, "pipeline/pipeline"):
        flow_run = run_deployed("pipeline/pipeline", {"workspace": str(project), **parameters})
        return flow_run, flow_run_logs(flow_run.id)


def test_deployed_pipeline_runs_through_the_server(prefect_api, project, tmp_path):
    flow_run, logs = _trigger(prefect_api, project, tmp_path, {"targets": ["split"]})
    assert flow_run.state.is_completed(), logs
    for name in ("train", "valid", "test"):
        assert (project / f"data/split/{name}.parquet").exists()
    assert "split: train 14491 rows" in logs  # each stage's own output reaches the Prefect logs
    assert json.loads((project / "metrics/data.json").read_text())["rows_out"] == 17379


def test_failed_validation_fails_the_run_with_its_message(prefect_api, project, tmp_path):
    suite_path = project / "expectations/clean.json"
    original = suite_path.read_text()
    suite = json.loads(original)
    for expectation in suite["expectations"]:
        if expectation["kwargs"].get("column") == "temp" and "max_value" in expectation["kwargs"]:
            expectation["kwargs"]["max_value"] = 0.5
    suite_path.write_text(json.dumps(suite, indent=2))
    flow_run, logs = _trigger(prefect_api, project, tmp_path, {"targets": ["split"]})
    assert flow_run.state.is_failed()
    assert "expect_column_values_to_be_between failed on column 'temp'" in logs
    assert not (project / "data/split/train.parquet").exists()  # later stages did not run

    suite_path.write_text(original)  # the fix; the next run resumes from the failed stage
    flow_run, logs = _trigger(prefect_api, project, tmp_path, {"targets": ["split"]})
    assert flow_run.state.is_completed(), logs
    for name in ("ingest", "validate_raw", "clean"):
        assert f"{name} is up to date: skipped" in logs
    # hum and windspeed may be missing in clean (the model fills them): no not-null expectation for them
    assert "validate_clean: 33/33 expectations passed" in logs


def test_retrain_while_the_workspace_is_busy_is_skipped_not_failed(prefect_api, project, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(project / "flows"))
    from retrain import retrain

    from evergreen.orchestration.dag import workspace_lock
    from evergreen.workspace import Workspace

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        with workspace_lock(Workspace.open(project).run_lock):
            state = retrain(workspace=str(project), return_state=True)
        logs = flow_run_logs(state.state_details.flow_run_id)
    assert state.is_completed()
    assert state.result() == {"retrain": "skipped"}
    assert "retrain skipped: another run holds" in logs
