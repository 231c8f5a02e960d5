"""Shadow challengers end to end (issue 12, item 3): the real promote stage puts a challenger that passed the
offline gate in the shadow, a real `evergreen serve` scores every request with both and answers with the
champion, labels arrive through /feedback, and the shadow gate (run by `evergreen monitor`, and by
`evergreen shadow --check`) promotes a better challenger, after which the service answers with it, and
discards a worse one, after which the champion stays.

The models are the tiny trained one (`tests.service_harness.build_project`) and the same graph with its
predictions doubled (a much worse model on the true targets). Only their roles are arranged: the doubled graph
is promoted first, by the promote stage as the first model, so the trained one has a champion to beat.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml

from evergreen.artifacts.decisions import ShadowDecision, read_history
from evergreen.artifacts.reports import PromotionReport
from evergreen.inference import servable
from evergreen.prediction_log.read import read_shadow_pairs
from evergreen.registry.store import Registry
from evergreen.stages import promote as promote_stage
from evergreen.workspace import Workspace
from tests.harness import run_command, wait_until
from tests.service_harness import AUTH, BIN, MAX_BATCH, Project, build_project, running_server, wait_for_health

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIN_LABELS = 100


def _configure(project: Project) -> Workspace:
    """Turn the shadow on, let the tiny model pass the baseline check (3 epochs on 500 rows does not beat a
    tuned baseline; the champion check is what this test is about), mark the data suites passed (the
    validation stages did not run), and start with an empty registry."""
    path = project.root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["promote"] = {"shadow": {"min_labels": MIN_LABELS, "max_wait_hours": 24}, "baseline_margin": 100.0}
    raw["monitor"] = {"policy": {"min_rows": 1}}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    ws = Workspace.open(project.root)
    for suite in ("raw", "clean"):
        ws.validation_report(suite).parent.mkdir(parents=True, exist_ok=True)
        ws.validation_report(suite).write_text('{"critical_success": true}')
    shutil.rmtree(ws.registry)
    return ws


def _promote_stage(ws: Workspace, graph: Path) -> PromotionReport:
    """The real promote stage on `graph` as the exported challenger."""
    trained = ws.root / "trained.onnx"
    if not trained.exists():
        shutil.copy2(ws.onnx_model, trained)
    shutil.copy2(graph, ws.onnx_model)
    promote_stage.run(ws)
    return PromotionReport.read(ws.promotion_metrics)


def _evergreen(ws: Workspace, *args: str) -> str:
    """What `evergreen <args>` printed (stdout and stderr) in the project; it must succeed."""
    return run_command(ws.root, BIN / "evergreen", *args).stdout


def _wait_for(client: httpx.Client, **expected: Any) -> dict[str, Any]:
    def reported(health: dict[str, Any]) -> bool:
        return all(health.get(key) == value for key, value in expected.items())

    return wait_for_health(client, reported, f"the service to report {expected}", timeout=15)


def _wait_for_pairs(ws: Workspace, version: str, rows: int) -> None:
    def found() -> int:
        return read_shadow_pairs(ws.prediction_log_location, version, ws.params.data).height

    wait_until(
        lambda: found() >= rows,
        15,
        f"{rows} labelled records with a shadow answer from {version}",
        interval=0.05,
        detail=lambda: f"{found()} found",
    )


def _traffic(client: httpx.Client, project: Project, start: int, stop: int, champion: str) -> list[dict[str, Any]]:
    """Score test records [start, stop) in requests of MAX_BATCH, check each answer came from `champion`, then
    label them with their true targets through /feedback; the answers."""
    answers = []
    for first in range(start, stop, MAX_BATCH):
        rows = project.test.slice(first, min(MAX_BATCH, stop - first))
        response = client.post("/predict", json={"records": project.records(rows)})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model_version"] == champion and len(answer["predictions"]) == rows.height
        feedback = client.post("/feedback", json={"request_id": answer["request_id"], "labels": rows["y"].to_list()})
        assert feedback.status_code == 200 and feedback.json()["labelled"] == rows.height, feedback.text
        answers.append(answer)
    return answers


def test_a_better_challenger_is_promoted_from_the_shadow_and_a_worse_one_discarded(tmp_path: Path):
    project = build_project(tmp_path)
    ws = _configure(project)
    registry = Registry(ws.registry)
    doubled, trained = ws.root / "doubled.onnx", ws.root / "trained.onnx"

    # the first model ever becomes the champion directly, shadow or not
    first = _promote_stage(ws, doubled)
    assert first.promoted and not first.shadow and registry.champion() == "v1" and registry.shadow() is None

    with running_server(ws.root) as (url, _), httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        assert "shadow_version" not in client.get("/health").json()

        # a better challenger passes the offline gate and goes to the shadow, not to the champion
        second = _promote_stage(ws, trained)
        assert second.promote and second.shadow and not second.promoted and second.version == "v2"
        assert (registry.champion(), registry.shadow()) == ("v1", "v2")
        _wait_for(client, model_version="v1", shadow_version="v2")  # loaded beside the champion
        assert client.get("/model").json()["shadow_version"] == "v2"

        answers = _traffic(client, project, 0, MAX_BATCH, champion="v1")
        _wait_for_pairs(ws, "v2", MAX_BATCH)  # the shadow scores on its own thread, after the answer
        waiting = _evergreen(ws, "shadow")
        assert f"shadow v2 vs champion v1: waiting ({MAX_BATCH} of {MIN_LABELS} labelled records" in waiting
        # the champion answered; the shadow's answers are in the log, paired with the champion's and the labels
        pairs = read_shadow_pairs(ws.prediction_log_location, "v2", ws.params.data)
        assert pairs.height == MAX_BATCH and pairs["model_version"].unique().to_list() == ["v1"]
        assert pairs["prediction"].to_list() == pytest.approx(answers[0]["predictions"], rel=1e-6)
        # the doubled graph's answers are twice the shadow's: the same input, each model's own output
        ratio = (pl.Series(answers[0]["predictions"]) / pairs["shadow_prediction"]).to_numpy()
        assert ratio == pytest.approx(2.0, rel=1e-4)

        _traffic(client, project, MAX_BATCH, project.test.height, champion="v1")
        _wait_for_pairs(ws, "v2", project.test.height)
        assert "shadow v2: promoted" in _evergreen(ws, "monitor")  # each monitoring run checks the shadow first
        _wait_for(client, model_version="v2")
        assert "shadow_version" not in client.get("/health").json()
        assert (registry.champion(), registry.shadow()) == ("v2", None)
        card = registry.card("v2")["shadow"]
        assert card["outcome"] == "promoted" and card["labelled_rows"] == project.test.height
        assert card["comparison"]["challenger"] < card["comparison"]["champion"]  # RMSE: the shadow was better
        [decision] = [e for e in read_history(ws.decisions) if isinstance(e, ShadowDecision)]
        assert decision.outcome == "promoted" and decision.comparison.rows == project.test.height

        # a worse challenger in the shadow is discarded; the champion stays
        registry.set_shadow("v1", reason="test: a worse challenger", verify=servable(ws.params.data))
        _wait_for(client, model_version="v2", shadow_version="v1")
        _traffic(client, project, 0, project.test.height, champion="v2")
        _wait_for_pairs(ws, "v1", project.test.height)
        checked = _evergreen(ws, "shadow", "--check")
        assert "shadow v1 vs champion v2: discarded" in checked and "worse than champion v2" in checked
        _wait_for(client, model_version="v2")
        assert "shadow_version" not in client.get("/health").json()
        assert (registry.champion(), registry.shadow()) == ("v2", None)
        assert registry.card("v1")["shadow"]["outcome"] == "discarded"
        answer = client.post("/predict", json={"records": project.records()[:1]}).json()
        assert answer["model_version"] == "v2"
    assert _evergreen(ws, "shadow").strip() == "no shadow model: the champion serves alone"
