from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from evergreen.config import DataConfig, SplitConfig, parse_params
from evergreen.data.schema import EVENT_TIME
from evergreen.data.split import check_leakage, split
from evergreen.errors import DataError


def _frame(n: int = 100) -> pl.DataFrame:
    start = dt.datetime(2011, 1, 1)
    return pl.DataFrame(
        {
            "id": list(range(1, n + 1)),
            "y": [i % 2 for i in range(n)],
            EVENT_TIME: [start + dt.timedelta(hours=i) for i in range(n)],
        }
    )


def test_time_split_by_dates(tiny):
    config = SplitConfig(valid_from=dt.datetime(2011, 1, 3), test_from=dt.datetime(2011, 1, 4))
    parts = split(_frame(), tiny.data, config)
    assert [parts[p].height for p in ("train", "valid", "test")] == [48, 24, 28]
    assert parts["train"][EVENT_TIME].max() < parts["valid"][EVENT_TIME].min()


def test_time_split_by_fractions(tiny):
    parts = split(_frame(), tiny.data, SplitConfig(valid_fraction=0.2, test_fraction=0.1))
    assert [parts[p].height for p in ("train", "valid", "test")] == [70, 20, 10]


def test_empty_part_says_why(tiny):
    config = SplitConfig(valid_from=dt.datetime(2011, 1, 3), test_from=dt.datetime(2013, 1, 1))
    with pytest.raises(DataError, match=r"the 'test' part is empty \(data runs from 2011-01-01 00:00:00"):
        split(_frame(), tiny.data, config)


def _classification(tiny_raw) -> DataConfig:
    tiny_raw["data"]["task"] = "classification"
    return parse_params(tiny_raw).data


def test_random_split_is_stratified_and_seeded(tiny_raw):
    data = _classification(tiny_raw)
    config = SplitConfig(method="random", valid_fraction=0.2, test_fraction=0.2, seed=7)
    parts = split(_frame(), data, config)
    assert [parts[p].height for p in ("train", "valid", "test")] == [60, 20, 20]
    for part in parts.values():
        assert part["y"].mean() == pytest.approx(0.5)  # both classes in the same share everywhere
    again = split(_frame(), data, config)
    assert parts["test"]["id"].to_list() == again["test"]["id"].to_list()
    other = split(_frame(), data, config.model_copy(update={"seed": 8}))
    assert parts["test"]["id"].to_list() != other["test"]["id"].to_list()


def test_leakage_of_ids_is_caught(tiny):
    frame = _frame()
    parts = {"train": frame.head(50), "valid": frame.slice(49, 10), "test": frame.tail(10)}
    with pytest.raises(DataError, match=r"1 id value\(s\) are in both train and valid: 50"):
        check_leakage(parts, tiny.data, SplitConfig(method="random"))


def test_time_overlap_is_caught(tiny):
    frame = _frame()
    parts = {
        "train": frame.head(60),
        "valid": frame.slice(50, 20).with_columns(pl.col("id") + 1000),
        "test": frame.tail(10),
    }
    with pytest.raises(DataError, match="split leaks: train ends at"):
        check_leakage(parts, tiny.data, SplitConfig())


def test_a_class_missing_from_valid_or_test_is_a_warning(tiny_raw):
    from evergreen.data.split import summarize

    tiny_raw["data"]["columns"][-1] = {"name": "y", "type": "int", "role": "target", "allowed": [0, 1, 2]}
    data = _classification(tiny_raw)
    frame = _frame().with_columns(y=pl.when(pl.col("id") <= 3).then(2).otherwise(pl.col("y")))
    parts = split(frame, data, SplitConfig(method="time", valid_fraction=0.2, test_fraction=0.2))
    summary = summarize(parts, data)
    assert summary["warnings"] == [
        "class(es) 2 of 'y' missing from the valid part",
        "class(es) 2 of 'y' missing from the test part",
    ]
    assert "warnings" not in summarize(parts)  # regression summaries have none
