"""What a validation run found, as small typed data, and the messages built from it.

Pure: no Great Expectations here. `gx_adapter` parses a GX result into a `ValidationSummary`; stages decide
and report from the summary alone, so the logic is testable without GX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result. Counts are None for table-level expectations (columns, row count)."""

    expectation_type: str
    column: str | None
    critical: bool
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    element_count: int | None = None
    example_values: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    observed_value: Any = None
    error: str | None = None  # set when GX could not evaluate the expectation (e.g. the column is missing)
    partitions: list[str] = field(default_factory=list)  # of a partitioned dataset: the ones where it failed


@dataclass(frozen=True)
class ValidationSummary:
    """A suite run on one frame: overall success, each outcome, and GX's own result for the record."""

    suite_name: str
    success: bool
    evaluated: int
    row_count: int
    outcomes: list[ExpectationOutcome]
    result: dict[str, Any] = field(repr=False, default_factory=dict)  # GX's result JSON, for reports
    docs_index: str | None = None  # path of the Data Docs index.html when docs were built

    @property
    def passed(self) -> int:
        return sum(o.success for o in self.outcomes)


def _merge_outcome(named: list[tuple[str, ExpectationOutcome]], example_values: int) -> ExpectationOutcome:
    first = named[0][1]
    failed = [(name, o) for name, o in named if not o.success]
    shown = failed[0][1] if failed else first

    def total(values: list[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    unexpected = total([o.unexpected_count for _, o in named])
    elements = total([o.element_count for _, o in named])
    examples = [v for _, o in failed for v in o.example_values][:example_values]
    return ExpectationOutcome(
        expectation_type=first.expectation_type,
        column=first.column,
        critical=first.critical,
        success=not failed,
        unexpected_count=unexpected,
        unexpected_percent=100 * unexpected / elements if unexpected is not None and elements else None,
        element_count=elements,
        example_values=examples or list(shown.example_values),
        kwargs=first.kwargs,
        observed_value=shown.observed_value,
        error=next((o.error for _, o in named if o.error), None),
        partitions=list(dict.fromkeys(name for name, _ in failed)),  # a partition's batches share its name
    )


def merge_partitions(named: list[tuple[str, ValidationSummary]], example_values: int = 5) -> ValidationSummary:
    """One summary of a suite run on each partition of a dataset: counts added up, and each failed outcome
    naming the partitions it failed in. A dataset of one partition keeps its summary as it is."""
    if len(named) == 1:
        return named[0][1]
    first = named[0][1]
    outcomes = [
        _merge_outcome([(name, s.outcomes[i]) for name, s in named], example_values) for i in range(first.evaluated)
    ]
    return ValidationSummary(
        suite_name=first.suite_name,
        success=all(s.success for _, s in named),
        evaluated=len(outcomes),
        row_count=sum(s.row_count for _, s in named),
        outcomes=outcomes,
    )


def critical_failures(summary: ValidationSummary) -> list[ExpectationOutcome]:
    """Failed expectations that stop the pipeline."""
    return [o for o in summary.outcomes if o.critical and not o.success]


def warnings(summary: ValidationSummary) -> list[ExpectationOutcome]:
    """Failed expectations that are only reported."""
    return [o for o in summary.outcomes if not o.critical and not o.success]


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _what_fails(outcome: ExpectationOutcome) -> str:
    """How the failing rows are wrong, in words, from the expectation's own arguments."""
    kw = outcome.kwargs
    kind = outcome.expectation_type
    if kind == "expect_column_values_to_be_between":
        lo = "-inf" if kw.get("min_value") is None else _fmt(kw["min_value"])
        hi = "inf" if kw.get("max_value") is None else _fmt(kw["max_value"])
        return f"outside [{lo}, {hi}]"
    if kind == "expect_column_values_to_be_in_set":
        allowed = ", ".join(_fmt(v) for v in kw.get("value_set", [])[:12])
        return f"not in {{{allowed}}}"
    if kind == "expect_column_values_to_not_be_null":
        return "null"
    if kind == "expect_column_values_to_match_regex":
        return f"not matching {kw.get('regex')}"
    if kind in ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"):
        return "duplicated"
    return "failing"


def _describe(outcome: ExpectationOutcome) -> str:
    where = f"; in partition(s) {', '.join(outcome.partitions)}" if outcome.partitions else ""
    return _describe_failure(outcome) + where


def _describe_failure(outcome: ExpectationOutcome) -> str:
    where = f" on column {outcome.column!r}" if outcome.column else ""
    if outcome.kwargs.get("column_list"):
        where = f" on columns {', '.join(outcome.kwargs['column_list'])}"
    head = f"{outcome.expectation_type} failed{where}"
    if outcome.error:
        return f"{head}: could not be evaluated: {outcome.error}"
    if outcome.expectation_type == "expect_table_columns_to_match_set":
        expected = list(outcome.kwargs.get("column_set", []))
        observed = list(outcome.observed_value or [])
        missing = [c for c in expected if c not in observed]
        extra = [c for c in observed if c not in expected]
        parts = [
            f"missing {', '.join(missing)}" if missing else "",
            f"unexpected {', '.join(extra)}" if extra else "",
        ]
        return f"{head}: " + "; ".join(p for p in parts if p)
    if outcome.expectation_type == "expect_table_row_count_to_be_between":
        return f"{head}: {outcome.observed_value} rows, expected at least {outcome.kwargs.get('min_value')}"
    if outcome.unexpected_count is None:
        return f"{head}: observed {outcome.observed_value!r}"
    of = f" of {outcome.element_count}" if outcome.element_count is not None else ""
    text = f"{head}: {outcome.unexpected_count}{of} rows {_what_fails(outcome)}"
    if "mostly" in outcome.kwargs:
        text += f" (at most {1 - outcome.kwargs['mostly']:.0%} allowed)"
    if outcome.example_values:
        text += "; examples: " + ", ".join(_fmt(v) for v in outcome.example_values)
    return text


def failure_message(summary: ValidationSummary, stage_name: str) -> str:
    """One line per failed critical expectation, naming expectation, column, failing rows and examples."""
    return "\n".join(f"{stage_name}: {_describe(o)}" for o in critical_failures(summary))


def warning_lines(summary: ValidationSummary, stage_name: str) -> list[str]:
    """One line per failed non-critical expectation, in the same form as `failure_message`."""
    return [f"{stage_name}: warning: {_describe(o)}" for o in warnings(summary)]


def summary_line(summary: ValidationSummary, stage_name: str) -> str:
    """e.g. `validate_raw: 27/28 expectations passed (1 warning) on 17381 rows`."""
    n_warn = len(warnings(summary))
    n_crit = len(critical_failures(summary))
    notes = [f"{n_crit} critical failure{'s' * (n_crit != 1)}" if n_crit else ""]
    notes.append(f"{n_warn} warning{'s' * (n_warn != 1)}" if n_warn else "")
    extra = ", ".join(n for n in notes if n)
    return (
        f"{stage_name}: {summary.passed}/{summary.evaluated} expectations passed"
        + (f" ({extra})" if extra else "")
        + f" on {summary.row_count} rows"
    )


def report_dict(summary: ValidationSummary) -> dict[str, Any]:
    """The small JSON report a stage writes: success, counts and each outcome (GX's full result omitted)."""
    return {
        "suite": summary.suite_name,
        "success": summary.success,
        "critical_success": not critical_failures(summary),
        "evaluated": summary.evaluated,
        "passed": summary.passed,
        "row_count": summary.row_count,
        "docs": summary.docs_index,
        "outcomes": [
            {
                "expectation_type": o.expectation_type,
                "column": o.column,
                "critical": o.critical,
                "success": o.success,
                "unexpected_count": o.unexpected_count,
                "unexpected_percent": o.unexpected_percent,
                "example_values": o.example_values,
                "error": o.error,
                "partitions": o.partitions,
            }
            for o in summary.outcomes
        ],
    }
