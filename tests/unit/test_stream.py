"""A train split streamed from its Parquet pieces (`evergreen.model.stream`): samples, shards, shuffled epochs,
and training on it as on the split in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from evergreen.config import Params, parse_params
from evergreen.config.train import StreamConfig
from evergreen.data.parquet_rows import ParquetRows, sample_rows
from evergreen.model.distributed import Group
from evergreen.model.preprocess import fit_preprocessing
from evergreen.model.stream import StreamedRows, shards
from evergreen.model.train import train_model
from tests.harness import SMALL_MODEL, SMALL_TRAIN, synthetic


def _pieces(tmp_path: Path, frame: pl.DataFrame, sizes: list[int]) -> ParquetRows:
    """`frame` written as consecutive Parquet pieces of `sizes` rows (small record batches: several per piece)."""
    paths, start = [], 0
    for i, size in enumerate(sizes):
        path = tmp_path / f"piece-{i}.parquet"
        frame.slice(start, size).write_parquet(path, row_group_size=16)
        paths.append(path)
        start += size
    return ParquetRows.of(paths)


def _ids(source: ParquetRows) -> StreamedRows:
    """A stream whose input matrix is the id alone: what each epoch hands training, row by row."""
    ids = lambda f: (f["id"].cast(pl.Float32).to_numpy()[:, None], f["id"].to_numpy())  # noqa: E731
    return StreamedRows(source, ["id"], ids, buffer_rows=40)


def test_a_sample_is_exact_seeded_and_read_one_piece_at_a_time(tmp_path):
    frame = synthetic(300, 1)
    source = _pieces(tmp_path, frame, [100, 50, 150])
    assert source.rows == (100, 50, 150) and source.total == 300
    sample = sample_rows(source, 40, seed=3)
    assert sample.height == 40 and sample["id"].n_unique() == 40
    assert sample["id"].is_sorted()  # in file order
    assert set(sample["id"]) <= set(frame["id"])
    assert sample.equals(sample_rows(source, 40, seed=3))
    assert not sample.equals(sample_rows(source, 40, seed=4))
    assert sample_rows(source, 1000, seed=3).equals(frame)  # fewer rows than asked: all of them


def test_shards_balance_the_rows_and_give_each_piece_to_one_rank():
    owned = shards([50, 30, 30, 10, 5], 2)
    assert sorted(i for mine in owned for i in mine) == [0, 1, 2, 3, 4]
    loads = [sum([50, 30, 30, 10, 5][i] for i in mine) for mine in owned]
    assert max(loads) - min(loads) <= 10
    assert shards([7], 3) == [[0], [], []]


def test_an_epoch_reads_every_row_once_in_a_seeded_shuffled_order(tmp_path):
    source = _pieces(tmp_path, synthetic(250, 1), [100, 50, 100])
    stream = _ids(source)
    assert stream.steps(32, 1) == 8

    def epoch(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        batches = list(stream.batches(generator, 32, Group()))
        assert len(batches) == 8 and all(weight == 1.0 for *_, weight in batches)
        assert [rows for _, _, rows, _ in batches] == [32] * 7 + [26]
        return [int(v) for _, y, _, _ in batches for v in y]

    order = epoch(0)
    assert sorted(order) == sorted(synthetic(250, 1)["id"].to_list())  # every row, once
    assert order != sorted(order)  # shuffled
    assert epoch(0) == order and epoch(1) != order


def test_each_rank_reads_its_own_pieces_and_all_take_the_same_steps(tmp_path):
    frame = synthetic(250, 1)
    source = _pieces(tmp_path, frame, [150, 50, 50])
    stream = _ids(source)
    epochs = []
    for rank in (0, 1):
        generator = torch.Generator().manual_seed(0)
        epochs.append(list(stream.batches(generator, 32, Group(rank=rank, world=2))))
    assert len(epochs[0]) == len(epochs[1]) == stream.steps(32, 2) == 10  # 150 rows at 16 a step
    seen = [[int(v) for _, y, rows, _ in batches if rows for v in y] for batches in epochs]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(frame["id"].to_list())
    # the rank with 100 rows pads its last three steps with one row at weight 0
    assert [(rows, weight) for _, _, rows, weight in epochs[1][-3:]] == [(0, 0.0)] * 3
    assert [rows for _, _, rows, _ in epochs[1][:7]] == [16] * 6 + [4]


@pytest.fixture
def mixed(tiny_raw: dict[str, Any]) -> Params:
    """The tiny dataset with a string feature and a mode-imputed categorical: every statistic preprocessing fits."""
    columns = tiny_raw["data"]["columns"]
    for column in columns:
        if column["name"] in ("weather", "temp"):
            column["missing"] = "impute_mode"
    columns.append({"name": "zone", "type": "str", "role": "feature", "kind": "categorical"})
    return parse_params(tiny_raw)


def _with_zone(frame: pl.DataFrame) -> pl.DataFrame:
    zones = pl.Series(["north", "south", None, "east"] * (frame.height // 4 + 1)).head(frame.height)
    return frame.with_columns(zone=zones)


def test_preprocessing_fitted_in_a_streaming_pass_matches_the_one_fitted_in_memory(tmp_path, mixed):
    every = pl.int_range(pl.len())
    frame = _with_zone(synthetic(400, 1)).with_columns(
        weather=pl.when(every % 7 == 0).then(None).otherwise(pl.col("weather")),
        hum=pl.when(every % 5 == 0).then(None).otherwise(pl.col("hum")),
        temp=pl.col("temp").round(1),  # a mode to impute
    )
    source = _pieces(tmp_path, frame, [150, 250])
    in_memory = fit_preprocessing(frame, mixed.data, SMALL_MODEL)
    streamed = fit_preprocessing(source, mixed.data, SMALL_MODEL, median_sample=frame)
    exact = ["features", "kinds", "vocabularies", "string_vocabularies", "constant", "categorical_fill",
             "numeric_fill"]  # fmt: skip
    for name in exact:
        assert getattr(streamed, name) == getattr(in_memory, name), name
    for name in ("numeric_mean", "numeric_std"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(in_memory, name), rtol=1e-12)
    for name in ("target_mean", "target_std", "target_scale"):
        assert getattr(streamed, name) == pytest.approx(getattr(in_memory, name), rel=1e-12)


def test_training_on_a_streamed_split_learns_as_training_in_memory_does(tmp_path, tiny):
    train, valid = synthetic(600, 1), synthetic(200, 2)
    source = _pieces(tmp_path, train, [200, 250, 150])
    cfg = SMALL_TRAIN.model_copy(update={"stream": StreamConfig(shuffle_rows=128, sample_rows=300)})
    streamed = train_model(source, valid, tiny.data, SMALL_MODEL, cfg, progress=False)
    in_memory = train_model(train, valid, tiny.data, SMALL_MODEL, cfg, progress=False)
    assert streamed.metrics["streamed"] and "streamed" not in in_memory.metrics
    assert streamed.metrics["n_train"] == 600 and streamed.metrics["epochs_run"] == in_memory.metrics["epochs_run"]
    assert streamed.metrics["valid"]["r2"] > 0.5
    assert streamed.metrics["valid"]["rmse"] < 1.3 * in_memory.metrics["valid"]["rmse"]
    again = train_model(source, valid, tiny.data, SMALL_MODEL, cfg, progress=False)
    assert again.history == streamed.history  # one seed, one result


def test_a_streamed_classifier_weighs_its_classes_from_a_streaming_count(tmp_path, tiny_raw):
    tiny_raw["data"]["task"] = "classification"
    params = parse_params(tiny_raw)
    train, valid = synthetic(600, 1, "classification"), synthetic(200, 2, "classification")
    source = _pieces(tmp_path, train, [300, 300])
    counts = _ids(source).class_counts("y", [0, 1])
    assert counts.tolist() == train["y"].value_counts().sort("y")["count"].to_list()
    balanced = SMALL_TRAIN.model_copy(update={"class_weight": "balanced"})
    result = train_model(source, valid, params.data, SMALL_MODEL, balanced, progress=False)
    assert result.model.prep.classes == [0, 1]
    assert result.metrics["valid"]["roc_auc"] > 0.8


class _Killed(Exception):
    pass


def _killed_after_epoch_1(record: dict[str, Any]) -> None:
    if record["epoch"] == 1:
        raise _Killed  # the process dies right after the checkpoint of epoch 1 was written


def test_a_killed_streamed_run_resumes_only_under_the_same_stream_settings(tmp_path, tiny, capsys):
    train, valid = synthetic(600, 1), synthetic(200, 2)
    source = _pieces(tmp_path, train, [300, 300])
    cfg = SMALL_TRAIN.model_copy(update={"epochs": 3, "stream": StreamConfig(shuffle_rows=128, sample_rows=300)})
    other = cfg.model_copy(update={"stream": StreamConfig(shuffle_rows=64, sample_rows=300)})

    def killed_then_rerun(rows: Any, rerun_cfg: Any) -> tuple[Any, str]:
        checkpoint = tmp_path / f"{len(list(tmp_path.glob('*.pt')))}.pt"
        with pytest.raises(_Killed):
            train_model(rows, valid, tiny.data, SMALL_MODEL, cfg, progress=False, checkpoint=checkpoint,
                        on_epoch=_killed_after_epoch_1)  # fmt: skip
        capsys.readouterr()
        result = train_model(rows, valid, tiny.data, SMALL_MODEL, rerun_cfg, progress=False, checkpoint=checkpoint)
        return result, capsys.readouterr().out

    uninterrupted = train_model(source, valid, tiny.data, SMALL_MODEL, cfg, progress=False)
    resumed, said = killed_then_rerun(source, cfg)
    assert "resuming from" in said  # a second pass over the pieces fits the same statistics, to the last bit
    assert resumed.history == uninterrupted.history
    _, said = killed_then_rerun(source, other)
    assert "written for other params or data" in said  # another shuffle buffer gives other batches
    _, said = killed_then_rerun(train, other)
    assert "resuming from" in said  # in memory the stream settings read nothing
