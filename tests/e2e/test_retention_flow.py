"""The `monitor` flow applies the log retention (issue 19), under a real (ephemeral) Prefect API."""

from __future__ import annotations

import datetime as dt
import sys

import pytest
import yaml

from evergreen.prediction_log.read import read_log
from evergreen.prediction_log.writer import PredictionLog, log_rows
from evergreen.workspace import Workspace
from tests.e2e.prefect_harness import prefect_env
from tests.harness import ROOT, run_command

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_monitor_flow_deletes_what_is_past_the_retention_before_it_reads(tmp_path, tiny_raw):
    """Promise: each run of the scheduled `monitor` flow deletes the predictions older than
    `serve.log_retention_days` first (here the run then fails: there is no champion to monitor)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump({**tiny_raw, "serve": {"log_retention_days": 7}}))
    ws = Workspace.open(project)
    now = dt.datetime.now(dt.UTC)
    log = PredictionLog(ws.prediction_log_location)
    for request_id, age in (("old", dt.timedelta(days=30)), ("new", dt.timedelta(0))):
        stamp = (now - age).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record = {"id": 1, "day": "2024-01-01", "hr": 1, "weather": 1, "temp": 0.5, "hum": 0.5}
        log.write(log_rows(request_id, stamp, "v1", [record], [1.0]))
    log.close()
    done = run_command(
        project,
        sys.executable,
        ROOT / "flows" / "monitor.py",
        # the ephemeral API starts in ~8 s, far longer on a loaded machine
        env=prefect_env(tmp_path / "prefect") | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"},
        check=False,
        timeout=300,
    )
    assert "no champion" in done.stdout, done.stdout
    assert read_log(ws.prediction_log_location)["request_id"].to_list() == ["new"]
