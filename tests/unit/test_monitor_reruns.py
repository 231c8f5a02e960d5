"""Monitoring survives its own files and its own reruns (issue 19, part 4): a damaged snapshot in the Evidently
workspace, two monitor runs at once, and one window judged twice. Real registry, prediction log, Evidently
workspace and decisions log; the champion is a reference sample (monitoring a regression model never loads it).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from evergreen.artifacts.decisions import RetrainDecision, read_history
from evergreen.config import PolicyConfig
from evergreen.monitoring.monitor import monitor_once
from evergreen.monitoring.policy import decide
from evergreen.monitoring.summary import ColumnDrift, MonitorSummary
from evergreen.prediction_log.writer import PredictionLog, log_rows
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace
from tests.harness import TINY, imported_when_used
from tests.process_harness import run_together

report_files = imported_when_used("evergreen.monitoring.report_files")

START = dt.datetime(2026, 11, 1)
FEATURES = ["hr", "weather", "temp", "hum"]


def _rows(n: int, seed: int, shift: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "hr": rng.integers(0, 24, n),
        "weather": rng.choice([1, 2, 3], n),
        "temp": np.clip(rng.normal(0.3 + shift, 0.1, n), 0, 1),
        "hum": np.clip(rng.normal(0.5 + shift, 0.1, n), 0, 1),
    }


@pytest.fixture
def project(tmp_path: Path) -> Workspace:
    """A champion v1 with its reference sample, and a prediction log holding one drifted window of 300 rows."""
    raw = copy.deepcopy(TINY) | {"monitor": {"policy": {"min_rows": 50, "consecutive": 2, "cooldown_hours": 0}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    ws = Workspace.open(tmp_path)
    features = _rows(500, seed=1, shift=0.0)
    reference = pl.DataFrame({**features, "y": features["hr"] * 10, "prediction": features["hr"] * 10.0})
    reference.write_parquet(tmp_path / "reference.parquet")
    registry = Registry(ws.registry)
    registry.promote(registry.add({"reference.parquet": tmp_path / "reference.parquet"}, {}), "first")
    _serve(ws, seed=2, start=START)
    return ws


def _serve(ws: Workspace, seed: int, start: dt.datetime, n: int = 300) -> None:
    """`n` drifted predictions by v1, one a minute from `start`, through the real log."""
    features = _rows(n, seed, shift=0.4)
    log = PredictionLog(ws.prediction_log_location)
    try:
        for i in range(n):
            record = {name: features[name][i].item() for name in FEATURES}
            time = (start + dt.timedelta(minutes=i)).isoformat(timespec="microseconds") + "Z"
            log.write(log_rows(f"{seed}-{i}", time, "v1", [record], [float(record["hr"] * 10)]))
    finally:
        log.close()


def _decisions(ws: Workspace) -> list[RetrainDecision]:
    return [e for e in read_history(ws.decisions) if isinstance(e, RetrainDecision)]


# ------------------------------------------------------------------------------------ a damaged snapshot
@pytest.mark.slow
def test_a_torn_snapshot_is_set_aside_with_a_warning_and_the_run_records_its_decision(project, caplog):
    first = monitor_once(project, now=START + dt.timedelta(hours=6))
    [snapshot] = list((project.evidently_workspace).glob("*/snapshots/*.json"))
    whole = snapshot.read_bytes()
    snapshot.write_bytes(whole[: len(whole) // 2])  # a run killed mid-write

    _serve(project, seed=3, start=START + dt.timedelta(hours=6))
    with caplog.at_level(logging.WARNING, logger="evergreen.monitor"):
        second = monitor_once(project, now=START + dt.timedelta(hours=12))
    assert [d.time for d in _decisions(project)] == [first.time, second.time]  # recorded, not crashed
    kept = project.evidently_workspace / report_files.QUARANTINE / snapshot.relative_to(project.evidently_workspace)
    assert kept.read_bytes() == whole[: len(whole) // 2] and not snapshot.exists()  # moved, not deleted
    assert any(str(snapshot) in r.getMessage() and str(kept) in r.getMessage() for r in caplog.records)
    assert len(report_files.list_snapshots(project.evidently_workspace, "evergreen")) == 1  # the new run's snapshot


def test_a_project_with_damaged_metadata_goes_to_the_quarantine_whole(tmp_path: Path, caplog):
    project = tmp_path / "0190a3c2-0000-7000-8000-000000000001"
    (project / "snapshots").mkdir(parents=True)
    (project / "metadata.json").write_text('{"name": "evergr')
    (project / "snapshots" / "0190a3c2-0000-7000-8000-000000000002.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="evergreen.monitor"):
        workspace = report_files.open_workspace(tmp_path)
    assert workspace.search_project("evergreen") == []
    assert (tmp_path / report_files.QUARANTINE / project.name / "metadata.json").read_text() == '{"name": "evergr'
    assert not project.exists() and "metadata unreadable" in caplog.text and project.name in caplog.text


# --------------------------------------------------------------------------------------- two runs at once
_SETUP = """
import datetime as dt
from evergreen.monitoring.monitor import monitor_once
from evergreen.workspace import Workspace
"""
_MONITOR = "print(monitor_once(Workspace.open(sys.argv[1]), now=dt.datetime(2026, 11, 1, 6)).action)"


@pytest.mark.slow
def test_two_monitor_runs_at_once_both_record_a_decision(project):
    for attempt in range(1, 4):  # the race lost one run's decision in 1 of 3 tries before the lock
        runs = run_together(_SETUP, _MONITOR, [str(project.root)], project.root / "barrier")
        assert [status for status, _ in runs] == [0, 0], f"try {attempt}: {[out[-2000:] for _, out in runs]}"
        assert len(_decisions(project)) == 2 * attempt, f"try {attempt}"
    workspace = report_files.open_workspace(project.evidently_workspace)
    assert len(workspace.search_project("evergreen")) == 1  # created once, not once per racing run
    assert len(report_files.list_snapshots(project.evidently_workspace, "evergreen")) == 6
    assert not (project.evidently_workspace / report_files.QUARANTINE).exists()  # no run read a snapshot mid-write


# ------------------------------------------------------------------------------------ one window, twice
@pytest.mark.slow
def test_monitoring_the_same_window_twice_does_not_count_it_twice(project):
    first = monitor_once(project, now=START + dt.timedelta(hours=6), save_reports=False)
    assert first.drifted and first.action == "none" and "drifted 1 of 2" in first.reasons[-1]
    again = monitor_once(project, now=START + dt.timedelta(hours=7), save_reports=False)  # no new prediction
    assert again.action == "none" and again.reasons[-1].startswith("not counted: no prediction newer than")
    _serve(project, seed=4, start=START + dt.timedelta(hours=7))
    new = monitor_once(project, now=START + dt.timedelta(hours=13), save_reports=False)
    assert new.action == "retrain" and new.window_end > first.window_end
    assert [json.loads(line)["window_end"] for line in project.decisions.read_text().splitlines()][0] == (
        first.window_end
    )


def _summary(end: str | None, drifted: bool = True) -> MonitorSummary:
    features = [ColumnDrift(name, "wasserstein", 0.3 if drifted else 0.01, 0.1, drifted) for name in FEATURES]
    return MonitorSummary(rows=1000, reference_rows=5000, champion="v1", window_end=end, features=features)


def test_the_policy_counts_distinct_windows_for_the_streak():
    policy = PolicyConfig(consecutive=2, cooldown_hours=0)
    first = decide(_summary("2026-11-01T06:00:00+00:00"), [], policy, now="2026-11-01T06:00:00")
    assert first.action == "none" and first.window_end == "2026-11-01T06:00:00+00:00"
    # the same newest prediction, written in another time zone's form: the same window
    again = decide(_summary("2026-11-01T07:00:00+01:00"), [first], policy, now="2026-11-01T07:00:00")
    assert again.action == "none" and "judged at 2026-11-01T06:00:00 already" in again.reasons[-1]
    later = decide(_summary("2026-11-01T09:00:00+00:00"), [first, again], policy, now="2026-11-01T09:00:00")
    assert later.action == "retrain"  # two distinct windows in a row, the repeat counted neither way


def test_a_repeated_window_does_not_count_towards_the_fallback():
    policy = PolicyConfig(consecutive=2, cooldown_hours=0, retrain_every=3)
    history = [decide(_summary("2026-11-01T06:00:00", drifted=False), [], policy, now="2026-11-01T06:00:00")]
    for hour in (7, 8):  # monitor rerun twice on the same window
        history.append(
            decide(_summary("2026-11-01T06:00:00", drifted=False), history, policy, now=f"2026-11-01T0{hour}:00:00")
        )
    assert [d.action for d in history] == ["none", "none", "none"]
    assert (
        decide(_summary("2026-11-01T10:00:00", drifted=False), history, policy, now="2026-11-01T10:00:00").action
        == "none"
    )
    unknown = [d.model_copy(update={"window_end": None}) for d in history]  # entries from before window_end
    assert (
        decide(_summary("2026-11-01T10:00:00", drifted=False), unknown, policy, now="2026-11-01T10:00:00").action
        == "retrain"
    )
