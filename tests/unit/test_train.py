"""The training loop on tiny synthetic data: both tasks, determinism, resume, divergence and bad input."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from evergreen.config import ModelConfig, Params, parse_params
from evergreen.errors import ModelError, TrainingDiverged
from evergreen.model.network import TabularNet
from evergreen.model.train import train_model
from tests.harness import SMALL_MODEL, SMALL_TRAIN, synthetic


@pytest.fixture
def classification(tiny_raw: dict[str, Any]) -> Params:
    tiny_raw["data"]["task"] = "classification"
    return parse_params(tiny_raw)


def _train(params: Params, task: str = "regression", **kwargs: Any) -> Any:
    model = kwargs.pop("model", SMALL_MODEL)
    cfg = kwargs.pop("cfg", SMALL_TRAIN)
    train, valid = kwargs.pop("frames", (synthetic(600, 1, task), synthetic(200, 2, task)))
    return train_model(train, valid, params.data, model, cfg, progress=False, **kwargs)


def _without_time(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "seconds"}


def test_regression_learns_and_round_trips(tiny, tmp_path):
    result = _train(tiny)
    assert result.metrics["valid"]["r2"] > 0.5
    assert len(result.history) == result.metrics["epochs_run"] == 6
    test = synthetic(100, 3)
    predictions = result.model.predict(test)
    assert predictions.shape == (100,) and np.isfinite(predictions).all()
    result.model.save(tmp_path / "model.pt")
    loaded = TabularNet.load(tmp_path / "model.pt")
    np.testing.assert_array_equal(loaded.predict(test), predictions)
    assert loaded.params == {} and loaded.prep == result.model.prep


def test_classification_with_imbalance_uses_class_weights(classification):
    balanced = SMALL_TRAIN.model_copy(update={"class_weight": "balanced"})
    result = _train(classification, "classification", model=SMALL_MODEL.model_copy(update={"ensemble": 2}),
                    cfg=balanced)  # fmt: skip
    assert result.model.prep.classes == [0, 1]
    valid = result.metrics["valid"]
    assert set(valid) >= {"accuracy", "f1_macro", "log_loss", "roc_auc"}
    assert valid["roc_auc"] > 0.8
    probabilities = result.model.predict(synthetic(50, 4, "classification"))
    assert probabilities.shape == (50, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_same_data_and_params_give_the_same_metrics(tiny):
    first, second = _train(tiny), _train(tiny)
    assert _without_time(first.metrics) == _without_time(second.metrics)
    assert first.history == second.history
    other_seed = _train(tiny, cfg=SMALL_TRAIN.model_copy(update={"seed": 7}))
    assert other_seed.history != first.history


class _Killed(Exception):
    pass


def test_a_killed_run_resumes_and_ends_like_an_uninterrupted_one(tiny, tmp_path):
    uninterrupted = _train(tiny, checkpoint=tmp_path / "a.pt")

    def kill_after_3(record: dict[str, float]) -> None:
        if record["epoch"] == 3:
            raise _Killed  # the process dies right after the checkpoint of epoch 3 was written

    checkpoint = tmp_path / "b.pt"
    with pytest.raises(_Killed):
        _train(tiny, checkpoint=checkpoint, on_epoch=kill_after_3)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3
    seen: list[int] = []
    resumed = _train(tiny, checkpoint=checkpoint, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [1, 2, 3, 4, 5, 6]  # restored epochs are replayed to the logger, then 4..6 run
    assert _without_time(resumed.metrics) == _without_time(uninterrupted.metrics)
    assert resumed.history == uninterrupted.history


def test_a_checkpoint_for_other_params_is_ignored(tiny, tmp_path, capsys):
    checkpoint = tmp_path / "c.pt"
    _train(tiny, checkpoint=checkpoint, cfg=SMALL_TRAIN.model_copy(update={"epochs": 2}))
    fresh = _train(tiny)
    rerun = _train(tiny, checkpoint=checkpoint)
    assert "ignoring" in capsys.readouterr().out
    assert _without_time(rerun.metrics) == _without_time(fresh.metrics)


def test_a_huge_learning_rate_stops_with_the_epoch_named(tiny):
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1"):
        _train(tiny, cfg=SMALL_TRAIN.model_copy(update={"lr": 1e30}))


def test_infinite_values_in_the_data_stop_training(tiny):
    train = synthetic(600, 1).with_columns(temp=pl.when(pl.col("id") == 100_005).then(float("inf"))
                                            .otherwise(pl.col("temp")))  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"epoch 1"):
        _train(tiny, frames=(train, synthetic(200, 2)))


def test_infinite_values_in_the_valid_split_stop_training(tiny):
    valid = synthetic(200, 2).with_columns(temp=pl.lit(float("-inf")))
    with pytest.raises(TrainingDiverged, match=r"epoch 1: the valid split's score became nan"):
        _train(tiny, frames=(synthetic(600, 1), valid))


def test_an_unreadable_checkpoint_is_ignored(tiny, tmp_path, capsys):
    checkpoint = tmp_path / "broken.pt"
    checkpoint.write_bytes(b"half a checkpoint")
    result = _train(tiny, checkpoint=checkpoint, cfg=SMALL_TRAIN.model_copy(update={"epochs": 2}))
    assert "cannot be read" in capsys.readouterr().out
    assert result.metrics["epochs_run"] == 2


def test_a_diverged_stage_writes_no_model(tiny_raw, tmp_path):
    from evergreen.stages import train as train_stage
    from evergreen.workspace import Workspace

    tiny_raw["train"] = {"lr": 1e30, "epochs": 2, "device": "cpu"}
    tiny_raw["model"] = {"hidden": [8]}
    ws = Workspace(tmp_path, parse_params(tiny_raw))
    ws.split("train").parent.mkdir(parents=True)
    synthetic(300, 1).write_parquet(ws.split("train"))
    synthetic(100, 2).write_parquet(ws.split("valid"))
    ws.models_dir.mkdir()
    ws.model.write_text("a model from an earlier run")
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        train_stage.run(ws)
    assert not ws.model.exists()


def test_an_empty_split_is_a_clear_error(tiny):
    with pytest.raises(ModelError, match="the train split is empty"):
        _train(tiny, frames=(synthetic(0, 1), synthetic(100, 2)))
    with pytest.raises(ModelError, match="the valid split is empty"):
        _train(tiny, frames=(synthetic(100, 1), synthetic(0, 2)))


def test_a_missing_feature_is_named(tiny):
    with pytest.raises(ModelError, match="valid split lacks declared column.*weather"):
        _train(tiny, frames=(synthetic(100, 1), synthetic(100, 2).drop("weather")))


def test_a_single_class_split_is_a_clear_error(classification):
    train = synthetic(300, 1, "classification").with_columns(y=pl.lit(0, dtype=pl.Int64))
    with pytest.raises(ModelError, match="single class"):
        _train(classification, "classification", frames=(train, synthetic(100, 2, "classification")))


def test_a_cross_of_unknown_columns_is_named(tiny):
    with pytest.raises(ModelError, match=r"model.crosses\[0\]: temp is not a categorical feature"):
        _train(tiny, model=ModelConfig(hidden=[8], crosses=[["hr", "temp"]]))


def test_unseen_and_missing_categories_fall_into_the_unknown_bucket(tiny):
    model = _train(tiny, cfg=SMALL_TRAIN.model_copy(update={"epochs": 2})).model
    rows = synthetic(5, 3)
    unseen = rows.with_columns(weather=pl.lit(99, dtype=pl.Int64))
    missing = rows.with_columns(weather=pl.lit(None, dtype=pl.Int64))
    _, codes = model.encode(torch.from_numpy(unseen.select(model.prep.features).to_numpy().astype(np.float32)))
    weather_field = model.prep.categorical.index(model.prep.features.index("weather"))
    assert (codes[:, weather_field] == model.offsets[weather_field]).all()  # bucket 0 of that field
    np.testing.assert_array_equal(model.predict(unseen), model.predict(missing))
    assert not np.array_equal(model.predict(unseen), model.predict(rows))


def test_missing_numeric_values_are_imputed_with_the_train_median(tiny):
    model = _train(tiny, cfg=SMALL_TRAIN.model_copy(update={"epochs": 2})).model
    rows = synthetic(5, 3)
    median = model.prep.numeric_fill[model.prep.numeric.index(model.prep.features.index("hum"))]
    np.testing.assert_allclose(
        model.predict(rows.with_columns(hum=pl.lit(None, dtype=pl.Float64))),
        model.predict(rows.with_columns(hum=pl.lit(median))),
        rtol=1e-6,
    )


@pytest.mark.parametrize("tty", [False, True])
def test_progress_is_a_bar_on_a_terminal_and_one_line_per_epoch_elsewhere(tiny, capsys, monkeypatch, tty):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)  # capsys has replaced stderr: not a terminal
    train_model(synthetic(600, 1), synthetic(200, 2), tiny.data, SMALL_MODEL,
                SMALL_TRAIN.model_copy(update={"epochs": 2}))  # fmt: skip
    out, err = capsys.readouterr()
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    if tty:
        assert epoch_lines == [] and "\r" in err and "epoch 2/2" in err
    else:
        assert len(epoch_lines) == 2 and "\r" not in err and "\r" not in out
        assert epoch_lines[1].startswith("epoch 2/2: train loss ") and ", valid rmse " in epoch_lines[1]


# ----------------------------------------------------------------------- string and derived (calendar) features
_WEATHER = {1: "sun", 2: "rain", 3: "snow"}


def _worded(frame: pl.DataFrame) -> pl.DataFrame:
    """The tiny rows with `weather` as words, the way a user's table holds categories."""
    return frame.with_columns(pl.col("weather").replace_strict(_WEATHER, return_dtype=pl.String))


