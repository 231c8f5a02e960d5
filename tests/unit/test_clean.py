"""Each cleaning rule on a tiny frame: what is repaired, what is quarantined and why."""

from __future__ import annotations

import datetime as dt

import polars as pl

from evergreen.config import CleanConfig
from evergreen.data.clean import clean
from evergreen.data.schema import EVENT_TIME, LINEAGE, REASON

COLUMNS = ["id", "day", "hr", "weather", "temp", "hum", "y"]


def _raw(*rows: tuple[str | None, ...]) -> pl.DataFrame:
    frame = pl.DataFrame([list(r) for r in rows], schema=COLUMNS, orient="row")
    return frame.with_columns(
        pl.lit("in/a.csv").alias(LINEAGE[0]), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINEAGE[1])
    )


GOOD = ("1", "2011-01-01", "3", "1", "0.5", "0.5", "10")


def _reasons(result) -> dict[str, str]:
    return dict(zip(result.quarantine["id"].to_list(), result.quarantine[REASON].to_list(), strict=True))


def test_strips_and_types_cells(tiny):
    result = clean(_raw(("1 ", " 2011-01-01", "0 ", "1", "0.5", "0.5", "10")), tiny.data, CleanConfig())
    row = result.clean.row(0, named=True)
    assert row["hr"] == 0 and row["id"] == 1 and row["day"] == dt.date(2011, 1, 1)
    assert row[EVENT_TIME] == dt.datetime(2011, 1, 1, 0)
    assert result.clean.schema["temp"] == pl.Float64 and result.quarantine.height == 0


def test_event_time_adds_the_hour(tiny):
    result = clean(_raw(("1", "2011-01-01", "13", "1", "0.5", "0.5", "10")), tiny.data, CleanConfig())
    assert result.clean[EVENT_TIME][0] == dt.datetime(2011, 1, 1, 13)


def test_wrong_typed_cell_is_quarantined_with_reason_and_lineage(tiny):
    result = clean(_raw(GOOD, ("2", "2011-01-01", "noon", "1", "0.5", "0.5", "10")), tiny.data, CleanConfig())
    assert result.clean["id"].to_list() == [1]
    assert _reasons(result) == {"2": "unparseable:hr"}
    assert result.quarantine[LINEAGE[1]].to_list() == [2]  # names the row in its file
    assert result.quarantine["hr"].to_list() == ["noon"]  # the original text is kept


def test_fractional_int_is_unparseable_but_integral_float_text_is_fine(tiny):
    rows = (
        GOOD,
        ("2", "2011-01-01", "4.0", "1", "0.5", "0.5", "10"),
        ("3", "2011-01-01", "4.5", "1", "0.5", "0.5", "1"),
    )
    result = clean(_raw(*rows), tiny.data, CleanConfig())
    assert result.clean["hr"].to_list() == [3, 4]
    assert _reasons(result) == {"3": "unparseable:hr"}


def test_exact_duplicates_are_dropped_into_quarantine(tiny):
    result = clean(_raw(GOOD, GOOD), tiny.data, CleanConfig())
    assert result.clean.height == 1
    assert _reasons(result) == {"1": "duplicate_row"}
    assert result.summary()["quarantined_by_reason"] == {"duplicate_row": 1}


def test_duplicates_can_be_kept(tiny):
    result = clean(_raw(GOOD, GOOD), tiny.data, CleanConfig(drop_duplicates=False))
    assert result.clean.height == 2


def test_blank_row_has_one_reason(tiny):
    result = clean(_raw(GOOD, (None,) * 7), tiny.data, CleanConfig())
    assert result.quarantine[REASON].to_list() == ["empty_row"]


def test_missing_value_quarantined_by_default_and_kept_for_the_model_where_imputed(tiny):
    rows = (
        GOOD,
        ("2", "2011-01-01", "4", "1", "0.5", "0.7", "20"),
        ("3", "2011-01-01", "5", "", "0.5", "0.5", "30"),  # weather missing: quarantine (default)
        ("4", "2011-01-01", "6", "1", "0.5", None, "40"),  # hum missing: impute_median
    )
    result = clean(_raw(*rows), tiny.data, CleanConfig())
    assert _reasons(result) == {"3": "missing:weather"}
    # the row is kept and the cell left null: the model fills it with the train split's median
    assert result.clean.filter(pl.col("id") == 4)["hum"].item() is None
    assert result.imputed == {"hum": 1}


def test_a_median_is_never_computed_over_rows_of_other_splits(tiny):
    """Regression (issue 21): clean filled hum with the median of every row, test rows included, before split.
    Extreme values in some rows must not change what another row's missing cell becomes."""
    rows = [("1", "2011-01-01", "3", "1", "0.5", None, "10")]
    calm = [(str(i), "2011-01-02", "3", "1", "0.5", "0.2", "10") for i in range(2, 8)]
    wild = [(str(i), "2011-01-02", "3", "1", "0.5", "0.9", "10") for i in range(2, 8)]
    first = clean(_raw(*rows, *calm), tiny.data, CleanConfig()).clean
    second = clean(_raw(*rows, *wild), tiny.data, CleanConfig()).clean
    assert first.filter(pl.col("id") == 1)["hum"].item() is None
    assert first.filter(pl.col("id") == 1).equals(second.filter(pl.col("id") == 1))


