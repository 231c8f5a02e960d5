"""Attacks on the pipeline as a user runs it: a typo'd params key, and two `evergreen run` at once.

Promises:
- an invalid params.yaml never costs the trained model (DVC must not delete it before the config is checked);
- a second `evergreen run` in a busy workspace says that another run holds it and waits, then runs.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from pathlib import Path

import pytest

from evergreen.orchestration.dag import workspace_lock
from evergreen.orchestration.overrides import apply_overrides
from evergreen.workspace import Workspace
from tests.e2e.workspace import FAST_TRAINING, copy_built
from tests.harness import command_env, run_command

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_stages_run: Path) -> Path:
    """A project copy with a trained model (light training), built once for this module (from the session's
    copy whose data stages have run)."""
    project = copy_built(data_stages_run, tmp_path_factory.mktemp("faults") / "project")
    apply_overrides(project / "params.yaml", FAST_TRAINING)
    run_command(project, "dvc", "repro", "train")
    return project


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_typo_in_params_does_not_cost_the_model(trained: Path) -> None:
    """Promise: an invalid params.yaml never costs the trained model or its metrics.

    Attack: a typo'd key in the `train` section (DVC sees the section changed and reruns `train`).
    """
    params = trained / "params.yaml"
    original = params.read_text()
    model, metrics = trained / "models/model.pt", trained / "metrics/train.json"
    before = _digest(model)
    params.write_text(original.replace("\ntrain:\n", "\ntrain:\n  epocs: 3\n", 1))
    try:
        done = run_command(trained, "dvc", "repro", "train", check=False)
    finally:
        params.write_text(original)
    assert done.returncode != 0
    assert "train.epocs" in done.stdout, done.stdout  # the key is named
    assert model.is_file() and _digest(model) == before
    assert metrics.is_file()


def test_a_second_run_waits_for_the_first_and_says_so(trained: Path, tmp_path: Path) -> None:
    """Promise: two `evergreen run` at once never fail on Prefect or DVC: the second says it waits, then runs.

    Attack: hold the workspace's run lock (as a first run does) while `evergreen run -t ingest` starts.
    """
    ws = Workspace.open(trained)
    lines: list[str] = []
    waiting = threading.Event()
    with workspace_lock(ws.run_lock):
        second = subprocess.Popen(
            ["evergreen", "run", "-t", "ingest"],
            cwd=trained,
            # its own Prefect home: the temporary server's database is not shared with another test run, and its
            # first start migrates a new one, slower than Prefect's default wait (cli.TEMPORARY_SERVER_STARTUP_S)
            env={**command_env(), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(tmp_path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def read() -> None:
            assert second.stdout is not None
            for line in second.stdout:
                lines.append(line)
                if "another run holds" in line:
                    waiting.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert waiting.wait(60), "the second run never said it was waiting:\n" + "".join(lines)
        assert second.poll() is None  # still waiting, not failed
    assert second.wait(300) == 0, "".join(lines)
    reader.join(10)
    output = "".join(lines)
    assert "the other run finished; starting" in output and "ingest" in output