@pytest.fixture
def worded(tiny_raw: dict[str, Any]) -> Params:
    columns = tiny_raw["data"]["columns"]
    columns[3] = {"name": "weather", "type": "str", "role": "feature", "allowed": ["sun", "rain", "snow"]}
    tiny_raw["data"]["derived"] = [{"name": "day_dow", "from": "day", "part": "day_of_week"}]
    return parse_params(tiny_raw)


def test_string_and_calendar_features_train_through_the_shared_input_builder(worded):
    model_cfg = SMALL_MODEL.model_copy(update={"crosses": [["hr", "weather"]]})
    frames = (_worded(synthetic(600, 1)), _worded(synthetic(200, 2)))
    result = _train(worded, model=model_cfg, frames=frames)
    prep = result.model.prep
    assert result.metrics["valid"]["r2"] > 0.5  # the string category carries the signal it had as a code
    assert prep.string_vocabularies == {"weather": ["rain", "snow", "sun"]}
    assert prep.features[-1] == "day_dow" and prep.kinds[-1] == "categorical"
    assert prep.input_columns == ["hr", "weather", "temp", "hum", "day"]
    rows = _worded(synthetic(20, 3))
    x = prep.matrix(rows)
    assert x[:, prep.features.index("weather")].tolist() == [
        ["rain", "snow", "sun"].index(w) for w in rows["weather"].to_list()
    ]
    assert x[:, -1].tolist() == [d.isoweekday() for d in rows["day"].to_list()]
    unseen = result.model.predict(rows.with_columns(weather=pl.lit("hail")))
    missing = result.model.predict(rows.with_columns(weather=pl.lit(None, dtype=pl.String)))
    np.testing.assert_array_equal(unseen, missing)  # both the unknown bucket
    assert not np.array_equal(unseen, result.model.predict(rows))
    with pytest.raises(ModelError, match="the frame lacks feature column.*day"):
        result.model.predict(rows.drop("day"))


