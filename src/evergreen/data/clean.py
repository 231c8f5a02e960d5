"""Turn raw text rows into typed, repaired rows; set aside what cannot be repaired, with a reason.

Order matters and is deliberate:
1. strip whitespace and treat empty cells as missing (real dirt: `"0 "`);
2. rows with every declared cell empty (blank lines) and exact duplicates are quarantined;
3. each cell is parsed as its declared type; a cell that does not parse quarantines its row;
4. missing values and out-of-range values follow the column's policy: quarantine, impute or clip. An
   `impute_median` or `impute_mode` cell stays null here: the model fills it with the train split's statistic.
A row can have several reasons; they are joined with "; ". Nothing is dropped without a row in quarantine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from evergreen.config import CleanConfig, Column, DataConfig
from evergreen.data.schema import EVENT_TIME, LINEAGE, REASON, parse_text, polars_type


@dataclass(frozen=True)
class CleanResult:
    clean: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    imputed: dict[str, int] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        reasons = Counter(reason for joined in self.quarantine[REASON].to_list() for reason in joined.split("; "))
        return {
            "rows_in": self.rows_in,
            "rows_out": self.clean.height,
            "rows_quarantined": self.quarantine.height,
            "quarantined_by_reason": dict(sorted(reasons.items())),
            "imputed": self.imputed,
            "clipped": self.clipped,
        }


def _parse(column: Column) -> pl.Expr:
    return parse_text(pl.col(column.name), column.type)


def _bound(column: Column, value: float | str) -> pl.Expr:
    if column.type == "date":
        return pl.lit(str(value)).str.to_date()
    if column.type == "datetime":
        return pl.lit(str(value)).str.to_datetime(time_unit="us")
    return pl.lit(value).cast(polars_type(column))


def _out_of_range(column: Column, on: str | None = None) -> pl.Expr:
    """True where a parsed, present value (of column `on`, default the column itself) is outside its range."""
    value = pl.col(on or column.name)
    if column.allowed is not None:
        return value.is_not_null() & ~value.is_in(pl.lit(column.allowed).cast(pl.List(polars_type(column))))
    outside = pl.lit(False)
    if column.min is not None:
        outside = outside | (value < _bound(column, column.min))
    if column.max is not None:
        outside = outside | (value > _bound(column, column.max))
    return outside.fill_null(False)


def _reason(condition: pl.Expr, reason: str) -> pl.Expr:
    return pl.when(condition).then(pl.lit(reason))


def clean(raw: pl.DataFrame, data: DataConfig, policy: CleanConfig) -> CleanResult:
    """Clean a raw text frame (declared columns plus lineage) into a typed frame and a quarantine frame."""
    names = data.names
    # one lazy query from raw text to judged rows, so the intermediate frames are never all held at once
    stripped = raw.lazy().with_columns(pl.col(names).cast(pl.String).str.strip_chars().replace("", None))
    parsed = stripped.with_columns(_parse(c).alias(f"_parsed_{c.name}") for c in data.columns)

    empty_row = pl.all_horizontal(pl.col(names).is_null())
    reasons: list[pl.Expr] = []
    if policy.drop_duplicates:
        reasons.append(_reason(pl.struct(names).is_first_distinct().not_(), "duplicate_row"))
    for c in data.columns:
        text, value = pl.col(c.name), pl.col(f"_parsed_{c.name}")
        reasons.append(_reason(text.is_not_null() & value.is_null(), f"unparseable:{c.name}"))
        missing_policy = c.missing or ("keep" if c.nullable else policy.missing)
        if missing_policy == "quarantine":
            reasons.append(_reason(text.is_null(), f"missing:{c.name}"))
        if (c.out_of_range or policy.out_of_range) == "quarantine" and c.has_range:
            reasons.append(_reason(_out_of_range(c, on=f"_parsed_{c.name}"), f"out_of_range:{c.name}"))

    # a blank line gets one reason, not one per column
    joined = (
        pl.when(empty_row)
        .then(pl.lit("empty_row"))
        .otherwise(pl.concat_str(reasons, separator="; ", ignore_nulls=True))
    )
    judged = parsed.with_columns(joined.alias(REASON)).collect()
    bad = pl.col(REASON).is_not_null() & (pl.col(REASON) != "")
    quarantine = judged.filter(bad).select([*names, *LINEAGE, REASON])
    typed = judged.filter(~bad).select([pl.col(f"_parsed_{c.name}").alias(c.name) for c in data.columns])
    typed, imputed = _impute(typed, data, policy)
    typed, clipped = _clip(typed, data, policy)
    if data.timestamp is not None:
        typed = typed.with_columns(event_time(data).alias(EVENT_TIME))
    return CleanResult(typed, quarantine, raw.height, imputed, clipped)


def _impute(frame: pl.DataFrame, data: DataConfig, policy: CleanConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    """Fill a constant where the policy names one; count the missing cells each impute policy keeps.

    `impute_median` and `impute_mode` keep the row and leave the cell null: the model fills it with the
    statistic of the train split, and serving fills the same value.
    """
    fills: dict[str, pl.Expr] = {}
    counts: dict[str, int] = {}
    for c in data.columns:
        missing_policy = c.missing or ("keep" if c.nullable else policy.missing)
        n_missing = frame[c.name].null_count()
        if n_missing == 0 or not missing_policy.startswith("impute"):
            continue
        if missing_policy == "impute_constant":
            fills[c.name] = pl.col(c.name).fill_null(pl.lit(c.fill_value).cast(polars_type(c)))
        counts[c.name] = n_missing
    return (frame.with_columns(**fills) if fills else frame), counts


def _clip(frame: pl.DataFrame, data: DataConfig, policy: CleanConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    clips: dict[str, pl.Expr] = {}
    counts: dict[str, int] = {}
    for c in data.columns:
        if (c.out_of_range or policy.out_of_range) != "clip" or c.allowed is not None or not c.has_range:
            continue
        n_outside = frame.select(_out_of_range(c).sum()).item()
        if n_outside:
            low = _bound(c, c.min) if c.min is not None else None
            high = _bound(c, c.max) if c.max is not None else None
            clips[c.name] = pl.col(c.name).clip(low, high)
            counts[c.name] = n_outside
    return (frame.with_columns(**clips) if clips else frame), counts


def event_time(data: DataConfig) -> pl.Expr:
    """The event time: the timestamp column as a datetime, plus the hour column when declared."""
    assert data.timestamp is not None
    moment = pl.col(data.timestamp.column).cast(pl.Datetime("us"))
    if data.timestamp.hour_column:
        moment = moment + pl.duration(hours=pl.col(data.timestamp.hour_column))
    return moment
