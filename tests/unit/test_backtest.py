"""The backtest's pure parts and its sandboxes: windows, sandbox params, the params file, the summary."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import evergreen
from evergreen.backtest.plots import plot_backtest
from evergreen.backtest.replay import PolicyRun, Served, Window, score_rows, should_retrain, summarise, windows
from evergreen.backtest.sandbox import (
    SANDBOX_AUTO_BUDGET_S,
    SOURCE,
    copy_sandbox,
    create_sandbox,
    sandbox_params,
    write_params,
)
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


def test_sandbox_params_cap_the_budget_of_model_type_auto_unless_the_overrides_name_it(tiny: Params):
    auto = with_overrides(tiny, {"model.type": "auto", "train.time_budget_s": None})
    assert sandbox_params(auto, NOW).train.time_budget_s == SANDBOX_AUTO_BUDGET_S  # not 5 minutes a retrain
    assert sandbox_params(with_overrides(auto, {"train.time_budget_s": 10}), NOW).train.time_budget_s == 10
    # the user's own replay settings win: a budget, or a family pinned
    declared = with_overrides(auto, {"simulate.overrides": {"train.time_budget_s": 90}})
    assert sandbox_params(declared, NOW).train.time_budget_s == 90
    pinned = sandbox_params(with_overrides(auto, {"simulate.overrides": {"model.type": "mlp"}}), NOW)
    assert pinned.model.type == "mlp" and pinned.train.time_budget_s is None
    # a named family keeps its own budget (none): only auto shares a budget out between candidates
    assert sandbox_params(with_overrides(tiny, {"train.time_budget_s": None}), NOW).train.time_budget_s is None


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
    return Workspace(root, with_overrides(params, {"simulate.start": "2012-01-01"}))


def _first_rows(params: Params) -> pl.DataFrame:
    return pl.DataFrame({name: ["1"] for name in params.data.names})


def test_a_sandbox_is_a_project_folder_dvc_can_run(tiny: Params, tmp_path: Path):
    project = _project(tmp_path / "project", tiny)
    ws = create_sandbox(project, tmp_path / "sandbox", _first_rows(tiny))
    assert ws.dvc_yaml.read_text() == project.dvc_yaml.read_text()
    assert (ws.root / "src/evergreen/__init__.py").exists()
    assert not (ws.root / "src/evergreen/__pycache__").exists()
    assert (ws.root / ".dvc/config").exists()  # its own DVC repository
    assert Workspace.open(ws.root).params == sandbox_params(project.params, project.params.simulate.start)
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


def _run(name: str, values: list[float], errors: list[float], retrains: int = 0) -> PolicyRun:
    """A regression run whose windows have these RMSEs, over rows with these errors (labels 0)."""
    run = PolicyRun(name, served=[Served([0.0] * len(errors), np.asarray(errors, dtype=float))])
    for i, value in enumerate(values):
        run.windows.append(Window(f"2012-01-0{i + 1}", f"2012-01-0{i + 2}", 10, value, "v1"))
    for window in run.windows[:retrains]:
        window.retrain, window.promoted = "a new month", "v2"
    return run


def test_the_summary_says_how_much_of_periodics_gain_the_drift_policy_recovers():
    runs = {
        "never": _run("never", [10.0, 10.0], [10.0, -10.0]),  # RMSE 10
        "periodic": _run("periodic", [10.0, 6.0], [8.0, np.sqrt(34.0)], retrains=1),  # RMSE 7
        "drift": _run("drift", [10.0, 8.0], [9.0, -9.0], retrains=1),  # RMSE 9
    }
    summary = summarise(runs)
    assert (summary["metric"], summary["metric_label"], summary["lower_is_better"]) == ("rmse", "RMSE", True)
    assert summary["policies"]["never"]["value"] == pytest.approx(10.0)
    assert summary["policies"]["periodic"]["value"] == pytest.approx(7.0)
    assert summary["policies"]["periodic"]["metric"] == "rmse"
    assert summary["policies"]["periodic"]["retrains"] == 1 and summary["policies"]["periodic"]["promotions"] == 1
    assert summary["policies"]["never"]["retrains"] == 0
    assert summary["drift_recovers"] == pytest.approx((10 - 9) / (10 - 7))
    assert summary["plot"] == "error_over_time.png"


def test_the_summary_has_no_recovery_share_without_a_gain_or_without_all_policies():
    same = {name: _run(name, [5.0], [5.0]) for name in ("never", "periodic", "drift")}
    assert summarise(same)["drift_recovers"] is None  # periodic gained nothing: no share to speak of
    assert "drift_recovers" not in summarise({"never": same["never"], "drift": same["drift"]})


# ------------------------------------------------------------------------------------------ classification
CLASSES = ["a", "b", "c"]


def _served(labels: list[str], probabilities: list[list[float]], classes: list[str] = CLASSES) -> Served:
    return Served(labels, np.asarray(probabilities, dtype=float), classes)


def test_a_classifier_window_is_scored_on_the_declared_metric_from_its_probabilities():
    window = _served(["a", "b", "c", "a"], [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3], [0.6, 0.3, 0.1]])
    assert score_rows("classification", "accuracy", [window]) == pytest.approx(0.75)
    expected = -np.mean(np.log([0.8, 0.7, 0.3, 0.6]))
    assert score_rows("classification", "log_loss", [window]) == pytest.approx(expected)
    one_class = _served(["a", "a"], [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1]])
    assert score_rows("classification", "roc_auc", [one_class]) is None  # undefined, not a crash or a 0
    assert score_rows("classification", "accuracy", []) is None


def test_windows_served_by_models_with_different_classes_are_pooled_on_their_union():
    first = _served(["a", "b"], [[0.9, 0.1], [0.4, 0.6]], classes=["a", "b"])
    later = _served(["c", "a"], [[0.1, 0.1, 0.8], [0.7, 0.2, 0.1]], classes=["a", "b", "c"])
    stray = _served(["d"], [[0.5, 0.3, 0.2]])  # a label no model has: probability zero (clipped)
    assert score_rows("classification", "accuracy", [first, later]) == pytest.approx(1.0)
    pooled = score_rows("classification", "log_loss", [first, later])
    assert pooled == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.8, 0.7])))
    assert score_rows("classification", "log_loss", [first, later, stray]) > 5


def test_a_classification_summary_names_its_metric_and_draws_it(tmp_path: Path):
    good = _served(["a", "b"], [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    bad = _served(["a", "b"], [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    runs = {}
    for name, parts in (("never", [good, bad]), ("periodic", [good, good]), ("drift", [good, good])):
        run = PolicyRun(name, task="classification", metric="accuracy", served=parts)
        for i, part in enumerate(parts):
            value = score_rows("classification", "accuracy", [part])
            run.windows.append(Window(f"2012-01-0{i + 1}", f"2012-01-0{i + 2}", 2, value, "v1"))
        runs[name] = run
    summary = summarise(runs)
    assert (summary["metric"], summary["metric_label"], summary["lower_is_better"]) == ("accuracy", "accuracy", False)
    assert [w["value"] for w in summary["policies"]["never"]["windows"]] == [1.0, 0.0]
    assert summary["policies"]["never"]["value"] == 0.5 and summary["policies"]["drift"]["value"] == 1.0
    assert summary["drift_recovers"] == pytest.approx(1.0)  # a higher-is-better metric: the same ratio
    plot_backtest(summary, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_the_backtest_says_how_to_set_its_start(tiny: Params):
    """A table with no `simulate.start` (or no timestamp) gets a message saying what to set, not a crash."""
    from evergreen.backtest.sandbox import replay_start
    from evergreen.errors import EvergreenError

    with pytest.raises(EvergreenError, match="simulate.start is not set"):
        replay_start(tiny)
    no_time = with_overrides(tiny, {"data.timestamp": None, "split.method": "random"})
    with pytest.raises(EvergreenError, match="data.timestamp is not declared"):
        replay_start(no_time)
    assert replay_start(with_overrides(tiny, {"simulate.start": "2012-02-01"})).month == 2


def test_a_warm_variant_retrains_when_its_policy_does():
    jan, feb = dt.datetime(2012, 1, 29), dt.datetime(2012, 2, 5)
    for previous, start in ((jan, feb), (dt.datetime(2012, 1, 22), jan)):
        cold = should_retrain("periodic", None, previous, start, start + dt.timedelta(days=7))
        assert should_retrain("periodic_warm", None, previous, start, start + dt.timedelta(days=7)) == cold
    assert should_retrain("periodic_warm", None, jan, feb, feb + dt.timedelta(days=7)) == "a new month"


def test_the_summary_compares_each_warm_variant_with_its_cold_policy():
    cold = _run("periodic", [10.0, 6.0], [8.0, np.sqrt(34.0)], retrains=1)  # RMSE 7
    warm = _run("periodic_warm", [10.0, 6.0], [8.0, 6.0], retrains=1)  # RMSE sqrt(50)
    cold.windows[0].train_seconds, warm.windows[0].train_seconds = 40.0, 10.0
    summary = summarise({"periodic": cold, "periodic_warm": warm, "never": _run("never", [1.0], [1.0])})
    assert summary["policies"]["periodic"]["train_seconds"] == 40.0
    assert summary["policies"]["never"]["train_seconds"] == 0.0
    compared = summary["warm_vs_cold"]
    assert list(compared) == ["periodic"]
    assert compared["periodic"]["train_seconds_ratio"] == pytest.approx(0.25)
    assert compared["periodic"]["value_difference"] == pytest.approx(np.sqrt(50.0) - 7.0)