def test_a_date_feature_is_refused_with_the_way_out(tiny_raw):
    tiny_raw["data"]["columns"].append({"name": "when", "type": "date", "role": "feature"})
    frames = tuple(f.with_columns(when=pl.col("day")) for f in (synthetic(50, 1), synthetic(20, 2)))
    with pytest.raises(ModelError, match="feature 'when' has type date.*data.derived"):
        _train(parse_params(tiny_raw), frames=frames)


def test_without_class_weights_probabilities_keep_the_class_prior(classification):
    """The default (no weighting): the mean probability of the rare class stays near its share of the rows;
    balanced weights inflate it (they train as if both classes were equally common)."""
    assert SMALL_TRAIN.class_weight == "none"
    valid = synthetic(400, 2, "classification")
    share = valid["y"].mean()
    plain = _train(classification, "classification", frames=(synthetic(600, 1, "classification"), valid))
    balanced = _train(classification, "classification", frames=(synthetic(600, 1, "classification"), valid),
                      cfg=SMALL_TRAIN.model_copy(update={"class_weight": "balanced"}))  # fmt: skip
    rare_plain = plain.model.predict(valid)[:, 1].mean()
    rare_balanced = balanced.model.predict(valid)[:, 1].mean()
    assert abs(rare_plain - share) < 0.05 < rare_balanced - share
    assert plain.metrics["valid"]["log_loss"] < balanced.metrics["valid"]["log_loss"]


