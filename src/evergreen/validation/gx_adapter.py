"""The one module that talks to Great Expectations 1.x; its API has changed before, so it stays behind here.

GX has no polars backend: the frame is converted to pandas here and nowhere else. Each call uses a fresh
in-memory (ephemeral) context, so nothing is written outside the Data Docs folder asked for.

Speed (profiled on 100k raw bike rows, 34 expectations: 2.0 s before the two changes below, 0.7 s after, the
same outcomes to the example values):
- GX's pandas engine filters the *whole* frame several times per column expectation (its null filter and its
  unexpected rows), so every text column is copied about 4 times per expectation: 0.75 s of the 2.0. Text
  therefore reaches GX as pandas categoricals, whose copies are of small integer codes (still 1.5x faster
  than Arrow strings on 1M rows with the one-column frames below).
- GX's regex check is `column.astype(str).str.contains(regex)`, which pandas runs as one Python `re` call per
  cell (0.9 s of the 2.0). With pandas' Arrow-backed `str` dtype (`future.infer_string`) the same call runs in
  Arrow's RE2. RE2 lacks a few Python features (look-arounds, back-references); a suite with such a pattern
  runs on Python's `re` as before.
- Each column's expectations run on a frame of that column alone (`_validate_one`), and their results are put
  back in the suite's order as one result: GX's null filter and unexpected-row filter then copy one column,
  not all of them. On 1M raw bike rows, 15.0 s before against 10.5-12.6 s after (100k rows: 2.0 s against
  1.9 s, where GX's fixed cost per run is most of it); the same outcomes to the example values.
- Every Data Docs build makes new jinja environments, which compile GX's ~50 templates again: 0.72 s of a
  2.2 s partition (100k rows, the raw suite). The compiled templates are kept for the process
  (`_TEMPLATES`), so only the first build of a stage run compiles them.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import great_expectations as gx
import jinja2
import jinja2.bccache
import pandas as pd
import polars as pl
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.render.view.view import DefaultJinjaView

from evergreen.errors import EvergreenError
from evergreen.validation.summary import ExpectationOutcome, ValidationSummary

_TABLE_EXPECTATIONS = ("expect_table_", "expect_compound_", "expect_multicolumn_")


class _CompiledTemplates(jinja2.BytecodeCache):
    """Jinja's own hook for reusing compiled templates, kept in memory; a bucket's key covers the template's
    name and source, so a changed template is compiled again."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if bucket.key in self._code:
            bucket.bytecode_from_string(self._code[bucket.key])

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_TEMPLATES = _CompiledTemplates()
_view_init = DefaultJinjaView.__init__


def _view_with_compiled_templates(self: DefaultJinjaView, *args: Any, **kwargs: Any) -> None:
    _view_init(self, *args, **kwargs)
    self.env.bytecode_cache = _TEMPLATES


DefaultJinjaView.__init__ = _view_with_compiled_templates  # type: ignore[method-assign]


