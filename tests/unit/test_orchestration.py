"""Orchestration helpers as plain functions: overrides, DAG order, the workspace lock, run summaries."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from evergreen.errors import ConfigError, EvergreenError, WorkspaceBusy
from evergreen.orchestration.dag import open_repo, pipeline_stages, workspace_lock
from evergreen.orchestration.dvcfile import declared_stages
from evergreen.orchestration.overrides import apply_overrides
from evergreen.orchestration.summary import parse_overrides, run_summary
from evergreen.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]


def _stages(targets: list[str] | None = None) -> list[str]:
    with open_repo(ROOT) as repo:
        return pipeline_stages(repo, targets)


def test_stage_order_comes_from_dvc_yaml():
    stages = _stages()
    declared = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert declared_stages(ROOT / "dvc.yaml") == declared
    assert sorted(stages) == sorted(declared)  # every stage, no second list in Python
    for before, after in [("ingest", "validate_raw"), ("validate_raw", "clean"), ("clean", "split")]:
        assert stages.index(before) < stages.index(after)


def test_targets_select_a_stage_and_its_upstream():
    assert _stages(["clean"]) == ["ingest", "validate_raw", "clean"]


def test_unknown_target_names_the_stages():
    with pytest.raises(EvergreenError, match="unknown stage\\(s\\) cleen; dvc.yaml has: .*clean"):
        _stages(["cleen"])


def test_overrides_keep_comments_and_validate(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(params, {"split.seed": 7})
    text = params.read_text()
    assert "seed: 7" in text and "# Evergreen's one declarative config" in text
    before = params.read_text()
    with pytest.raises(ConfigError, match="split.seed"):
        apply_overrides(params, {"split.seed": "seven"})
    with pytest.raises(ConfigError, match="splt: no such section"):
        apply_overrides(params, {"splt.seed": 1})
    assert params.read_text() == before  # a bad override never reaches the file


def test_parse_overrides():
    assert parse_overrides(["train.lr=0.01", "split.method=random"]) == {"train.lr": 0.01, "split.method": "random"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["train.lr"])


def test_workspace_lock_refuses_a_second_holder(tmp_path):
    lock = tmp_path / ".dvc/tmp/evergreen-run.lock"
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with workspace_lock(lock):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(10)
    try:
        with pytest.raises(WorkspaceBusy, match="another run holds"), workspace_lock(lock, wait=False):
            pass
    finally:
        release.set()
        thread.join()
    with workspace_lock(lock, wait=False):  # free again
        pass


def test_run_summary_reads_metrics(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/data.json").write_text(json.dumps({"rows_out": 10, "rows_quarantined": 2}))
    ws = Workspace(tmp_path, Workspace.open(ROOT).params)
    summary = run_summary({"ingest": "skipped", "clean": "ran"}, ws)
    assert "ran: clean" in summary and "up to date (skipped): ingest" in summary and "clean rows: 10" in summary
