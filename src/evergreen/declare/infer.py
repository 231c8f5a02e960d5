"""Infer a `data:` declaration from a table: each column's type, role and kind, with the reason for each choice.

Pure: a polars frame in, an `Inference` out (`evergreen.declare.write` puts it into params.yaml). The rules, in
the order they are tried for each column other than the target:

1. a column the user named with `--id` or `--timestamp` gets that role;
2. mostly null (more than `MOSTLY_NULL` of its rows) or constant: ignored, as the model could learn nothing;
3. a date or datetime column: the timestamp (the first one; a second is ignored);
4. a unique integer column named like a key (`id`, `*_id`, `key`, `index`, ...) or counting up in file order,
   or a unique string column without spaces: the id (the first one; a second is ignored);
5. a string column whose present cells are mostly numbers (at least `NUMERIC_SHARE`, the raw suite's
   tolerance): a numeric feature, its text cells quarantined by `clean` as unparseable;
6. free text: a string column whose values are nearly all different (`NEAR_UNIQUE`): ignored;
7. strings and bools: categorical features, ordered (`order`) when every value belongs to a known scale
   (low < medium < high, Likert answers, grades A1..G5, ...); integers: numeric features with their order kept
   and an open range (a minimum from the data, no maximum: a count one higher than any seen is no error),
   except integers with at most `LOW_CARDINALITY` values named like a code or a cycle (`season`, `hour`,
   `weekday`, `*_code`, `*_type`, `zip`, ...): categorical; other numbers: numeric features.

A column with missing values is `nullable`: numeric features have them imputed with the median by `clean`
(`impute_median`), categorical ones keep them (the model's unknown bucket), and rows missing the target or the
timestamp are quarantined. Ranges come from the finite values widened by `margin` times their span (never
below zero for a column that has no negative value; an infinite cell falls outside and `clean` quarantines
it); categorical features and a classification target get their allowed set. The task comes from the target:
strings, bools and integers with few values are classes; a target with one value is refused. A regression
target that is non-negative and right-skewed (skewness over `SKEWED`) is fitted as log1p.
With a timestamp the split is by time, cut at the 70% and 85% points of the time range's rows, and calendar
features (year, month, day of week, day of year, hour) are derived from it where they vary in the train
part; without one the split is random, stratified for classification.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from evergreen.config import CALENDAR_KINDS, ColumnType
from evergreen.data.schema import parse_text
from evergreen.errors import ConfigError
from evergreen.validation.suites import INT_PATTERN, NUMERIC_MOSTLY

Task = Literal["regression", "classification"]

MOSTLY_NULL = 0.5  # share of missing values above which a column is ignored
NEAR_UNIQUE = 0.5  # share of distinct values above which a string column is free text, not categories
LOW_CARDINALITY = 24  # integers with at most this many values are categories (and such a target is classes)
KEY_NULLS = 0.01  # a key may miss in this share of rows (they are quarantined)
MAX_ALLOWED = 50  # a categorical feature with more values gets no allowed set (new values are expected)
NUMERIC_SHARE = NUMERIC_MOSTLY  # share of present cells parsing as numbers that makes a string column numeric
SKEWED = 1.0  # a non-negative regression target with a larger skewness is fitted as log1p
VALID_AT, TEST_AT = 0.70, 0.85  # time split: cut points at these quantiles of the rows' times
_KEY_NAME = re.compile(r"(^|_)(id|key|index|idx|uuid|instant|row|record)$|^(id|key|index|idx|uuid|instant|row)",
                       re.IGNORECASE)  # fmt: skip
# integers named like this are codes or calendar cycles (categories), not counts, amounts or levels
_CODE_NAME = re.compile(r"(^|_)(codes?|types?|cat|category|class|status|group|zip|zipcode|postcode|season|"
                        r"hours?|hr|months?|mnth|weekday|wday|dow|day_of_week|weathersit)$", re.IGNORECASE)  # fmt: skip
# scales whose order everyone agrees on (lowercase, `_` for a space or a dash); a string column whose values
# all lie in one of them is declared ordered
_SCALES: tuple[tuple[str, ...], ...] = (
    ("very_low", "low", "medium", "high", "very_high"),
    ("bad", "good", "better", "best"),
    ("poor", "fair", "good", "very_good", "excellent"),
    ("fair", "good", "very_good", "premium", "ideal"),
    ("never", "rarely", "sometimes", "often", "always"),
    ("strongly_disagree", "disagree", "neutral", "agree", "strongly_agree"),
    ("very_dissatisfied", "dissatisfied", "neutral", "satisfied", "very_satisfied"),
    ("below_college", "college", "bachelor", "master", "doctor"),
    ("xxs", "xs", "s", "m", "l", "xl", "xxl"),
    ("small", "medium", "large"),
    tuple(f"{letter}{digit}" for letter in "abcdefg" for digit in "12345"),  # loan sub-grades A1 < ... < G5
)


@dataclass(frozen=True)
class InferredColumn:
    """One column's declaration (the mapping params.yaml gets) and why."""

    declaration: dict[str, Any]
    reason: str

    @property
    def name(self) -> str:
        return self.declaration["name"]

    @property
    def role(self) -> str:
        return self.declaration["role"]