def test_a_few_batches_in_all_still_train_with_the_one_cycle_schedule(tiny):
    """A small table: 2 batches an epoch for 2 epochs used to divide by zero inside OneCycleLR."""
    result = _train(
        tiny, frames=(synthetic(100, 1), synthetic(50, 2)), cfg=SMALL_TRAIN.model_copy(update={"epochs": 2})
    )
    assert result.metrics["epochs_run"] == 2
    one_epoch = SMALL_TRAIN.model_copy(update={"epochs": 1})
    single = _train(tiny, frames=(synthetic(60, 1), synthetic(50, 2)), cfg=one_epoch)
    assert single.metrics["epochs_run"] == 1


# ---- the machine: batch size, time budget, threads


def test_auto_batch_size_grows_with_the_train_rows():
    from evergreen.model.train import batch_size_for

    assert [batch_size_for("auto", n) for n in (100, 9_000, 14_491, 40_000, 80_000, 1_000_000)] == [
        256, 256, 256, 512, 1024, 4096,
    ]  # fmt: skip
    assert batch_size_for(100, 1_000_000) == 100  # a number is kept as it is


def test_auto_batch_size_is_resolved_and_reported(tiny):
    result = _train(tiny, cfg=SMALL_TRAIN.model_copy(update={"batch_size": "auto", "epochs": 1}))
    assert result.metrics["batch_size"] == 256 and result.metrics["threads"] == torch.get_num_threads()


def test_a_passed_deadline_stops_after_one_epoch_with_the_best_weights(tiny, capsys):
    import time

    result = _train(tiny, deadline=time.monotonic())
    assert result.metrics["epochs_run"] == 1 and result.metrics["stopped_on_time"]
    assert result.metrics["best_epoch"] == 1 and np.isfinite(result.model.predict(synthetic(5, 3))).all()
    assert "the next would end past the time budget" in capsys.readouterr().out


def test_a_time_budget_stops_training_before_its_epochs_are_done(tiny):
    budget = SMALL_TRAIN.model_copy(update={"epochs": 10_000, "patience": 10_000, "time_budget_s": 1.0})
    result = _train(tiny, cfg=budget)
    assert result.metrics["stopped_on_time"] and 1 <= result.metrics["epochs_run"] < 10_000
    unlimited = _train(tiny, cfg=SMALL_TRAIN.model_copy(update={"epochs": 2}))
    assert not unlimited.metrics["stopped_on_time"] and unlimited.metrics["epochs_run"] == 2


