"""Combine source and landing files into one raw table, deduplicated by the declared key.

Raw data stays text, exactly as it arrived: typing and repairs happen in `clean`. When two files carry the
same key, the first arrival wins; a later row with the same key and *different* content is a conflict and
is kept in a separate table, so nothing is lost. "Different" means different values: given the declared
column types, cells are compared as the typed values they stand for (`"0"` from a CSV and `"0.0"` from a
Parquet float column, or `"1 "` and `"1"`, are the same value), and as text where a cell does not parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from evergreen.config import ColumnType
from evergreen.data.schema import LINEAGE, parse_text
from evergreen.errors import DataError

# bool cells as `clean` reads them


@dataclass(frozen=True)
class IngestResult:
    raw: pl.DataFrame
    conflicts: pl.DataFrame
    rows_per_file: dict[str, int] = field(default_factory=dict)
    repeated_rows: int = 0  # same key and same content as an earlier row: a re-delivery, nothing new

    def summary(self) -> dict[str, object]:
        return {
            "files": len(self.rows_per_file),
            "rows_read": sum(self.rows_per_file.values()),
            "rows_per_file": self.rows_per_file,
            "rows_out": self.raw.height,
            "repeated_rows_dropped": self.repeated_rows,
            "key_conflicts": self.conflicts.height,
        }

    def check_conflicts(self, key: list[str], max_share: float) -> None:
        """Raise `DataError` with the count and examples when key conflicts exceed `max_share` of the rows read."""
        read = sum(self.rows_per_file.values())
        if not self.conflicts.height or self.conflicts.height <= max_share * read:
            return
        examples = self.conflicts.select(*key, *LINEAGE).head(5).iter_rows(named=True)
        shown = "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in examples)
        raise DataError(
            f"ingest: {self.conflicts.height} of {read} rows ({self.conflicts.height / read:.1%}) repeat the key "
            f"{', '.join(key)} of an earlier row with different values, above ingest.max_key_conflicts "
            f"({max_share:.1%}); is {', '.join(key)} really an id? Examples: {shown}"
        )


def _same_value(column: str, kind: ColumnType | None) -> pl.Expr:
    """True where `column` and `column_first` hold the same value (typed where both parse, else text)."""
    if kind is None:
        return pl.col(column).eq_missing(pl.col(f"{column}_first"))
    ours, theirs = (pl.col(c).str.strip_chars().replace("", None) for c in (column, f"{column}_first"))
    typed_ours, typed_theirs = parse_text(ours, kind), parse_text(theirs, kind)
    both = typed_ours.is_not_null() & typed_theirs.is_not_null()
    return pl.when(both).then(typed_ours == typed_theirs).otherwise(ours.eq_missing(theirs))


def combine(frames: list[pl.DataFrame], key: list[str], types: Mapping[str, ColumnType] | None = None) -> IngestResult:
    """Concatenate text frames in arrival order and deduplicate them by `key` (first arrival wins).

    `types` (column name -> declared type, e.g. `{c.name: c.type for c in data.columns}`) makes a repeated
    key a conflict only when some value differs, not its spelling; without it cells are compared as text.
    Rows whose key is null cannot be deduplicated and are kept for `clean` to judge. When the key is every
    column (a table without an id), a repeated key is an exact duplicate row, nulls included, and never a
    conflict.
    """
    types = types or {}
    rows_per_file = {f[LINEAGE[0]][0]: f.height for f in frames if f.height}
    everything = pl.concat(frames, how="vertical") if frames else pl.DataFrame()
    data_columns = [c for c in everything.columns if c not in LINEAGE]
    compared_columns = [c for c in data_columns if c not in key]
    # the whole row is the key: a null cell is part of the row's content, not a missing key
    has_key = pl.lit(True) if not compared_columns else pl.all_horizontal(pl.col(k).is_not_null() for k in key)
    keep = ~has_key | pl.struct(key).is_first_distinct()
    tagged = everything.with_columns(_keep=keep)
    raw = tagged.filter("_keep").drop("_keep")
    later = tagged.filter(~pl.col("_keep")).drop("_keep")
    # only the few repeated keys are compared with their first arrival (a window over every row was slow)
    firsts = raw.filter(has_key).join(later.select(key).unique(), on=key, how="semi").select(data_columns)
    compared = later.join(firsts, on=key, how="left", suffix="_first")
    if compared_columns and later.height:
        differs = pl.any_horizontal(~_same_value(c, types.get(c)) for c in compared_columns)
        conflicts = compared.filter(differs).select(later.columns)
    else:
        conflicts = later.clear()
    return IngestResult(
        raw=raw,
        conflicts=conflicts,
        rows_per_file=rows_per_file,
        repeated_rows=later.height - conflicts.height,
    )
