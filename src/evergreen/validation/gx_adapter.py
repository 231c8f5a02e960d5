"""The one module that talks to Great Expectations 1.x; its API has changed before, so it stays behind here.

GX has no polars backend: the frame is converted to pandas here and nowhere else. Each call uses a fresh
in-memory (ephemeral) context, so nothing is written outside the Data Docs folder asked for.

Speed, each change measured on the same rows before and after it, with the same outcomes to the example values:
- GX's pandas engine filters the *whole* frame several times per column expectation (its null filter and its
  unexpected rows). Each column's expectations therefore run on a frame of that column alone
  (`_validate_by_column`), and their results are put back in the suite's order as one result: on 1M raw rows,
  15.0 s before against 10.5-12.6 s after.
- GX fingerprints every batch it is given (an md5 of `pandas.util.hash_pandas_object`), for a marker in the
  result's metadata that nothing here reads: pandas hashes text one object at a time. That was 13% of a 1M-row
  partition with text as categoricals, and 14 of 22 s with Arrow strings. GX skips it above its
  `HASH_THRESHOLD` of memory, which is set to 0 here, for the whole process (`_no_fingerprint`).
- Without the fingerprint, text reaches GX as pandas' Arrow-backed `str` (`future.infer_string`), as polars
  holds it: the regex check (`column.astype(str).str.contains(regex)`) then runs in Arrow's RE2 with no
  conversion. Categoricals, which had made GX's copies cheap, took 2.8 s of a 1M-row partition to turn back
  into text for the regexes, and the conversion from polars took 4.0 s against 0.5 s now. On 1M rows of three
  shared tables, 11.0, 8.5 and 8.9 s with categoricals and the fingerprint, against 3.7, 2.9 and 4.2 s.
  RE2 lacks a few Python features (look-arounds, back-references); a suite with such a pattern runs on
  Python's `re`, with text as objects.
- Every Data Docs build makes new jinja environments, which compile GX's ~50 templates again: 0.72 s of a
  2.2 s partition (100k rows, the raw suite). The compiled templates are kept for the process
  (`_TEMPLATES`), so only the first build of a stage run compiles them.
"""

from __future__ import annotations

import datetime
import uuid
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


def _no_fingerprint() -> None:
    """Turn off GX's batch fingerprint for every GX run in this process (see the module's docstring); fail
    loudly if GX no longer has the knob."""
    from great_expectations.execution_engine import pandas_execution_engine

    if not hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
        raise RuntimeError("this Great Expectations has no HASH_THRESHOLD: check gx_adapter's fingerprint note")
    pandas_execution_engine.HASH_THRESHOLD = 0


_no_fingerprint()


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


def _to_pandas(df: pl.DataFrame) -> Any:
    # GX compares string bounds such as min: "2011-01-01" with dates only on datetime64[ns] columns;
    # on any other date dtype it fails with a TypeError per row
    times = [name for name, dtype in df.schema.items() if dtype == pl.Date or isinstance(dtype, pl.Datetime)]
    if times:
        # datetime64[ns] ends in 2262: a later date (a 9999-12-31 placeholder) becomes null, so it fails the
        # column's not-null expectation by name instead of crashing the conversion
        df = df.with_columns(pl.col(times).cast(pl.Datetime("ns"), strict=False))
    return df.to_pandas()


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


def _without_id(suite: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in suite.items() if k != "id"}  # an id from elsewhere is rejected by GX's store


def _build_suite(suite: dict[str, Any]) -> Any:
    name = suite.get("name")
    config = _without_id(suite)
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


_PERSONAL_KWARGS = ("column", "column_A", "column_B")


def _reads_one_column(exp: dict[str, Any]) -> bool:
    """Whether an expectation reads its `column` only. Table-level ones, `expect_column_to_exist` (it looks up
    `column_index` among all columns) and a `row_condition` (it may name any column) need the whole frame."""
    kwargs = exp.get("kwargs") or {}
    kind = exp.get("type", "")
    whole = kind.startswith(_TABLE_EXPECTATIONS) or kind == "expect_column_to_exist" or "row_condition" in kwargs
    return "column" in kwargs and not whole