@dataclass(frozen=True)
class Inference:
    """What `infer` concluded: the columns, the task, the timestamp and its derived features, and the split."""

    task: Task
    task_reason: str
    columns: list[InferredColumn]
    timestamp: str | None
    derived: list[dict[str, Any]] = field(default_factory=list)
    derived_reason: str = ""
    split: dict[str, Any] = field(default_factory=dict)
    split_reason: str = ""
    target_transform: str = "none"  # `model.target_transform` for this target
    target_transform_reason: str = ""

    def data_section(self, source: str, incoming: str = "data/incoming") -> dict[str, Any]:
        """The `data:` mapping for params.yaml."""
        section: dict[str, Any] = {"source": source, "incoming": incoming, "task": self.task}
        if self.timestamp is not None:
            section["timestamp"] = {"column": self.timestamp}
        section["columns"] = [c.declaration for c in self.columns]
        if self.derived:
            section["derived"] = self.derived
        return section


_TRIED: tuple[ColumnType, ...] = ("int", "float", "date", "datetime", "bool")


def type_text(text: pl.DataFrame) -> pl.DataFrame:
    """A table read as text (as `ingest` keeps it) typed column by column the way `clean` will read it: each
    column gets the first of int, float, date, datetime, bool that parses every cell it has (after stripping;
    a blank cell is missing), else stays str. So `clean` parses every cell `init` declared, and the raw suite
    accepts it (an int column is written in digits: `91.0` makes a float column)."""
    stripped = text.select(pl.col(n).cast(pl.String).str.strip_chars().replace("", None) for n in text.columns)
    typed = []
    for name in stripped.columns:
        cells = stripped[name]
        present = cells.is_not_null()
        for column_type in _TRIED if cells.null_count() < cells.len() else ():
            parsed = stripped.select(parse_text(pl.col(name), column_type).alias(name))[name]
            if column_type == "int" and not bool(cells.drop_nulls().str.contains(INT_PATTERN).all()):
                continue  # "91.0": clean reads it as 91, but the raw suite holds int cells to digits only
            if not bool((present & parsed.is_null()).any()):
                typed.append(parsed)
                break
        else:
            typed.append(cells)
    return pl.DataFrame(typed)


