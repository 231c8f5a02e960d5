"""A champion whose graph is corrupt when the service starts (issue 10 c)."""

from __future__ import annotations

import os
import subprocess

import httpx
import onnx
import pytest

from evergreen.errors import ServeError
from evergreen.registry.store import Registry
from evergreen.serving.service import PredictionService
from evergreen.workspace import Workspace
from tests.harness import free_port
from tests.service_harness import AUTH, BIN, running_server, server_env, wait_for_health, wait_for_line

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _corrupt_champion(ws: Workspace) -> str:
    """Register a copy of v1 as a new version, promote it, then truncate its graph (a disk error, a bad copy)."""
    registry = Registry(ws.registry)
    v1 = registry.path("v1")
    graph = onnx.load(str(v1 / "model.onnx"))
    graph.doc_string = "a copy of v1"  # other bytes: the registry takes an identical graph for the same version
    onnx.save(graph, str(ws.root / "copy.onnx"))
    files = {"model.onnx": ws.root / "copy.onnx", "signature.json": v1 / "signature.json"}
    version = registry.add(files, registry.card("v1"))
    registry.promote(version, "test: the champion to corrupt")
    graph = registry.path(version) / "model.onnx"
    os.truncate(graph, min(5000, graph.stat().st_size // 2))
    return version


def test_a_corrupt_champion_at_start_up_falls_back_to_the_previous_one_and_says_so(make_project, trained):
    """Promise: a service restarted on a champion that cannot load still starts (no outage), serving the newest
    earlier champion that loads (v1; v2 was never champion, so never a fallback), logs it loudly, and says so on
    /health and /model until the pointer names a version it serves. Attack: `truncate` the champion's
    model.onnx, then start `evergreen serve`. Before: the service refused to start."""
    ws = make_project({"serve.reload_interval_s": 0.2})
    broken = _corrupt_champion(ws)
    with running_server(ws.root) as (url, _), httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded" and health["model_version"] == "v1" and health["log"] == "ok"
        assert health["fallback"]["wanted"] == broken and health["fallback"]["serving"] == "v1"
        assert "cannot be loaded" in health["fallback"]["reason"]
        assert client.get("/model").json()["fallback"] == health["fallback"]
        answer = client.post("/predict", json={"records": trained.records()[:1]}).json()
        assert answer["model_version"] == "v1"
        wait_for_line(ws.root / f"server-{url.rsplit(':', 1)[1]}.log", f"FALLBACK: the champion {broken}")

        Registry(ws.registry).rollback()  # the pointer back to v1: the fallback is over
        recovered = {"status": "ok", "model_version": "v1", "log": "ok", "log_backend": "sqlite"}
        wait_for_health(client, lambda health: health == recovered, "the fallback to end")


def test_with_fallback_none_a_corrupt_champion_refuses_to_start(make_project):
    """Promise: `serve.fallback: none` keeps the strict behaviour: exit 1 naming the version and the file."""
    ws = make_project({"serve.fallback": "none"})
    broken = _corrupt_champion(ws)
    done = subprocess.run(
        [str(BIN / "evergreen"), "serve", "--port", str(free_port())],
        cwd=ws.root,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and f"model version {broken}" in done.stderr and "model.onnx" in done.stderr


def test_no_loadable_champion_in_the_history_is_a_serve_error_naming_each(make_project):
    """Promise: when neither the champion nor any earlier champion loads, start-up fails with `ServeError`
    naming the champion and each earlier champion tried, not with a traceback."""
    ws = make_project()
    broken = _corrupt_champion(ws)
    os.truncate(Registry(ws.registry).path("v1") / "model.onnx", 100)
    with pytest.raises(ServeError, match=f"champion {broken} cannot be served") as caught:
        PredictionService(ws)
    assert "v1 (" in str(caught.value) and "v2" not in str(caught.value)