def _touches(exp: dict[str, Any], personal: Collection[str]) -> bool:
    kwargs = exp.get("kwargs") or {}
    named = [kwargs.get(k) for k in _PERSONAL_KWARGS] + list(kwargs.get("column_list") or [])
    return any(isinstance(n, str) and n in personal for n in named)


def _column_groups(suite: dict[str, Any], personal: Collection[str]) -> dict[tuple[str | None, bool], list[int]]:
    """The suite's expectations (by position), grouped by the frame each runs on (one column's, or the whole
    frame's: `None`) and by whether it names a personal column (those run without example values)."""
    groups: dict[tuple[str | None, bool], list[int]] = {}
    for i, exp in enumerate(suite.get("expectations", [])):
        column = exp["kwargs"]["column"] if _reads_one_column(exp) else None
        groups.setdefault((column, _touches(exp, personal)), []).append(i)
    return groups or {(None, False): []}  # an empty suite still runs once: it passes, with nothing evaluated


@dataclass(frozen=True)
class _Run:
    """Some of the suite's expectations, run on a frame of their one column (or on the whole frame)."""

    column: str | None
    suite: Any  # gx.ExpectationSuite; each expectation's id is its position in the whole suite
    result_format: dict[str, Any]


def _position_id(position: int) -> str:
    return str(uuid.UUID(int=position))


def _runs(config: dict[str, Any], personal: Collection[str], example_values: int) -> list[_Run]:
    """`config` is the whole suite, without its id, checked by `_build_suite` already."""
    expectations = config.get("expectations", [])
    runs = []
    for (column, private), positions in _column_groups(config, personal).items():
        # GX returns results grouped its own way (by column, failed metrics first): the id finds each one's place
        part = [{**expectations[i], "id": _position_id(i)} for i in positions]
        name = f"{config.get('name')}.{column or 'whole frame'}{'.personal' if private else ''}"
        # SUMMARY gives counts and a few examples; COMPLETE would copy every failing value. Expectations on a
        # personal column give none: GX copies failing values into its results and Data Docs
        shown = {"result_format": "SUMMARY", "partial_unexpected_count": 0 if private else example_values}
        runs.append(_Run(column, gx.ExpectationSuite(**{**config, "name": name, "expectations": part}), shown))
    return runs


def _validate_by_column(frame: pd.DataFrame, runs: list[_Run], batch: Any, name: str) -> Any:
    """GX's result for the whole suite (`name`) on one frame, each run on its column's frame (see the module's
    docstring), the results in the suite's order. `batch` is GX's batch definition of a whole dataframe."""
    from great_expectations.validator.v1_validator import Validator
    from great_expectations.validator.validator import calc_validation_statistics

    parts = []
    for run in runs:
        # a missing column runs on the whole frame, where GX names it in the expectation's error
        data = frame[[run.column]] if run.column in frame.columns else frame
        validator = Validator(
            batch_definition=batch, batch_parameters={"dataframe": data}, result_format=run.result_format
        )
        parts.append(validator.validate_expectation_suite(run.suite))
    place = {_position_id(i): i for i in range(sum(len(p.results) for p in parts))}
    # the first part's meta (GX's version, the batch's spec and load time) stands for all
    whole = parts[0]
    whole.results = sorted((r for p in parts for r in p.results), key=lambda r: place[r.expectation_config.id])
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
    asset = context.data_sources.add_pandas("evergreen").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("whole frame")
    runs = _runs(_without_id(suite), personal, example_values)
    results = []
    # pandas' Arrow-backed `str` dtype while GX runs, for RE2 (see the module's docstring)
    with pd.option_context("future.infer_string", _regexes_run_in_re2(suite)):
        for df in chain([first], frames):
            result = _validate_by_column(_to_pandas(df), runs, batch, name)
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