def _type(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Boolean:
        return "bool"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    return "str"  # strings, and an all-null column polars could not type


def _number(value: float, column_type: str, up: bool) -> float | int:
    if column_type == "int":
        return int(math.ceil(value) if up else math.floor(value))
    return float(f"{value:.6g}")


def _widened(series: pl.Series, column_type: str, margin: float) -> dict[str, Any]:
    """min/max of the finite values, widened by `margin` times the span (not below zero when none is negative):
    an infinite cell is out of range, for `clean` to quarantine, never a bound (`.inf` would accept anything)."""
    if series.dtype.is_float():
        series = series.filter(series.is_finite())
    if series.len() == 0:
        return {}
    low, high = float(series.min()), float(series.max())  # type: ignore[arg-type]
    pad = margin * (high - low)
    lo = low - pad if low < 0 else max(0.0, low - pad)
    return {"min": _number(lo, column_type, up=False), "max": _number(high + pad, column_type, up=True)}


def _allowed(series: pl.Series) -> list[Any]:
    return sorted(series.drop_nulls().unique().to_list())


def _is_key(series: pl.Series, column_type: str) -> str | None:
    """Why `series` is a row key, or None: unique, hardly ever missing (`series` comes from the distinct rows:
    an exact duplicate row is a duplicate, not a clash of keys), an integer key or a string code."""
    values = series.drop_nulls()
    if series.null_count() > KEY_NULLS * series.len() or values.n_unique() != values.len():
        return None
    series = values
    if column_type == "int":
        if _KEY_NAME.search(series.name):
            return "unique integers, named like a key"
        if series.len() > 1 and bool((series.diff().drop_nulls() > 0).all()):
            return "unique integers counting up in file order"
        return None
    if column_type == "str" and not bool(series.str.contains(r"\s").any()):
        return "unique strings without spaces: a key"
    return None


def _missing_policy(declaration: dict[str, Any], nulls: int, share: float) -> str:
    """Set nullability and a missing-value policy on a feature's declaration; return the reason's clause."""
    if not nulls:
        return ""
    declaration["nullable"] = True
    if declaration["kind"] == "numeric":
        declaration["missing"] = "impute_median"
        return f"; {nulls} missing ({share:.2%}): imputed with the median"
    declaration["missing"] = "keep"
    return f"; {nulls} missing ({share:.2%}): kept (the model's unknown bucket)"


def _normal(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def _order(values: list[str]) -> tuple[list[str], str] | None:
    """The values in the order of the one known scale holding them all (three or more values), and the scale
    as text; None when no scale is sure."""
    normal = {_normal(v): v for v in values}
    if len(values) < 3 or len(normal) != len(values):
        return None
    for scale in _SCALES:
        if set(normal) <= set(scale):
            ordered = [normal[v] for v in scale if v in normal]
            shown = " < ".join(scale) if len(scale) <= 7 else f"{scale[0]} < {scale[1]} < ... < {scale[-1]}"
            return ordered, shown
    return None


def _int_kind(name: str, distinct: int) -> tuple[str, str]:
    """An integer feature's kind and why: numeric (counts, ages, years and levels keep their order), unless it
    has few values and is named like a code or a cycle."""
    if distinct <= LOW_CARDINALITY and _CODE_NAME.search(name):
        return "categorical", f"integers with {distinct} values, named like a code or a cycle: categorical"
    return "numeric", (
        f"integers with {distinct} values: numeric (an integer keeps its order unless named like a code; "
        "min from the data, no max)"
    )


def _feature(series: pl.Series, column_type: str, margin: float, text_cells: int = 0) -> InferredColumn:
    """A feature's declaration and why; `text_cells` of its nulls were text in a column of numbers."""
    name, values = series.name, series.drop_nulls()
    distinct = values.n_unique()
    declaration: dict[str, Any] = {"name": name, "type": column_type, "role": "feature"}
    if column_type in ("str", "bool"):
        declaration["kind"] = "categorical"
        reason = f"{'strings' if column_type == 'str' else 'true/false'} with {distinct} values: categorical"
    elif column_type == "int":
        declaration["kind"], reason = _int_kind(name, distinct)
    else:
        declaration["kind"] = "numeric"
        reason = f"numbers with {distinct} values: numeric"
    ordered = _order(_allowed(values)) if column_type == "str" and distinct <= MAX_ALLOWED else None
    if declaration["kind"] == "numeric":
        bounds = _widened(values, column_type, margin)
        # an integer's range is open above: the next count, age or year is not an error
        declaration |= {"min": bounds["min"]} if column_type == "int" and bounds else bounds
    elif ordered is not None:
        declaration["order"] = ordered[0]
        reason += f", ordered: every value is on the scale {ordered[1]} (the model sees the rank)"
    elif column_type != "bool" and distinct <= MAX_ALLOWED:
        declaration["allowed"] = _allowed(values)
    elif column_type != "bool":
        reason += f"; no allowed set (over {MAX_ALLOWED} values: new ones are expected)"
    if text_cells:
        share = text_cells / max(series.len() - series.null_count() + text_cells, 1)
        reason += (
            f"; {1 - share:.0%} of its cells are numbers (at least {NUMERIC_SHARE:.0%} makes a number column): "
            f"its {text_cells} text cell(s) are quarantined by clean"
        )
    nulls = series.null_count() - text_cells
    reason += _infinite(series) + _missing_policy(declaration, nulls, nulls / max(series.len(), 1))
    return InferredColumn(declaration, reason)


def _infinite(series: pl.Series) -> str:
    """The reason's clause for infinite cells: outside the declared range, so `clean` quarantines their rows."""
    n = int((~series.is_finite()).sum()) if series.dtype.is_float() else 0
    return f"; {n} infinite value(s): outside the range, quarantined by clean" if n else ""


def _mostly_numbers(series: pl.Series) -> tuple[pl.Series, str, int] | None:
    """A string column whose present cells are mostly numbers (`NUMERIC_SHARE`): its numbers (null for a text
    cell), their type and how many text cells it has; None otherwise."""
    present = series.len() - series.null_count()
    if present == 0:
        return None
    text = pl.col(series.name).str.strip_chars()
    for column_type in ("int", "float"):
        value = parse_text(text, column_type)
        if column_type == "int":  # digits only, as the raw suite holds an int column to
            value = pl.when(text.str.contains(INT_PATTERN)).then(value)
        parsed = series.to_frame().select(value.alias(series.name)).to_series()
        numbers = parsed.len() - parsed.null_count()
        if numbers >= NUMERIC_SHARE * present:
            return parsed, column_type, present - numbers
    return None


def _ignored(name: str, column_type: str, reason: str) -> InferredColumn:
    return InferredColumn({"name": name, "type": column_type, "role": "ignore", "nullable": True}, reason)


def _target(series: pl.Series, column_type: str, task: Task | None, margin: float) -> tuple[InferredColumn, Task, str]:
    values = series.drop_nulls()
    if values.len() == 0:
        raise ConfigError(f"target column {series.name!r} has no values: every row is missing it")
    distinct = values.n_unique()
    if distinct == 1:
        raise ConfigError(
            f"target column {series.name!r} holds one value ({values[0]!r}) in every row that has it: there is "
            "nothing to learn; choose another --target, or add rows with other values"
        )
    if task is not None:
        task_reason = f"--task {task}"
    elif column_type in ("str", "bool"):
        task, task_reason = "classification", f"the target holds {'strings' if column_type == 'str' else 'bools'}"
    elif column_type == "int" and distinct <= LOW_CARDINALITY:
        task, task_reason = "classification", f"the target holds {distinct} integer values (<= {LOW_CARDINALITY})"
    else:
        task, task_reason = "regression", f"the target holds {distinct} distinct numbers"
    if task == "regression" and column_type not in ("int", "float"):
        raise ConfigError(f"--task regression needs a numeric target; {series.name!r} holds {column_type} values")
    if task == "classification" and column_type in ("float", "date", "datetime"):
        raise ConfigError(
            f"--task classification needs a target of strings, bools or integers; {series.name!r} holds "
            f"{column_type} values"
        )
    declaration: dict[str, Any] = {"name": series.name, "type": column_type, "role": "target"}
    if task == "classification":
        declaration["allowed"] = _allowed(values)
        reason = f"the target: {distinct} classes"
    else:
        declaration |= _widened(values, column_type, margin)
        reason = "the target: a number" + _infinite(values)
    if series.null_count():
        # nullable in the suites, quarantined by `clean`: a row without a label cannot train or score
        declaration |= {"nullable": True, "missing": "quarantine"}
        reason += f"; {series.null_count()} row(s) without it are quarantined by clean"
    return InferredColumn(declaration, reason), task, task_reason


def _time_split(times: pl.Series) -> tuple[dict[str, Any], str]:
    ordered = times.drop_nulls().cast(pl.Datetime("us")).sort()
    valid = ordered[int(VALID_AT * (ordered.len() - 1))]
    test = ordered[int(TEST_AT * (ordered.len() - 1))]
    # cut points are the first time of a later part: move past ties so every part keeps rows
    later_valid = ordered.filter(ordered > valid)
    later_test = ordered.filter(ordered > test)
    if later_valid.len() == 0 or later_test.len() == 0 or test <= valid:
        raise ConfigError(
            f"the timestamp {times.name!r} has too few distinct times ({ordered.n_unique()}) to split by time; "
            f"pass --timestamp with another column, or declare split.method: random"
        )
    valid_from, test_from = later_valid[0], later_test[0]
    if test_from <= valid_from:
        test_from = ordered.filter(ordered > valid_from)[0]
    form = "%Y-%m-%d" if all(t.time() == dt.time() for t in (valid_from, test_from)) else "%Y-%m-%dT%H:%M:%S"
    split = {"method": "time", "valid_from": valid_from.strftime(form), "test_from": test_from.strftime(form)}
    reason = f"by time on {times.name!r}: train before {split['valid_from']}, test from {split['test_from']}"
    return split, reason


def _derived(times: pl.Series, column_type: str, valid_from: str) -> tuple[list[dict[str, Any]], str]:
    """Calendar features the train part can teach: a part whose later values training never saw would only
    extrapolate (a number) or land in the untrained unknown bucket (a category)."""
    train = times.drop_nulls().cast(pl.Datetime("us"))
    train = train.filter(train < dt.datetime.fromisoformat(valid_from))
    span_days = (train.max() - train.min()).days if train.len() else 0  # type: ignore[operator]
    whole_year = span_days >= 364
    hours = train.dt.hour().n_unique() if column_type == "datetime" else 0
    why_not = {
        "year": None if train.dt.year().n_unique() > 1 else "one year in the train part",
        "month": None if whole_year else f"the train part spans {span_days + 1} days, less than a year",
        "day_of_week": None if train.dt.weekday().n_unique() == 7 else "the train part lacks some weekdays",
        "day_of_year": None if whole_year else f"the train part spans {span_days + 1} days, less than a year",
        "hour": None if hours > 1 else ("dates have no hour" if column_type == "date" else "one hour of the day"),
    }
    kept = [p for p in CALENDAR_KINDS if why_not[p] is None]
    derived = [{"name": f"{times.name}_{p}", "from": times.name, "part": p} for p in kept]
    reason = f"from {times.name!r}: {', '.join(kept) or 'none'}"
    skipped = [f"{p}: {why_not[p]}" for p in CALENDAR_KINDS if why_not[p] is not None and p != "hour"]
    if column_type == "datetime" and why_not["hour"] is not None:
        skipped.append(f"hour: {why_not['hour']}")
    return derived, reason + (f" (not {'; '.join(skipped)})" if skipped else "")


def infer(
    frame: pl.DataFrame,
    target: str,
    *,
    task: Task | None = None,
    timestamp: str | None = None,
    id_column: str | None = None,
    margin: float = 0.1,
) -> Inference:
    """Infer the declaration of `frame` (read by polars) whose target column is `target`."""
    _check_options(frame, target, timestamp, id_column, margin)
    target_column, task, task_reason = _target(frame[target], _type(frame.schema[target]), task, margin)
    columns, found_time = _infer_columns(frame, target_column, timestamp, id_column, margin)
    if not any(c.role == "feature" for c in columns) and found_time is None:
        raise ConfigError("no column can be a feature: " + "; ".join(f"{c.name}: {c.reason}" for c in columns))
    split, split_reason, derived, derived_reason = _split_and_derived(frame, columns, found_time, task)
    columns = [_personal(c) for c in columns]
    taken = set(frame.columns)
    derived = [d for d in derived if d["name"] not in taken]
    transform, transform_reason = _target_transform(frame[target], task)
    return Inference(
        task, task_reason, columns, found_time, derived, derived_reason, split, split_reason,
        transform, transform_reason,
    )  # fmt: skip


def _check_options(
    frame: pl.DataFrame, target: str, timestamp: str | None, id_column: str | None, margin: float
) -> None:
    """`ConfigError` for an option the table cannot honour, before any column is looked at."""
    if margin < 0:
        raise ConfigError(f"--margin must be zero or more, not {margin}")
    for option, name in (("--target", target), ("--timestamp", timestamp), ("--id", id_column)):
        if name is not None and name not in frame.columns:
            raise ConfigError(f"{option} {name!r} is not a column of the table (columns: {', '.join(frame.columns)})")
    if frame.height == 0:
        raise ConfigError("the table has no rows: nothing to infer a declaration from")
    if timestamp is not None and _type(frame.schema[timestamp]) not in ("date", "datetime"):
        raise ConfigError(f"--timestamp {timestamp!r} does not hold dates or datetimes (polars read it as "
                          f"{frame.schema[timestamp]})")  # fmt: skip


def _infer_columns(
    frame: pl.DataFrame,
    target_column: InferredColumn,
    timestamp: str | None,
    id_column: str | None,
    margin: float,
) -> tuple[list[InferredColumn], str | None]:
    """Each column's declaration by the module's rules, in table order, and the timestamp found (if any)."""
    target = target_column.name
    distinct_rows = frame.unique(maintain_order=True)
    columns: list[InferredColumn] = []
    found_time, found_id = timestamp, id_column
    for name in frame.columns:
        series, column_type = frame[name], _type(frame.schema[name])
        nulls = series.null_count()
        share, text_cells = nulls / frame.height, 0
        numbers = _mostly_numbers(series) if column_type == "str" and name not in (target, id_column) else None
        if numbers is not None:
            series, column_type, text_cells = numbers
        distinct = series.drop_nulls().n_unique()
        if name == target:
            columns.append(target_column)
        elif name == timestamp:
            columns.append(InferredColumn(_timestamp(series, column_type), "the timestamp (--timestamp)"))
        elif name == id_column:
            values = distinct_rows[name].drop_nulls()
            if values.n_unique() != values.len():
                raise ConfigError(f"--id {name!r} is not a key: {values.len() - values.n_unique()} value(s) repeat "
                                  "in rows that differ")  # fmt: skip
            columns.append(InferredColumn(_id(series, column_type), "the id (--id)"))
        elif share > MOSTLY_NULL:
            columns.append(_ignored(name, column_type, f"mostly null ({share:.0%} missing)"))
        elif distinct <= 1:
            columns.append(_ignored(name, column_type, "constant: one value"))
        elif column_type in ("date", "datetime"):
            if found_time is None:
                found_time = name
                why = f"the timestamp: a {column_type} column"
                columns.append(InferredColumn(_timestamp(series, column_type), why))
            else:
                why = f"a second {column_type} column ({found_time!r} is the timestamp)"
                columns.append(_ignored(name, column_type, why))
        elif (
            column_type in ("int", "str")
            and not text_cells
            and (why := _is_key(distinct_rows[name], column_type)) is not None
        ):
            if found_id is None:
                found_id = name
                columns.append(InferredColumn(_id(series, column_type), f"the id: {why}"))
            else:
                columns.append(_ignored(name, column_type, f"another key ({why}; {found_id!r} is the id)"))
        elif column_type == "str" and distinct / max(frame.height - nulls, 1) > NEAR_UNIQUE:
            text = "free text" if bool(series.str.contains(r"\s").any()) else "near-unique strings"
            why = f"{text}: {distinct} distinct values in {frame.height - nulls} rows"
            columns.append(_ignored(name, column_type, why))
        else:
            columns.append(_feature(series, column_type, margin, text_cells))
    return columns, found_time


def _split_and_derived(
    frame: pl.DataFrame, columns: list[InferredColumn], found_time: str | None, task: Task
) -> tuple[dict[str, Any], str, list[dict[str, Any]], str]:
    """The split and the calendar features, with why: by time (and derived from it) with a timestamp, else at
    random (stratified for classification) and none."""
    if found_time is not None:
        split, split_reason = _time_split(frame[found_time])
        kind = next(c.declaration["type"] for c in columns if c.name == found_time)
        derived, derived_reason = _derived(frame[found_time], kind, split["valid_from"])
        return split, split_reason, derived, derived_reason
    stratified = task == "classification"
    split = {"method": "random", "valid_fraction": 0.15, "test_fraction": 0.15, "stratify": stratified}
    split_reason = "at random (no timestamp)" + (", stratified on the target" if stratified else "")
    return split, split_reason, [], "none (no timestamp)"


# names that usually hold personal data: proposed `pii: hash` (stored as a keyed hash, still seen by the model)
_PERSONAL = re.compile(
    r"(?:^|[^a-z])(e?_?mail|(?:first|last|full|sur|user|customer)?_?name|phone|mobile|ssn|social_security|"
    r"address|street|post_?code|zip_?code|birth_?date|date_of_birth|dob|passport|iban|credit_card)(?:[^a-z]|$)"
)


def _personal(column: InferredColumn) -> InferredColumn:
    """An id or feature whose name looks personal, declared `pii: hash` (said so in its reason)."""
    if column.role not in ("id", "feature") or not _PERSONAL.search(column.name.lower()):
        return column
    declaration = {**column.declaration, "pii": "hash"}
    return InferredColumn(declaration, f"{column.reason}; pii: hash, as its name looks personal")


def _target_transform(target: pl.Series, task: Task) -> tuple[str, str]:
    """`model.target_transform` and why, with the figures behind it: log1p for a non-negative, right-skewed
    regression target (errors then count relatively, as a count's or a price's do), none otherwise."""
    if task == "classification":
        return "none", "classification: the target is a class"
    values = target.drop_nulls().cast(pl.Float64)
    values = values.filter(values.is_finite())
    skew, low = values.skew(), values.min()
    skew = 0.0 if skew is None or not math.isfinite(skew) else float(skew)  # type: ignore[arg-type]
    figures = f"skewness {skew:.2f}, minimum {low:.6g}"
    if low is not None and low >= 0 and skew > SKEWED:  # type: ignore[operator]
        return "log1p", f"non-negative and right-skewed ({figures}; log1p from skewness > {SKEWED:g})"
    why = "negative values" if low is not None and low < 0 else f"skewness <= {SKEWED:g}"  # type: ignore[operator]
    return "none", f"{why} ({figures})"


def _id(series: pl.Series, column_type: str) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": series.name, "type": column_type, "role": "id"}
    if series.null_count():  # a row without its key cannot be deduplicated or joined to a late label
        declaration |= {"nullable": True, "missing": "quarantine"}
    return declaration


def _timestamp(series: pl.Series, column_type: str) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": series.name, "type": column_type, "role": "timestamp"}
    earliest = series.min()
    if earliest is not None:
        declaration["min"] = earliest.isoformat() if column_type == "date" else earliest.isoformat(timespec="seconds")  # type: ignore[union-attr]
    if series.null_count():
        # nullable in the suites, quarantined by `clean`: a row without a time cannot be split or ordered
        declaration |= {"nullable": True, "missing": "quarantine"}
    return declaration
