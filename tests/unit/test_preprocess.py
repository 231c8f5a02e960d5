"""The preprocessing contract (issue 21): every fill value is learnt on the train split only and travels inside
the model; a declared order makes a string column one ranked number for every family."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from evergreen.config import ModelConfig, SplitConfig, parse_params
from evergreen.data.clean import clean
from evergreen.data.schema import LINEAGE
from evergreen.data.split import split
from evergreen.model.network import TabularNet
from evergreen.model.preprocess import Preprocessing, fit_preprocessing
from tests.harness import SMALL_MODEL, synthetic

CUTS = SplitConfig(method="time", valid_from=dt.datetime(2024, 1, 8), test_from=dt.datetime(2024, 1, 10))


def _raw(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` as ingest keeps it: text cells plus lineage."""
    return frame.with_columns(pl.all().cast(pl.String)).with_columns(
        pl.lit("in/a.csv").alias(LINEAGE[0]), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINEAGE[1])
    )


def _table(test_hum: float | None) -> pl.DataFrame:
    """Ten days of hourly rows; 40% of hum missing; the test days' hum set to `test_hum` (None: as drawn)."""
    frame = synthetic(240, 7).with_columns(
        hum=pl.when(pl.int_range(pl.len()) % 5 < 2).then(None).otherwise(pl.col("hum"))
    )
    if test_hum is not None:
        frame = frame.with_columns(
            hum=pl.when(pl.col("day") >= CUTS.test_from.date()).then(pl.lit(test_hum)).otherwise(pl.col("hum"))
        )
    return frame


def _train_part(frame: pl.DataFrame, data: Any) -> pl.DataFrame:
    from evergreen.config import CleanConfig

    return split(clean(_raw(frame), data, CleanConfig()).clean, data, CUTS)["train"]


def test_extreme_test_rows_change_nothing_the_model_learns(tiny):
    """Regression (issue 21): clean imputed hum with the median of every row before split, so test rows shaped
    the values the train split held. Now the fill is the train-only median, whatever the test rows hold."""
    calm, wild = (_train_part(_table(v), tiny.data) for v in (None, 0.99))
    assert calm.equals(wild)
    assert calm["hum"].null_count() > 0  # left for the model to fill
    prep = fit_preprocessing(calm, tiny.data, SMALL_MODEL)
    fill = prep.numeric_fill[prep.numeric.index(prep.features.index("hum"))]
    assert fill == pytest.approx(float(calm["hum"].drop_nulls().median()))
    assert fit_preprocessing(wild, tiny.data, SMALL_MODEL) == prep


def test_the_network_fills_a_missing_value_with_the_train_fitted_value(tiny):
    train = _train_part(_table(None), tiny.data)
    net = TabularNet(fit_preprocessing(train, tiny.data, SMALL_MODEL), SMALL_MODEL).eval()
    fill = net.prep.numeric_fill[net.prep.numeric.index(net.prep.features.index("hum"))]
    rows = synthetic(4, 3)
    np.testing.assert_allclose(
        net.predict(rows.with_columns(hum=pl.lit(None, dtype=pl.Float64))),
        net.predict(rows.with_columns(hum=pl.lit(fill))),
        rtol=1e-6,
    )


def test_impute_mode_fills_a_categorical_with_its_train_mode(tiny_raw):
    tiny_raw["data"]["columns"][3]["missing"] = "impute_mode"  # weather
    data = parse_params(tiny_raw).data
    train = synthetic(300, 1).with_columns(weather=pl.when(pl.col("id") % 2 == 0).then(2).otherwise(pl.col("weather")))
    prep = fit_preprocessing(train, data, SMALL_MODEL)
    assert prep.categorical_fill[prep.categorical.index(prep.features.index("weather"))] == 2.0
    assert prep.categorical_fill[prep.categorical.index(prep.features.index("hr"))] is None  # unknown bucket
    net = TabularNet(prep, SMALL_MODEL).eval()
    rows = synthetic(4, 3)
    np.testing.assert_allclose(
        net.predict(rows.with_columns(weather=pl.lit(None, dtype=pl.Int64))),
        net.predict(rows.with_columns(weather=pl.lit(2, dtype=pl.Int64))),
        rtol=1e-6,
    )


