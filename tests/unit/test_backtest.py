"""The backtest's pure parts and its sandboxes: windows, sandbox params, the params file, the summary."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

import evergreen
from evergreen.backtest.replay import PolicyRun, Window, summarise, windows
from evergreen.backtest.sandbox import SOURCE, copy_sandbox, create_sandbox, sandbox_params, write_params
from evergreen.config import Params, load_params, with_overrides
from evergreen.data.schema import EVENT_TIME
from evergreen.errors import EvergreenError
from evergreen.workspace import Workspace

NOW = dt.datetime(2012, 3, 1)


def _hourly(start: dt.datetime, hours: int) -> pl.DataFrame:
    return pl.DataFrame({EVENT_TIME: [start + dt.timedelta(hours=h) for h in range(hours)]})


def test_windows_cover_the_replay_in_order_and_the_last_one_stops_at_the_end(tiny: Params):
    data = _hourly(dt.datetime(2012, 1, 1), 24 * 17)  # 17 days: two weeks and a 3-day remainder
    sim = with_overrides(tiny, {"simulate.start": "2012-01-01", "simulate.window_days": 7}).simulate
    replayed = list(windows(data, sim))
    assert [(start.day, stop.day) for start, stop, _ in replayed] == [(1, 8), (8, 15), (15, 18)]
    assert [rows.height for *_, rows in replayed] == [168, 168, 72]
    assert pl.concat([rows for *_, rows in replayed]).equals(data)  # every row once, in time order
    assert replayed[-1][1] == data[EVENT_TIME].max() + dt.timedelta(hours=1)


def test_windows_start_at_simulate_start_and_stop_at_simulate_end(tiny: Params):
    data = _hourly(dt.datetime(2012, 1, 1), 24 * 30)
    sim = with_overrides(
        tiny, {"simulate.start": "2012-01-10", "simulate.end": "2012-01-20", "simulate.window_days": 7}
    ).simulate
    replayed = list(windows(data, sim))
    assert [(start, stop) for start, stop, _ in replayed] == [
        (dt.datetime(2012, 1, 10), dt.datetime(2012, 1, 17)),
        (dt.datetime(2012, 1, 17), dt.datetime(2012, 1, 20)),
    ]
    assert sum(rows.height for *_, rows in replayed) == 24 * 10


def test_sandbox_params_gate_on_the_latest_days_and_validate_on_the_days_before(tiny: Params):
    params = with_overrides(
        tiny,
        {"simulate.test_days": 14, "simulate.valid_days": 7, "simulate.overrides": {"train.epochs": 2}},
    )
    sandbox = sandbox_params(params, NOW)
    assert sandbox.split.method == "time"
    assert sandbox.split.test_from == NOW - dt.timedelta(days=14)
    assert sandbox.split.valid_from == NOW - dt.timedelta(days=21)
    assert sandbox.data.source == SOURCE and sandbox.data.incoming == "data/incoming"
    assert sandbox.train.epochs == 2  # simulate.overrides apply
    assert params.train.epochs != 2  # ... to the copy only


def test_sandbox_params_keep_every_location_inside_the_sandbox(tiny: Params, tmp_path: Path):
    params = with_overrides(
        tiny,
        {
            "promote.registry_dir": str(tmp_path / "the-real-registry"),
            "serve.log_path": str(tmp_path / "the-real-log.db"),
            "monitor.decisions": "elsewhere/decisions.jsonl",  # relative: already inside, kept
        },
    )
    sandbox = sandbox_params(params, NOW)
    assert sandbox.promote.registry_dir == "models/registry"
    assert sandbox.serve.log_path == "monitoring/predictions.db"
    assert sandbox.monitor.decisions == "elsewhere/decisions.jsonl"


def test_written_params_read_back_to_the_same_config(tiny: Params, tmp_path: Path):
    params = sandbox_params(with_overrides(tiny, {"simulate.overrides": {"model.hidden": [8]}}), NOW)
    write_params(params, tmp_path / "params.yaml")
    assert load_params(tmp_path / "params.yaml") == params


def _project(root: Path, params: Params, with_src: bool = True) -> Workspace:
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    if with_src:
        (root / "src/evergreen/__pycache__").mkdir(parents=True)
        (root / "src/evergreen/__init__.py").write_text("")
        (root / "src/evergreen/__pycache__/__init__.cpython-311.pyc").write_bytes(b"")
    return Workspace(root, params)


def _first_rows(params: Params) -> pl.DataFrame:
    return pl.DataFrame({name: ["1"] for name in params.data.names})


def test_a_sandbox_is_a_project_folder_dvc_can_run(tiny: Params, tmp_path: Path):
    project = _project(tmp_path / "project", tiny)
    ws = create_sandbox(project, tmp_path / "sandbox", _first_rows(tiny))
    assert ws.dvc_yaml.read_text() == project.dvc_yaml.read_text()
    assert (ws.root / "src/evergreen/__init__.py").exists()
    assert not (ws.root / "src/evergreen/__pycache__").exists()
    assert (ws.root / ".dvc/config").exists()  # its own DVC repository
    assert Workspace.open(ws.root).params == sandbox_params(tiny, tiny.simulate.start)
    assert pl.read_parquet(ws.root / SOURCE).height == 1
    assert ws.incoming.is_dir() and ws.suite("raw").exists() and ws.suite("clean").exists()

    (ws.root / ".dvc/tmp/lock").parent.mkdir(exist_ok=True)
    (ws.root / ".dvc/tmp/lock").write_text("held by the sandbox it was copied from")
    copy_sandbox(ws.root, tmp_path / "copy")
    assert (tmp_path / "copy/.dvc/config").exists() and not (tmp_path / "copy/.dvc/tmp").exists()
    assert (tmp_path / "copy" / SOURCE).exists()


def test_a_sandbox_without_a_source_checkout_copies_the_installed_package(tiny: Params, tmp_path: Path):
    project = _project(tmp_path / "project", tiny, with_src=False)
    ws = create_sandbox(project, tmp_path / "sandbox", _first_rows(tiny))
    package = Path(evergreen.__file__).parent
    assert (ws.root / "src/evergreen/workspace.py").read_text() == (package / "workspace.py").read_text()


def test_a_sandbox_needs_the_project_pipeline_and_a_new_folder(tiny: Params, tmp_path: Path):
    project = _project(tmp_path / "project", tiny)
    project.dvc_yaml.unlink()
    with pytest.raises(EvergreenError, match="dvc.yaml: missing"):
        create_sandbox(project, tmp_path / "sandbox", _first_rows(tiny))
    project.dvc_yaml.write_text("stages: {}\n")
    (tmp_path / "sandbox").mkdir()
    with pytest.raises(EvergreenError, match="already exists"):
        create_sandbox(project, tmp_path / "sandbox", _first_rows(tiny))


def _run(name: str, rmses: list[float], squared_errors: list[float], retrains: int = 0) -> PolicyRun:
    run = PolicyRun(name, squared_errors=squared_errors)
    for i, rmse in enumerate(rmses):
        run.windows.append(Window(f"2012-01-0{i + 1}", f"2012-01-0{i + 2}", 10, rmse, "v1"))
    for window in run.windows[:retrains]:
        window.retrain, window.promoted = "a new month", "v2"
    return run


def test_the_summary_says_how_much_of_periodics_gain_the_drift_policy_recovers():
    runs = {
        "never": _run("never", [10.0, 10.0], [100.0, 100.0]),  # RMSE 10
        "periodic": _run("periodic", [10.0, 6.0], [64.0, 34.0], retrains=1),  # RMSE 7
        "drift": _run("drift", [10.0, 8.0], [81.0, 81.0], retrains=1),  # RMSE 9
    }
    summary = summarise(runs)
    assert summary["policies"]["never"]["rmse"] == pytest.approx(10.0)
    assert summary["policies"]["periodic"]["rmse"] == pytest.approx(7.0)
    assert summary["policies"]["periodic"]["retrains"] == 1 and summary["policies"]["periodic"]["promotions"] == 1
    assert summary["policies"]["never"]["retrains"] == 0
    assert summary["drift_recovers"] == pytest.approx((10 - 9) / (10 - 7))
    assert summary["plot"] == "error_over_time.png"


def test_the_summary_has_no_recovery_share_without_a_gain_or_without_all_policies():
    same = {name: _run(name, [5.0], [25.0]) for name in ("never", "periodic", "drift")}
    assert summarise(same)["drift_recovers"] is None  # periodic gained nothing: no share to speak of
    assert "drift_recovers" not in summarise({"never": same["never"], "drift": same["drift"]})
