"""`dvc repro` through train, evaluate, export and promote, then the gate and the registry by hand.

Training is shrunk (a few epochs, one ensemble member) so the test is about the lifecycle, not the model.
"""

from __future__ import annotations

import json

import pytest

from evergreen.orchestration.overrides import apply_overrides

from .workspace import FAST_TRAINING, ran_stages

# the project copy starts with its data stages run (`data_stages_run`): the lifecycle under test begins at `train`
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("data_stages_run")]


def _promotion(project):
    return json.loads((project / "metrics/promotion.json").read_text())


def test_gate_registry_and_rollback(project, run):
    apply_overrides(project / "params.yaml", FAST_TRAINING)
    stages = ran_stages(run("dvc", "repro").stdout)
    assert stages[-4:] == ["train", "evaluate", "export", "promote"]
    first = _promotion(project)
    assert first["promoted"] and first["champion_after"] == "v1"
    assert "v1" in run("evergreen", "models", "list").stdout

    # a deliberately worse challenger: a learning rate far too small to learn anything
    apply_overrides(project / "params.yaml", {"train.lr": 1e-6})
    run("dvc", "repro")
    worse = _promotion(project)
    assert not worse["promoted"] and worse["champion_after"] == "v1"
    assert any(reason.startswith("champion: rmse") for reason in worse["reasons"])

    # a challenger that fails ONNX parity never reaches the gate: export stops the pipeline
    apply_overrides(project / "params.yaml", {"train.lr": 0.003, "export.parity_tolerance": 1e-12})
    failed = run("dvc", "repro", check=False)
    assert failed.returncode != 0 and "parity" in failed.stdout
    assert "promote" not in ran_stages(failed.stdout)
    assert (project / "models/registry/CHAMPION").read_text().strip() == "v1"

    # a better challenger is promoted, and rollback restores the previous champion
    apply_overrides(project / "params.yaml", {"export.parity_tolerance": 1e-4, "train.epochs": 8})
    run("dvc", "repro")
    better = _promotion(project)
    assert better["promoted"] and better["champion_after"] == "v2", better["reasons"]
    assert (
        better["comparison"]["ci_low"] <= better["comparison"]["relative_difference"] <= better["comparison"]["ci_high"]
    )
    assert "rolled back: champion is now v1" in run("evergreen", "models", "rollback").stdout
    assert (project / "models/registry/CHAMPION").read_text().strip() == "v1"
    card = json.loads(run("evergreen", "models", "show", "v2").stdout)
    assert card["version"] == "v2" and card["gate"]["promote"] is True
    assert (project / "models/registry/v2/reference.parquet").exists()
