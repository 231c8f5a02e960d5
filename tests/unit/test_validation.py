"""Suites from a tiny declaration, run through GX on tiny polars frames."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jinja2
import polars as pl
import pytest

from evergreen.config import DataConfig, Params, parse_params
from evergreen.data.schema import EVENT_TIME, SOURCE_FILE, SOURCE_ROW
from evergreen.errors import EvergreenError, ValidationFailed
from evergreen.validation.stage import run_validation
from evergreen.validation.suites import generate_suite, load_suite, write_suites
from evergreen.validation.summary import critical_failures, failure_message, summary_line, warnings
from evergreen.workspace import Workspace
from tests.harness import imported_when_used

gx_adapter = imported_when_used("evergreen.validation.gx_adapter")


@pytest.fixture
def data() -> DataConfig:
    raw = {
        "data": {
            "source": "x.csv",
            "task": "regression",
            "timestamp": {"column": "day"},
            "columns": [
                {"name": "id", "type": "int", "role": "id", "min": 1},
                {"name": "day", "type": "date", "role": "timestamp", "min": "2020-01-01"},
                {"name": "colour", "type": "str", "role": "feature", "allowed": ["red", "blue"]},
                {"name": "x", "type": "float", "role": "feature", "min": 0, "max": 1},
                {"name": "note", "type": "str", "role": "ignore", "nullable": True},
                {"name": "y", "type": "int", "role": "target", "min": 0},
            ],
        }
    }
    return parse_params(raw).data


def _raw(n: int = 20, **overrides: list) -> pl.DataFrame:
    cols = {
        "id": [str(i) for i in range(1, n + 1)],
        "day": ["2020-01-02"] * n,
        "colour": ["red"] * n,
        "x": ["0.5 "] * n,  # trailing space: dirty but usable, must pass
        "note": [None] * n,
        "y": [" 3"] * n,
    }
    cols.update(overrides)
    frame = pl.DataFrame(cols, schema={k: pl.String for k in cols})
    return frame.with_columns(pl.lit("x.csv").alias(SOURCE_FILE), pl.int_range(1, n + 1).alias(SOURCE_ROW))


def _clean(n: int = 20) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": list(range(1, n + 1)),
            "day": [dt.date(2020, 1, 2)] * n,
            "colour": ["red", "blue"] * (n // 2),
            "x": [0.5] * n,
            "note": [None] * n,
            "y": [3] * n,
            EVENT_TIME: [dt.datetime(2020, 1, 2) + dt.timedelta(hours=i) for i in range(n)],
        },
        schema={
            "id": pl.Int64,
            "day": pl.Date,
            "colour": pl.String,
            "x": pl.Float64,
            "note": pl.String,
            "y": pl.Int64,
            EVENT_TIME: pl.Datetime("us"),
        },
    )


def test_every_expectation_is_marked_critical_or_not(data: DataConfig) -> None:
    for stage in ("raw", "clean"):
        suite = generate_suite(data, stage)
        assert suite["name"] == stage
        assert all(isinstance(e["meta"]["critical"], bool) for e in suite["expectations"])
    clean_types = [e["type"] for e in generate_suite(data, "clean")["expectations"]]
    assert "expect_column_values_to_be_in_set" in clean_types
    # nullable `note` gets no not-null check
    not_null = [
        e["kwargs"]["column"]
        for e in generate_suite(data, "clean")["expectations"]
        if e["type"] == "expect_column_values_to_not_be_null"
    ]
    assert "note" not in not_null and "id" in not_null


def test_dirty_but_usable_raw_data_passes(data: DataConfig) -> None:
    summary = gx_adapter.validate_frame(_raw(), generate_suite(data, "raw"))
    assert critical_failures(summary) == []
    assert summary.row_count == 20


def test_all_null_column_fails_raw_critically(data: DataConfig) -> None:
    summary = gx_adapter.validate_frame(_raw(x=[None] * 20), generate_suite(data, "raw"))
    failed = critical_failures(summary)
    assert [(o.expectation_type, o.column) for o in failed] == [("expect_column_values_to_not_be_null", "x")]
    assert "x" in failure_message(summary, "validate_raw") and "20 of 20 rows null" in failure_message(
        summary, "validate_raw"
    )


def test_non_numeric_text_fails_raw(data: DataConfig) -> None:
    summary = gx_adapter.validate_frame(_raw(y=["three"] * 20), generate_suite(data, "raw"))
    assert [o.column for o in critical_failures(summary)] == ["y"]
    assert "'three'" in failure_message(summary, "validate_raw")


def test_duplicate_raw_id_is_only_a_warning(data: DataConfig) -> None:
    summary = gx_adapter.validate_frame(_raw(id=["1"] * 20), generate_suite(data, "raw"))
    assert critical_failures(summary) == []
    assert [o.expectation_type for o in warnings(summary)] == ["expect_column_values_to_be_unique"]
    assert "(1 warning)" in summary_line(summary, "validate_raw")


def test_clean_data_passes_completely(data: DataConfig, tmp_path: Path) -> None:
    summary = gx_adapter.validate_frame(_clean(), generate_suite(data, "clean"), docs_dir=tmp_path / "docs")
    assert summary.success, failure_message(summary, "validate_clean")
    assert summary.passed == summary.evaluated == len(generate_suite(data, "clean")["expectations"])
    assert summary.docs_index is not None and Path(summary.docs_index).is_file()


def test_data_docs_compile_their_templates_once_per_process(
    data: DataConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[str] = []
    compile_ = jinja2.Environment.compile

    def counting(self: jinja2.Environment, source: str, name: str | None = None, *args: object) -> object:
        compiled.append(str(name))
        return compile_(self, source, name, *args)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    suite = generate_suite(data, "clean")
    gx_adapter.validate_frame(_clean(), suite, docs_dir=tmp_path / "first")
    compiled.clear()
    summary = gx_adapter.validate_frame(_clean(), suite, docs_dir=tmp_path / "second")
    assert compiled == []  # GX made new jinja environments; the templates came compiled from the first build
    page = (tmp_path / "second" / "index.html").read_text()
    assert summary.docs_index == str(tmp_path / "second" / "index.html") and suite["name"] in page


def test_no_frame_is_hashed_for_a_fingerprint_nothing_reads(data: DataConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # GX hashes each batch for a metadata marker; on text that was most of a partition's time (gx_adapter's
    # docstring), so the adapter turns it off: a GX that ignores the switch is caught here
    import pandas as pd

    hashed: list[int] = []
    hash_ = pd.util.hash_pandas_object

    def counting(obj: object, *args: object, **kwargs: object) -> object:
        hashed.append(len(obj))  # type: ignore[arg-type]
        return hash_(obj, *args, **kwargs)

    monkeypatch.setattr(pd.util, "hash_pandas_object", counting)
    summary = gx_adapter.validate_frame(_raw(50), generate_suite(data, "raw"))
    assert summary.evaluated > 0 and hashed == []


def test_date_before_min_and_value_outside_set_fail_clean(data: DataConfig) -> None:
    frame = _clean().with_columns(
        pl.when(pl.col("id") == 1).then(dt.date(2019, 12, 31)).otherwise(pl.col("day")).alias("day"),
        pl.when(pl.col("id") <= 3).then(pl.lit("green")).otherwise(pl.col("colour")).alias("colour"),
    )
    summary = gx_adapter.validate_frame(frame, generate_suite(data, "clean"), example_values=2)
    failed = {o.column: o for o in critical_failures(summary)}
    assert set(failed) == {"day", "colour"}
    assert failed["colour"].unexpected_count == 3 and failed["colour"].example_values == ["green", "green"]
    assert failed["day"].unexpected_count == 1


def test_missing_column_fails_columns_check(data: DataConfig) -> None:
    summary = gx_adapter.validate_frame(_clean().drop("x"), generate_suite(data, "clean"))
    failed = critical_failures(summary)
    columns_check = [o for o in failed if o.expectation_type == "expect_table_columns_to_match_set"]
    assert len(columns_check) == 1
    assert "missing x" in failure_message(summary, "validate_clean")


def test_duplicate_id_fails_clean(data: DataConfig) -> None:
    frame = _clean().with_columns(pl.lit(7, dtype=pl.Int64).alias("id"))
    summary = gx_adapter.validate_frame(frame, generate_suite(data, "clean"))
    assert [(o.expectation_type, o.column) for o in critical_failures(summary)] == [
        ("expect_column_values_to_be_unique", "id")
    ]


def test_suite_round_trips_through_files(data: DataConfig, tmp_path: Path) -> None:
    written = write_suites(data, tmp_path)
    assert sorted(p.name for p in written) == ["clean.json", "raw.json"]
    assert load_suite(tmp_path / "raw.json") == generate_suite(data, "raw")
    # the loaded file is a suite GX accepts: it runs and passes on clean data
    assert gx_adapter.validate_frame(_clean(), load_suite(tmp_path / "clean.json")).success


def test_existing_suite_is_kept_unless_overwrite(data: DataConfig, tmp_path: Path) -> None:
    write_suites(data, tmp_path)
    edited = tmp_path / "raw.json"
    edited.write_text('{"name": "raw", "expectations": []}')
    assert write_suites(data, tmp_path) == []
    assert json.loads(edited.read_text())["expectations"] == []
    assert edited in write_suites(data, tmp_path, overwrite=True)
    assert load_suite(edited) == generate_suite(data, "raw")


def test_load_suite_names_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EvergreenError, match=r"nope\.json.*evergreen expectations generate"):
        load_suite(tmp_path / "nope.json")


def test_load_suite_names_bad_json(tmp_path: Path) -> None:
    bad = tmp_path / "raw.json"
    bad.write_text("{not json")
    with pytest.raises(EvergreenError, match=r"raw\.json: not valid JSON"):
        load_suite(bad)


def test_invalid_hand_edit_is_an_error_not_a_silent_pass(data: DataConfig) -> None:
    suite = generate_suite(data, "clean")
    suite["expectations"].append({"type": "expect_column_values_to_be_between", "kwargs": {}, "meta": {}})
    with pytest.raises(EvergreenError, match="not valid"):
        gx_adapter.validate_frame(_clean(), suite)


def test_stage_writes_report_and_docs_before_failing(
    data: DataConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = Workspace(tmp_path, Params(data=data))
    write_suites(data, ws.suites_dir)
    _clean().with_columns(pl.lit(2.0).alias("x")).write_parquet(tmp_path / "clean.parquet")
    with pytest.raises(ValidationFailed, match=r"validate_clean: expect_column_values_to_be_between .*'x'.*20 of 20"):
        run_validation(ws, "clean", tmp_path / "clean.parquet")
    report = json.loads(ws.validation_report("clean").read_text())
    assert report["success"] is False and report["critical_success"] is False
    # recorded relative to the project root, so the report is the same bytes wherever the project lives
    assert report["docs"].startswith(ws.params.validation.reports_dir) and (tmp_path / report["docs"]).is_file()
    assert "validate_clean: 12/13 expectations passed (1 critical failure) on 20 rows" in capsys.readouterr().out


def test_date_beyond_pandas_range_fails_by_name_not_by_crash(data):
    # pandas datetime64[ns] ends in 2262; a placeholder like 9999-12-31 must fail an expectation, not crash
    frame = _clean().with_columns(
        pl.when(pl.col("id") == 1).then(dt.date(9999, 12, 31)).otherwise(pl.col("day")).alias("day")
    )
    summary = gx_adapter.validate_frame(frame, generate_suite(data, "clean"))
    failed = critical_failures(summary)
    assert [(f.expectation_type, f.column) for f in failed] == [("expect_column_values_to_not_be_null", "day")]


def test_outcomes_keep_the_suites_order_and_each_batch_is_one_result_in_the_data_docs(
    data: DataConfig, tmp_path: Path
) -> None:
    # each column's expectations run on a frame of that column alone (gx_adapter's docstring); the summary and
    # the Data Docs still show one result per batch, its outcomes in the order the suite lists them
    from evergreen.validation.gx_adapter import validate_batches

    suite = generate_suite(data, "raw")
    # GX returns an expectation whose metric raised before the others of its run: it must come back in place
    broken = {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "x", "regex": "(unclosed"}}
    suite["expectations"].append(broken)  # last of its column's, so GX's reordering would show
    frames = [_raw(20, x=["bad"] * 20), _raw(20), _raw(20, id=["1"] * 20)]
    summaries = validate_batches(frames, suite, docs_dir=tmp_path / "docs")
    listed = [(e["type"], e["kwargs"].get("column"), e["kwargs"].get("regex")) for e in suite["expectations"]]
    for summary in summaries:
        shown = [(o.expectation_type, o.kwargs.get("column"), o.kwargs.get("regex")) for o in summary.outcomes]
        assert shown == listed
    failed = [[(o.kwargs.get("regex"), o.column) for o in s.outcomes if not o.success] for s in summaries]
    assert failed[1] == [("(unclosed", "x")]
    assert len(failed[0]) == 2 and failed[2] == [(None, "id"), ("(unclosed", "x")]
    assert len(list((tmp_path / "docs" / "validations").rglob("*.html"))) == 3


def test_an_expectation_with_a_row_condition_on_another_column_sees_that_column() -> None:
    # a hand-added condition may name any column; such an expectation runs on the whole frame, not on its own
    suite = {
        "name": "raw",
        "expectations": [
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {
                    "column": "x",
                    "value_set": ["0.5 "],
                    "row_condition": 'colour=="red"',
                    "condition_parser": "pandas",
                },
            }
        ],
    }
    frame = _raw(20, colour=["red"] * 15 + ["blue"] * 5, x=["0.5 "] * 15 + ["9"] * 5)
    (outcome,) = gx_adapter.validate_frame(frame, suite).outcomes
    assert (outcome.success, outcome.error, outcome.element_count) == (True, None, 15)


def test_an_empty_suite_passes_and_a_column_found_by_its_index_is_looked_up_among_all_columns() -> None:
    frame = _raw(5)
    assert gx_adapter.validate_frame(frame, {"name": "raw", "expectations": []}).evaluated == 0
    exists = {"type": "expect_column_to_exist", "kwargs": {"column": "colour", "column_index": 2}}
    (outcome,) = gx_adapter.validate_frame(frame, {"name": "raw", "expectations": [exists]}).outcomes
    assert (outcome.success, outcome.error) == (True, None)


def test_a_partition_larger_than_a_batch_is_validated_batch_by_batch(data: DataConfig, tmp_path: Path) -> None:
    from evergreen.validation.stage import Task, validate_partition

    # 1 bad row in the first batch and in the last (under the 20% `mostly` allows), 300 in the second (over)
    bad_rows = {5, 2400, *range(1000, 1300)}
    frame = _raw(2500, x=["x" if i in bad_rows else "0.5" for i in range(2500)])
    path = tmp_path / "000000-part.parquet"
    frame.write_parquet(path)
    suite = generate_suite(data, "raw")
    task = Task("000000-part", str(path), 2500, 1000, suite, 5, str(tmp_path / "docs"))
    result = validate_partition(task)
    x_regex = next(
        o for o in result["outcomes"] if o["expectation_type"].endswith("match_regex") and o["column"] == "x"
    )
    # counts add up over the batches; the partition is named once however many of its batches held the rows
    assert (x_regex["success"], x_regex["unexpected_count"], x_regex["element_count"]) == (False, 302, 2500)
    assert x_regex["example_values"] == ["x"] * 5
    assert x_regex["partitions"] == ["000000-part"]
    assert result["row_count"] == 2500
    assert (tmp_path / "docs" / "index.html").is_file()
    # one batch of the whole frame counts the same rows, but 302 of 2,500 is within `mostly`: a share holds
    # per batch, as it holds per partition
    whole = next(
        o for o in gx_adapter.validate_frame(frame, suite).outcomes if o.column == "x" and "regex" in o.expectation_type
    )
    assert (whole.success, whole.unexpected_count) == (True, 302)


def test_hand_edited_expectations_that_need_python_regex_or_a_plain_dtype_still_run(data: DataConfig) -> None:
    # regexes run in Arrow's RE2 (gx_adapter's docstring); a look-ahead is not RE2, and a dtype check must see
    # the column's own dtype, so both must still give the right answer
    suite = generate_suite(data, "raw")
    suite["expectations"] += [
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "colour", "regex": r"^(?=r)red$"}},
        {"type": "expect_column_values_to_be_of_type", "kwargs": {"column": "colour", "type_": "object"}},
    ]
    summary = gx_adapter.validate_frame(_raw(20, colour=["red"] * 19 + ["blue"]), suite)
    look_ahead = next(o for o in summary.outcomes if o.kwargs.get("regex") == r"^(?=r)red$")
    dtype = next(o for o in summary.outcomes if o.expectation_type == "expect_column_values_to_be_of_type")
    assert (look_ahead.success, look_ahead.unexpected_count, look_ahead.example_values) == (False, 1, ["blue"])
    assert dtype.success, dtype