def test_impute_mode_and_constant(tiny_raw):
    from evergreen.config import parse_params

    tiny_raw["data"]["columns"][3]["missing"] = "impute_mode"
    tiny_raw["data"]["columns"][6].update(missing="impute_constant", fill_value=0)
    data = parse_params(tiny_raw).data
    rows = (
        GOOD,
        ("2", "2011-01-01", "4", "1", "0.5", "0.5", ""),
        ("3", "2011-01-01", "5", None, "0.5", "0.5", "3"),
    )
    result = clean(_raw(*rows), data, CleanConfig())
    assert result.quarantine.height == 0
    # a constant is no statistic of the data: clean fills it; a mode is the model's to learn on the train split
    assert result.clean["weather"].to_list() == [1, 1, None] and result.clean["y"].to_list() == [10, 0, 3]
    assert result.imputed == {"weather": 1, "y": 1}


def test_out_of_range_clipped_or_quarantined_as_declared(tiny):
    rows = (
        GOOD,
        ("2", "2011-01-01", "4", "1", "1.7", "0.5", "20"),  # temp clips to 1
        ("3", "2011-01-01", "99", "1", "0.5", "0.5", "30"),  # hr outside [0, 23]: quarantine
        ("4", "2011-01-01", "5", "7", "0.5", "0.5", "30"),  # weather not in {1, 2, 3}: quarantine
        ("5", "2011-01-01", "5", "1", "0.5", "0.5", "-3"),  # y below 0: quarantine
    )
    result = clean(_raw(*rows), tiny.data, CleanConfig())
    assert result.clean.filter(pl.col("id") == 2)["temp"].item() == 1.0
    assert result.clipped == {"temp": 1}
    assert _reasons(result) == {"3": "out_of_range:hr", "4": "out_of_range:weather", "5": "out_of_range:y"}


def test_several_reasons_are_all_named(tiny):
    result = clean(_raw(GOOD, ("2", "someday", "x", "1", "0.5", "0.5", "-1")), tiny.data, CleanConfig())
    assert _reasons(result) == {"2": "unparseable:day; unparseable:hr; out_of_range:y"}


def test_all_null_column_quarantines_every_row_with_its_name(tiny):
    rows = [
        ("1", "2011-01-01", "3", None, "0.5", "0.5", "10"),
        ("2", "2011-01-01", "4", None, "0.5", "0.5", "1"),
    ]
    result = clean(_raw(*rows), tiny.data, CleanConfig())
    assert result.clean.height == 0
    assert result.summary()["quarantined_by_reason"] == {"missing:weather": 2}


def test_counts_add_up(tiny):
    rows = (
        GOOD,
        GOOD,
        ("2", "2011-01-01", "x", "1", "0.5", "0.5", "10"),
        ("3", "2011-01-01", "4", "1", "0.5", "0.5", "1"),
    )
    summary = clean(_raw(*rows), tiny.data, CleanConfig()).summary()
    assert summary["rows_in"] == summary["rows_out"] + summary["rows_quarantined"] == 4


def test_input_frame_is_not_mutated(tiny):
    raw = _raw(("1 ", "2011-01-01", "0 ", "1", "0.5", "0.5", "10"))
    before = raw.clone()
    clean(raw, tiny.data, CleanConfig())
    assert raw.equals(before)


def test_the_clean_suite_lets_the_model_fill_imputed_columns(tiny_raw):
    """hum (`impute_median`) keeps its nulls through clean: the clean suite must not expect it non-null."""
    from evergreen.config import parse_params
    from evergreen.validation.suites import generate_suite

    def not_null(suite: dict) -> set[str]:
        return {
            e["kwargs"]["column"] for e in suite["expectations"] if e["type"] == "expect_column_values_to_not_be_null"
        }

    data = parse_params(tiny_raw).data
    assert "hum" not in not_null(generate_suite(data, "clean")) and "temp" in not_null(generate_suite(data, "clean"))
    # a column without its own policy follows clean.missing
    assert "temp" not in not_null(generate_suite(data, "clean", default_missing="impute_median"))


def test_a_value_outside_a_declared_order_follows_the_out_of_range_policy(tiny_raw):
    from evergreen.config import parse_params

    tiny_raw["data"]["columns"].insert(
        6, {"name": "grade", "type": "str", "role": "feature", "order": ["low", "medium", "high"]}
    )
    data = parse_params(tiny_raw).data
    frame = pl.DataFrame(
        [[*GOOD[:6], g, GOOD[6]] for g in ("low", "high", "extreme")],
        schema=[*COLUMNS[:6], "grade", "y"],
        orient="row",
    ).with_columns(
        pl.lit("in/a.csv").alias(LINEAGE[0]), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINEAGE[1])
    )
    result = clean(frame.with_columns(id=pl.Series(["1", "2", "3"])), data, CleanConfig())
    assert result.clean["grade"].to_list() == ["low", "high"]
    assert _reasons(result) == {"3": "out_of_range:grade"}