def _context(docs_dir: Path | None) -> Any:
    sites = {}
    if docs_dir is not None:
        sites["local"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,  # runs offline; never phone home
        progress_bars=ProgressBarsConfig(globally=False),  # stage output stays one summary line
        data_docs_sites=sites,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


_TYPE_EXPECTATIONS = ("expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list")


def _typed_columns(suite: dict[str, Any]) -> set[str]:
    """Columns whose pandas dtype an expectation checks: they keep their plain dtype (not a categorical)."""
    return {
        (exp.get("kwargs") or {}).get("column")
        for exp in suite.get("expectations", [])
        if exp.get("type") in _TYPE_EXPECTATIONS
    }


def _to_pandas(df: pl.DataFrame, keep_dtype: set[str]) -> Any:
    # GX compares string bounds such as min: "2011-01-01" with dates only on datetime64[ns] columns;
    # on any other date dtype it fails with a TypeError per row
    times = [name for name, dtype in df.schema.items() if dtype == pl.Date or isinstance(dtype, pl.Datetime)]
    if times:
        # datetime64[ns] ends in 2262: a later date (a 9999-12-31 placeholder) becomes null, so it fails the
        # column's not-null expectation by name instead of crashing the conversion
        df = df.with_columns(pl.col(times).cast(pl.Datetime("ns"), strict=False))
    # text as categoricals: see the module's docstring
    texts = [name for name, dtype in df.schema.items() if dtype == pl.String and name not in keep_dtype]
    return df.with_columns(pl.col(texts).cast(pl.Categorical)).to_pandas()


def _regexes_run_in_re2(suite: dict[str, Any]) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    for exp in suite.get("expectations", []):
        regex = (exp.get("kwargs") or {}).get("regex")
        if isinstance(regex, str):
            try:
                pc.match_substring_regex(pa.array([""], pa.string()), pattern=regex)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return False
    return True


def _time_bounds_as_datetimes(suite: dict[str, Any], df: pl.DataFrame) -> dict[str, Any]:
    # GX turns a bound like "2011-01-01" into a `date`, which pandas cannot compare with datetime64 values;
    # written as a datetime it becomes a `datetime`, which compares. Only for date/datetime columns.
    times = {n for n, t in df.schema.items() if t == pl.Date or isinstance(t, pl.Datetime)}
    out = []
    for exp in suite.get("expectations", []):
        kwargs = exp.get("kwargs") or {}
        if kwargs.get("column") in times:
            fixed = {
                k: f"{v}T00:00:00" if k in ("min_value", "max_value") and isinstance(v, str) and len(v) == 10 else v
                for k, v in kwargs.items()
            }
            exp = {**exp, "kwargs": fixed}
        out.append(exp)
    return {**suite, "expectations": out}


def _build_suite(suite: dict[str, Any]) -> Any:
    name = suite.get("name")
    config = {k: v for k, v in suite.items() if k != "id"}  # an id from elsewhere is rejected by this store
    expectations = config.get("expectations", [])
    for i, exp in enumerate(expectations):
        # a hand-edited typo must stop the run with its position, not be dropped (GX only logs some errors)
        try:
            ok = len(gx.ExpectationSuite(name="check", expectations=[exp]).expectations) == 1
        except Exception as exc:  # GX raises its own and pydantic's errors here
            raise EvergreenError(f"suite {name!r}: expectation {i} ({exp.get('type')}) is not valid: {exc}") from None
        if not ok:
            raise EvergreenError(
                f"suite {name!r}: expectation {i} ({exp.get('type')}) is not valid (check type and kwargs)"
            )
    return gx.ExpectationSuite(**config)


def _exception_message(info: dict[str, Any]) -> str | None:
    # GX reports an expectation's own error flat, and a failed metric keyed by the metric's id
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    messages = [v.get("exception_message") for v in info.values() if isinstance(v, dict)]
    return "; ".join(dict.fromkeys(str(m) for m in messages if m)) or None


def _outcome(result: dict[str, Any], example_values: int) -> ExpectationOutcome:
    config = result["expectation_config"]
    kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k != "batch_id"}
    details = result.get("result") or {}
    error = _exception_message(result.get("exception_info") or {})
    column = None if config["type"].startswith(_TABLE_EXPECTATIONS) else kwargs.get("column")
    return ExpectationOutcome(
        expectation_type=config["type"],
        column=column,
        critical=bool((config.get("meta") or {}).get("critical", True)),  # unmarked hand edits stop the run
        success=bool(result["success"]),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        element_count=details.get("element_count"),
        example_values=list(details.get("partial_unexpected_list") or [])[:example_values],
        kwargs=kwargs,
        observed_value=details.get("observed_value"),
        error=error,
    )


def _column_groups(suite: dict[str, Any]) -> dict[str | None, list[int]]:
    """The suite's expectations (by position) grouped by the one column each reads; `None` holds those that
    may read more than one (table-level, column pairs and lists, a `row_condition` on other columns), which
    run on the whole frame."""
    groups: dict[str | None, list[int]] = {}
    for i, exp in enumerate(suite.get("expectations", [])):
        kwargs = exp.get("kwargs") or {}
        whole = exp.get("type", "").startswith(_TABLE_EXPECTATIONS) or kwargs.get("row_condition")
        groups.setdefault(None if whole else kwargs.get("column"), []).append(i)
    return groups


@dataclass(frozen=True)
class _Run:
    """Some of the suite's expectations, run on a frame of their one column (or on the whole frame)."""

    column: str | None
    positions: list[int]  # where its expectations stand in the suite
    suite: Any  # gx.ExpectationSuite
    batch: Any  # GX's batch definition of a whole dataframe
    result_format: dict[str, Any]


def _runs(suite: dict[str, Any], personal: Collection[str], example_values: int, batch: Any) -> list[_Run]:
    config = {k: v for k, v in suite.items() if k != "id"}  # checked whole by `_build_suite` already
    runs = []
    for column, positions in _column_groups(suite).items():
        expectations = [config["expectations"][i] for i in positions]
        part = gx.ExpectationSuite(**{**config, "name": f"{config.get('name')}.{column}", "expectations": expectations})
        # SUMMARY gives counts and a few examples; COMPLETE would copy every failing value. A personal column's
        # expectations give none: GX copies failing values into its results and Data Docs
        shown = 0 if column in personal else example_values
        runs.append(
            _Run(column, positions, part, batch, {"result_format": "SUMMARY", "partial_unexpected_count": shown})
        )
    return runs


