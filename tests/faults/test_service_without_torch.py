"""The service starts and serves without a training framework (issue 9.1)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow]

# a fresh interpreter: import the service, build the app, enter its lifespan, serve one request
PROGRAM = """
import json, sys
from pathlib import Path
from evergreen.serving.app import create_app
from evergreen.workspace import Workspace
from fastapi.testclient import TestClient

app = create_app(Workspace.open(Path(sys.argv[1])))
with TestClient(app) as client:
    answer = client.post("/predict", json={"records": json.loads(sys.argv[2])})
    health = client.get("/health").json()
heavy = [name for name in ("torch", "onnx", "sklearn") if name in sys.modules]
print(json.dumps({"status": answer.status_code, "health": health, "heavy": heavy}))
"""


def test_the_service_never_imports_torch_onnx_or_sklearn(make_project, trained):
    """Promise: importing `evergreen.serving.app`, building the app on a registry and serving a prediction
    loads neither torch, nor onnx, nor scikit-learn (start-up time and memory stay small). Before: importing the
    service imported torch through the model package."""
    ws = make_project()
    records = json.dumps(trained.records()[:2])
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(ws.root), records], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["health"]["model_version"] == "v1"
    assert result["heavy"] == []
