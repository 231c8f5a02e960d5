"""The whole loop against real parts: a served champion, drift injected through the service, the monitor
deployment on a real Prefect server deciding to retrain, the drift event triggering the retrain deployment
exactly once, the gate promoting the new model, and the running service switching to it.

Training is shrunk (a few epochs, one ensemble member) so the test is about the loop, not the model.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import polars as pl
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import StateType

from evergreen.orchestration.overrides import apply_overrides
from evergreen.orchestration.promotion import DRIFT_EVENT
from tests.harness import BIN, GIT_IDENTITY, free_port, wait_until

from .prefect_harness import background, deployed, flow_run_logs, prefect_env, prefect_server, run_deployed
from .workspace import FAST_TRAINING

# the project copy starts with its data stages run (`data_stages_run`); the retrain runs them on its new arrival
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("data_stages_run")]

FAST = {
    **FAST_TRAINING,
    "promote.champion_margin": 0.5,  # the loop is under test here; the gate's margins have their own tests
    "monitor.policy.drift_share": 0.2,
    "monitor.policy.consecutive": 1,
    "serve.reload_interval_s": 0.5,
}


def _drifted_records(project: Path, n: int = 300) -> tuple[list[dict], list[int]]:
    """Real training-period rows with new ids and a storm's weather: hot, humid, windy, heavy rain."""
    rows = pl.read_parquet(project / "data/split/train.parquet").tail(n)
    drifted = rows.with_columns(
        (pl.col("instant") + 100_000).alias("instant"),
        pl.lit(0.95).alias("temp"),
        pl.lit(0.9).alias("atemp"),
        pl.lit(0.97).alias("hum"),
        pl.lit(0.6).alias("windspeed"),
        pl.lit(3).alias("weathersit"),
    )
    columns = [
        "instant",
        "dteday",
        "season",
        "yr",
        "mnth",
        "hr",
        "holiday",
        "weekday",
        "workingday",
        "weathersit",
        "temp",
        "atemp",
        "hum",
        "windspeed",
    ]
    return drifted.select(columns).with_columns(pl.col("dteday").cast(pl.String)).to_dicts(), rows["cnt"].to_list()


async def _flow_runs(flow_name: str) -> list:
    """Runs of a flow that have started (the cron schedule also parks future runs as Scheduled)."""
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return [r for r in runs if r.state_type != StateType.SCHEDULED]


def test_drift_triggers_exactly_one_retrain_which_the_service_then_serves(project, run, tmp_path):
    apply_overrides(project / "params.yaml", FAST)
    run("dvc", "repro")
    assert (project / "models/registry/CHAMPION").read_text().strip() == "v1"

    port = free_port()
    service_env = prefect_env(tmp_path / "service-home")
    with (
        background(
            [str(BIN / "evergreen"), "serve", "--port", str(port)], project, service_env, tmp_path / "serve.log"
        ),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        wait_until(lambda: _healthy(http), 60, "the service to start", detail=lambda: _tail(tmp_path / "serve.log"))
        records, labels = _drifted_records(project)
        for start in range(0, len(records), 100):
            answer = http.post("/predict", json={"records": records[start : start + 100]}).json()
            assert answer["model_version"] == "v1"
            http.post("/feedback", json={"request_id": answer["request_id"], "labels": labels[start : start + 100]})

        with (
            # a server of its own, not the session's: it counts the retrain runs the server has seen
            prefect_server(tmp_path / "prefect-server") as api_url,
            deployed(project, api_url, tmp_path, "monitor/monitor", "retrain/retrain", env=GIT_IDENTITY) as log,
        ):
            monitor_run = run_deployed("monitor/monitor", {"workspace": str(project)}, timeout=300)
            assert monitor_run.state.is_completed()
            decisions = [json.loads(line) for line in (project / "monitoring/decisions.jsonl").read_text().splitlines()]
            assert decisions[-1]["action"] == "retrain", decisions[-1]
            assert {"temp", "hum", "windspeed", "weathersit"} <= set(decisions[-1]["drifted_features"])

            # the event reaches the retrain deployment's trigger; the retrain runs to the end
            retrain_run = wait_until(
                lambda: next((r for r in asyncio.run(_flow_runs("retrain")) if r.state.is_final()), None),
                600,
                "a triggered retrain run to finish",
                interval=2,
                detail=lambda: _tail(log),
            )
            assert retrain_run.state.is_completed(), log.read_text()[-3000:]

            # a second monitor run in the same drift episode does not start another retrain
            second = run_deployed("monitor/monitor", {"workspace": str(project)}, timeout=300)
            assert second.state.is_completed()
            # only the monitor's event starts a retrain: once all of the second run's logs are on the
            # server, they show whether it emitted one, so no wrongly triggered retrain can still be coming
            second_logs = flow_run_logs(second.id)
            assert "decision: " in second_logs and "decision: retrain" not in second_logs, second_logs
            assert f"emitted {DRIFT_EVENT}" in flow_run_logs(monitor_run.id)  # what the check looks for
            assert f"emitted {DRIFT_EVENT}" not in second_logs, second_logs
            assert len(asyncio.run(_flow_runs("retrain"))) == 1

        promotion = json.loads((project / "metrics/promotion.json").read_text())
        assert promotion["promoted"] and promotion["champion_after"] == "v2", promotion["reasons"]
        card = json.loads((project / "models/registry/v2/model_card.json").read_text())
        assert card["git_commit"]  # the workspace is a git repository: the promotion was committed
        landed = list((project / "data/incoming").glob("feedback-*.parquet"))
        assert len(landed) == 1 and pl.read_parquet(landed[0]).height == len(records)
        # the running service picked the new champion up by itself
        wait_until(
            lambda: http.get("/model").json().get("version") == "v2",
            60,
            "the service to switch to v2",
            detail=lambda: _tail(tmp_path / "serve.log"),
        )
        answer = http.post("/predict", json={"records": records[:1]}).json()
        assert answer["model_version"] == "v2"


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text()[-chars:] if log.exists() else f"({log} not written)"
