"""The generated suites on the bundled bike-sharing data: raw passes its critical checks, clean passes all."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from evergreen.config import Params
from evergreen.data.schema import EVENT_TIME, SOURCE_FILE, SOURCE_ROW, polars_type
from evergreen.validation.suites import generate_suite
from evergreen.validation.summary import critical_failures, failure_message
from tests.harness import imported_when_used

gx_adapter = imported_when_used("evergreen.validation.gx_adapter")

ROOT = Path(__file__).resolve().parents[2]
HOUR_CSV = ROOT / "data/source/bike-sharing/hour.csv"


@pytest.fixture(scope="module")
def raw_frame() -> pl.DataFrame:
    frame = pl.read_csv(HOUR_CSV, infer_schema=False)
    return frame.with_columns(
        pl.lit(str(HOUR_CSV.relative_to(ROOT))).alias(SOURCE_FILE),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(SOURCE_ROW),
    )


def _typed(name: str, dtype: pl.DataType) -> pl.Expr:
    text = pl.col(name).str.strip_chars()
    # polars 2 no longer casts strings to dates; it has a parser for that
    return (text.str.to_date("%Y-%m-%d") if dtype == pl.Date else text.cast(dtype)).alias(name)


@pytest.fixture(scope="module")
def clean_frame(raw_frame: pl.DataFrame, bundled_params: Params) -> pl.DataFrame:
    # a minimal cleaning done here, independent of `evergreen.data.clean`, so the suite is tested on its own
    data = bundled_params.data
    typed = raw_frame.filter(~pl.all_horizontal(pl.col(data.names).is_null())).select(
        _typed(c.name, polars_type(c)) for c in data.columns
    )
    return typed.with_columns(
        (pl.col("dteday").cast(pl.Datetime("us")) + pl.duration(hours=pl.col("hr"))).alias(EVENT_TIME)
    )


def test_bundled_raw_data_is_dirty(raw_frame: pl.DataFrame) -> None:
    # guards the next test: it must run on the dirt, not on data someone tidied
    assert raw_frame.filter(pl.col("hr") == "0 ").height == 1
    assert raw_frame.filter(pl.col("instant").is_null()).height >= 1


def test_raw_suite_has_no_critical_failure(raw_frame: pl.DataFrame, bundled_params: Params) -> None:
    summary = gx_adapter.validate_frame(raw_frame, generate_suite(bundled_params.data, "raw"))
    assert critical_failures(summary) == [], failure_message(summary, "validate_raw")
    assert summary.row_count == raw_frame.height


def test_clean_suite_passes_completely(clean_frame: pl.DataFrame, bundled_params: Params) -> None:
    summary = gx_adapter.validate_frame(clean_frame, generate_suite(bundled_params.data, "clean"))
    assert summary.success, failure_message(summary, "validate_clean")
    assert summary.row_count == 17379


def test_out_of_range_temp_fails_with_a_readable_message(clean_frame: pl.DataFrame, bundled_params: Params) -> None:
    bad = clean_frame.with_columns(
        pl.when(pl.col("instant").is_in([10, 20])).then(5.0).otherwise(pl.col("temp")).alias("temp")
    )
    summary = gx_adapter.validate_frame(bad, generate_suite(bundled_params.data, "clean"))
    message = failure_message(summary, "validate_clean")
    assert message.count("\n") == 0, message  # exactly one failed critical expectation
    assert "expect_column_values_to_be_between" in message
    assert "'temp'" in message
    assert "2 of 17379 rows" in message
    assert "5.0" in message
