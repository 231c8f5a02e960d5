"""Behaviour of a network trained on the bundled bike-sharing data: invariance, direction, minimum quality.

The fixture runs the project's own ingest → clean → split functions on the bundled CSV and trains a smaller,
faster variant of the default params (one member, fewer epochs), so the tests need no pipeline run.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from evergreen.config import Params
from evergreen.data.clean import clean
from evergreen.data.io import read_text_table, resolve_source
from evergreen.data.split import split
from evergreen.model.export import signature
from evergreen.model.metrics import regression_metrics
from evergreen.model.network import TabularNet
from evergreen.model.train import train_model
from tests.harness import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def splits(bundled_params: Params) -> dict[str, pl.DataFrame]:
    data = bundled_params.data
    source = resolve_source(str(ROOT / data.source))
    raw = pl.concat([read_text_table(path, data) for path in source])
    return split(clean(raw, data, bundled_params.clean).clean, data, bundled_params.split)


@pytest.fixture(scope="module")
def model(splits: dict[str, pl.DataFrame], bundled_params: Params) -> TabularNet:
    quick_model = bundled_params.model.model_copy(update={"ensemble": 1})
    quick_train = bundled_params.train.model_copy(update={"epochs": 12, "device": "cpu"})
    result = train_model(splits["train"], splits["valid"], bundled_params.data, quick_model, quick_train,
                         progress=False)  # fmt: skip
    return result.model


def test_minimum_quality_on_the_test_split(model, splits):
    test = splits["test"]
    metrics = regression_metrics(test["cnt"].to_numpy(), model.predict(test))
    assert metrics["r2"] > 0.7, metrics


def test_the_id_column_changes_nothing(model, splits, bundled_params):
    test = splits["test"]
    assert bundled_params.data.id_column is not None
    id_column = bundled_params.data.id_column.name  # instant
    # the id is not an input: not a feature of the network, not a column of the served graph's signature
    assert id_column not in model.prep.features
    assert id_column not in [column["name"] for column in signature(model)["input"]["columns"]]
    base = model.predict(test)
    np.testing.assert_array_equal(model.predict(test.drop(id_column)), base)  # not even needed
    shifted = test.with_columns(pl.col(id_column) + 1_000_000)
    np.testing.assert_array_equal(model.predict(shifted), base)
    # the control: the same edit to a column the model does read changes its predictions, so the
    # equalities above would catch an id that leaked into the inputs
    for feature in ("hr", "yr"):  # integers like the id: one categorical, one numeric
        moved = model.predict(test.with_columns(pl.col(feature) + 1_000_000))
        assert not np.allclose(moved, base, rtol=1e-3), feature


def test_row_order_changes_nothing(model, splits):
    test = splits["test"]
    order = np.random.default_rng(0).permutation(test.height)
    np.testing.assert_allclose(model.predict(test[order]), model.predict(test)[order], rtol=1e-6)


def test_heavy_rain_does_not_raise_demand(model, splits):
    test = splits["test"]

    def mean_demand(weather: int) -> float:
        return float(model.predict(test.with_columns(weathersit=pl.lit(weather, dtype=pl.Int64))).mean())

    clear = mean_demand(1)
    assert mean_demand(4) <= clear
    assert mean_demand(3) < clear  # light rain or snow: about a thousand training rows, a clear effect


def test_more_recent_year_does_not_lower_demand(model, splits):
    test = splits["test"]
    assert model.predict(test.with_columns(yr=pl.lit(0, dtype=pl.Int64))).mean() < model.predict(test).mean()