def test_a_model_saved_before_categorical_fills_loads(tiny, tmp_path):
    prep = fit_preprocessing(synthetic(200, 1), tiny.data, SMALL_MODEL)
    old = Preprocessing.from_dict({k: v for k, v in prep.to_dict().items() if k != "categorical_fill"})
    net = TabularNet(old, SMALL_MODEL)
    state = {k: v for k, v in net.state_dict().items() if k != "categorical_fill"}
    torch.save({"state_dict": state, "config": SMALL_MODEL.model_dump(mode="json"),
                "preprocessing": old.to_dict(), "params": {}}, tmp_path / "old.pt")  # fmt: skip
    loaded = TabularNet.load(tmp_path / "old.pt")
    assert torch.isnan(loaded.categorical_fill).all()  # missing codes still go to the unknown bucket


def _ordered(tiny_raw: dict[str, Any]) -> tuple[Any, pl.DataFrame]:
    order = ["Fair", "Good", "Very Good", "Premium", "Ideal"]
    tiny_raw["data"]["columns"].insert(6, {"name": "cut", "type": "str", "role": "feature", "order": order})
    data = parse_params(tiny_raw).data
    frame = synthetic(300, 1)
    cut = pl.Series("cut", [order[i % 5] for i in range(frame.height)])
    return data, frame.with_columns(cut)


def test_a_declared_order_is_one_ranked_numeric_feature(tiny_raw):
    data, frame = _ordered(tiny_raw)
    prep = fit_preprocessing(frame, data, SMALL_MODEL)
    position = prep.features.index("cut")
    assert prep.kinds[position] == "numeric"
    assert prep.string_vocabularies["cut"] == ["Fair", "Good", "Very Good", "Premium", "Ideal"]  # not sorted
    column = prep.matrix(pl.DataFrame({"cut": ["Fair", "Ideal", "Good", "Bad", None]}).with_columns(
        *(pl.lit(0.0).alias(n) for n in prep.input_columns if n != "cut")
    ))[:, position]  # fmt: skip
    np.testing.assert_array_equal(column[:3], [0.0, 4.0, 1.0])
    assert np.isnan(column[3:]).all()  # outside the order, or missing: the train median rank fills it
    assert prep.numeric_fill[prep.numeric.index(position)] == 2.0
    assert "cut" not in [prep.features[i] for i in prep.categorical]


def test_the_network_treats_the_rank_as_a_number(tiny_raw):
    data, frame = _ordered(tiny_raw)
    model = ModelConfig(hidden=[8], embedding_dim=4)
    net = TabularNet(fit_preprocessing(frame, data, model), model).eval()
    rows = frame.head(3)
    numeric, _ = net.encode(torch.from_numpy(net.prep.matrix(rows)))
    column = net.prep.numeric.index(net.prep.features.index("cut"))
    ranks = torch.tensor([0.0, 1.0, 2.0])
    expected = (ranks - net.numeric_mean[column]) / net.numeric_std[column]
    torch.testing.assert_close(numeric[:, column], expected)


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ({"type": "int", "order": ["a", "b"]}, "order needs a str column"),
        ({"type": "str", "order": ["a", "a"]}, "two or more distinct values"),
        ({"type": "str", "order": ["a", "b"], "allowed": ["a", "c"]}, "must hold the same values"),
    ],
)
def test_a_bad_order_is_named(tiny_raw, column, message):
    from evergreen.errors import ConfigError

    tiny_raw["data"]["columns"].insert(6, {"name": "cut", "role": "feature", **column})
    with pytest.raises(ConfigError, match=rf"data\.columns\[6\].*{message}"):
        parse_params(tiny_raw)