def _validate_one(frame: pd.DataFrame, runs: list[_Run], name: str) -> Any:
    """GX's result for the whole suite (`name`) on one frame, its expectations in the suite's order.

    GX's pandas engine copies the *whole* frame several times per column expectation (its null filter and its
    unexpected rows), so each column's expectations run on a frame of that column alone (see the module's
    docstring for what that saves).
    """
    from great_expectations.validator.v1_validator import Validator
    from great_expectations.validator.validator import calc_validation_statistics

    parts = []
    for run in runs:
        # a missing column runs on the whole frame, where GX names it in the expectation's error
        data = frame[[run.column]] if run.column in frame.columns else frame
        validator = Validator(
            batch_definition=run.batch, batch_parameters={"dataframe": data}, result_format=run.result_format
        )
        parts.append((run, validator.validate_expectation_suite(run.suite)))
    placed = sorted(
        ((i, r) for run, part in parts for i, r in zip(run.positions, part.results, strict=True)), key=lambda ir: ir[0]
    )
    whole = parts[0][1]  # any part's meta serves: the same batch
    whole.results = [r for _, r in placed]
    stats = calc_validation_statistics(whole.results)
    whole.success = stats.success
    whole.suite_name = name
    whole.statistics = {
        "evaluated_expectations": stats.evaluated_expectations,
        "successful_expectations": stats.successful_expectations,
        "unsuccessful_expectations": stats.unsuccessful_expectations,
        "success_percent": stats.success_percent,
    }
    return whole


def _keep_for_docs(context: Any, result: Any) -> None:
    """Store a run's result where the Data Docs site reads it (what GX's `ValidationDefinition.run` does)."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    run_id = RunIdentifier(run_time=datetime.datetime.now(datetime.UTC))
    result.meta.update(run_id=run_id, validation_time=run_id.run_time)
    suite_id = ExpectationSuiteIdentifier(name=result.suite_name)
    key = ValidationResultIdentifier(
        batch_identifier=result.batch_id, expectation_suite_identifier=suite_id, run_id=run_id
    )
    context.validation_results_store.store_validation_results(
        suite_validation_result=result, suite_validation_result_identifier=key, expectation_suite_identifier=suite_id
    )


def validate_batches(
    batches: Iterable[pl.DataFrame],
    suite: dict[str, Any],
    *,
    example_values: int = 5,
    docs_dir: Path | None = None,
    personal: Collection[str] = (),
) -> list[ValidationSummary]:
    """Run an expectation suite (a dict as `suites.generate_suite` makes) on each of a stream of polars frames
    with the same columns, one summary per frame.

    The frames are taken one at a time, so a large dataset read in bounded batches is never held whole; the
    GX context and suite are built once for all of them. With `docs_dir`, GX's HTML Data Docs for these runs
    are built there once, at the end; each summary's `docs_index` is then the path of its index.html.
    The expectations on `personal` columns (declared `pii`) show counts but no failing value, in the summary
    and in the Data Docs.
    """
    frames = iter(batches)
    first = next(frames, None)
    if first is None:
        return []
    suite = _time_bounds_as_datetimes(suite, first)
    context = _context(docs_dir)
    name = context.suites.add(_build_suite(suite)).name  # the whole suite: Data Docs show it, and its runs
    batch = context.data_sources.add_pandas("evergreen").add_dataframe_asset(name)
    runs = _runs(suite, personal, example_values, batch.add_batch_definition_whole_dataframe("whole frame"))
    keep_dtype = _typed_columns(suite)
    results = []
    # pandas' Arrow-backed `str` dtype while GX runs, for RE2 (see the module's docstring)
    with pd.option_context("future.infer_string", _regexes_run_in_re2(suite)):
        for df in chain([first], frames):
            result = _validate_one(_to_pandas(df, keep_dtype), runs, name)
            if docs_dir is not None:
                _keep_for_docs(context, result)
            results.append((df.height, result.to_json_dict()))
    docs_index = None
    if docs_dir is not None:
        context.build_data_docs(site_names=["local"])
        docs_index = str(Path(docs_dir) / "index.html")
    return [_summary(name, rows, result, example_values, docs_index) for rows, result in results]


def _summary(
    name: str, rows: int, result_json: dict[str, Any], example_values: int, docs_index: str | None
) -> ValidationSummary:
    outcomes = [_outcome(r, example_values) for r in result_json["results"]]
    return ValidationSummary(
        suite_name=name,
        success=bool(result_json["success"]),
        evaluated=len(outcomes),
        row_count=rows,
        outcomes=outcomes,
        result=result_json,
        docs_index=docs_index,
    )


def validate_frame(
    df: pl.DataFrame,
    suite: dict[str, Any],
    *,
    example_values: int = 5,
    docs_dir: Path | None = None,
    personal: Collection[str] = (),
) -> ValidationSummary:
    """`validate_batches` on one frame."""
    return validate_batches([df], suite, example_values=example_values, docs_dir=docs_dir, personal=personal)[0]