def test_a_deadline_cuts_a_long_epoch_short_after_its_first_batch(tiny):
    import time

    # 4,000 rows in batches of 8: a whole epoch is hundreds of steps; a passed deadline stops it after one
    slow = SMALL_TRAIN.model_copy(update={"epochs": 3, "batch_size": 8})
    started = time.monotonic()
    frames = (synthetic(4000, 1), synthetic(200, 2))
    cut = _train(tiny, cfg=slow, deadline=started, frames=frames)
    whole = _train(tiny, cfg=slow.model_copy(update={"epochs": 1}), frames=frames)
    assert cut.metrics["epochs_run"] == 1 and cut.metrics["stopped_on_time"]
    assert np.isfinite(cut.model.predict(synthetic(5, 3))).all()
    assert cut.metrics["seconds"] < whole.metrics["seconds"] / 3  # it did not finish the epoch


@pytest.mark.parametrize(
    ("affinity", "quota", "period", "expected"),
    [
        (8, None, None, 8),  # no cgroup limit: the affinity
        (8, -1, 100_000, 8),  # cgroup v1 writes -1 for no limit
        (8, 200_000, 100_000, 2),  # a quota of 2 CPUs on an 8-core host
        (8, 150_000, 100_000, 2),  # 1.5 CPUs: rounded up
        (2, 400_000, 100_000, 2),  # the affinity is the smaller
        (4, 10_000, 100_000, 1),  # a tenth of a CPU: still one thread
        (0, None, None, 1),
    ],
)
def test_cpu_allowance_follows_affinity_and_cgroup_quota(affinity, quota, period, expected):
    from evergreen.model.threads import cpu_allowance

    assert cpu_allowance(affinity, quota, period) == expected


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("1", 1), (" 1 ", 1), ("1,1", 1), ("999", None), ("", None), ("two", None), ("0", None), ("\u00b2", None)],
)
def test_lightgbm_threads_are_capped_by_omp_num_threads(monkeypatch, setting, expected):
    """LightGBM's `num_threads` overrides OMP_NUM_THREADS, so the cap is applied in code: a count, or a list's
    first (outer) level as OpenMP reads it; anything else leaves the CPU allowance (None here)."""
    from evergreen.model.threads import available_cpus, openmp_threads

    monkeypatch.setenv("OMP_NUM_THREADS", setting)
    assert openmp_threads() == (expected or available_cpus())


def test_the_cgroup_quota_is_read_from_v2_then_v1(tmp_path):
    from evergreen.model.threads import _read_quota

    assert _read_quota(tmp_path) == (None, None)
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu/cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu/cpu.cfs_period_us").write_text("100000\n")
    assert _read_quota(tmp_path) == (None, 100_000)
    (tmp_path / "cpu/cpu.cfs_quota_us").write_text("250000\n")
    assert _read_quota(tmp_path) == (250_000, 100_000)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _read_quota(tmp_path) == (None, 100_000)
    (tmp_path / "cpu.max").write_text("300000 100000\n")
    assert _read_quota(tmp_path) == (300_000, 100_000)


@pytest.mark.parametrize(
    ("allowance", "busy", "processes", "expected"),
    [(2, 0.0, 1, 2), (2, 2.0, 1, 1), (2, 1.0, 1, 1), (8, 2.0, 1, 6), (8, 0.0, 2, 4), (8, 6.0, 2, 1), (1, 0, 1, 1)],
)
def test_threads_leave_the_cores_other_processes_keep_busy(allowance, busy, processes, expected):
    from evergreen.model.threads import choose_threads

    assert choose_threads(allowance, busy, processes) == expected


def test_configure_threads_sets_torch_once_at_the_stage_entry():
    from evergreen.model.threads import available_cpus, configure_threads

    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert 1 <= configure_threads("auto") <= available_cpus() and torch.get_num_threads() <= available_cpus()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("key", "value"), [("threads", 0), ("threads", "many"), ("batch_size", "big"), ("time_budget_s", -5)]
)
def test_bad_machine_settings_are_named(tiny_raw, key, value):
    from evergreen.errors import ConfigError

    tiny_raw["train"] = {key: value}
    with pytest.raises(ConfigError, match=rf"train\.{key}"):
        parse_params(tiny_raw)
