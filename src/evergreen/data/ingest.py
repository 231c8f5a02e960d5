"""Combine source and landing files into one raw table, deduplicated by the declared key.

Raw data stays text, exactly as it arrived: typing and repairs happen in `clean`. When two files carry the
same key, the first arrival wins; a later row with the same key and *different* content is a conflict and
is kept in a separate table, so nothing is lost. "Different" means different values: given the declared
column types, cells are compared as the typed values they stand for (`"0"` from a CSV and `"0.0"` from a
Parquet float column, or `"1 "` and `"1"`, are the same value), and as text where a cell does not parse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


ROW_HASH = "_row_hash"  # a row's text, hashed: a key's first arrival is compared with it across partitions
FIRST_HASH = "_first_hash"
KEYS_FILE = "_keys_file"  # which partition's key index holds a key's first arrival
KEY_HASH = "_key_hash"  # a key, hashed: the key index is searched on this one integer column
KEY_INT = "_key_int"  # an integer id's value: lets the key index skip whole parts by their range of ids


def key_hash(key: list[str]) -> pl.Expr:
    """A hash of a row's key, for searching the key index (equal keys hash equally, nulls included)."""
    return pl.struct(key).hash(seed=0).alias(KEY_HASH)


def key_int(key: list[str], types: Mapping[str, ColumnType] | None) -> pl.Expr | None:
    """For a key that is one column declared `int`, its value as an integer (null where the text does not
    parse); None for any other key. The key index keeps it, so Parquet's per-part min/max of it let a search
    skip the parts whose ids cannot match: with ids that grow with time, an arrival then reads the index parts
    near its own ids instead of the whole history."""
    if len(key) != 1 or (types or {}).get(key[0]) != "int":
        return None
    return pl.col(key[0]).str.strip_chars().cast(pl.Int64, strict=False).alias(KEY_INT)


def _index_filter(staged: pl.DataFrame, key: list[str], types: Mapping[str, ColumnType] | None) -> pl.Expr:
    """The rows of the key index that may hold one of `staged`'s keys: same key hash and, for an integer id,
    within the range of `staged`'s ids. Equal keys are equal texts, so they parse to the same integer (or both
    to null): the range test never drops a match, and parts wholly outside the range are not read at all."""
    same_hash = pl.col(KEY_HASH).is_in(staged.select(key_hash(key)).to_series().implode())
    as_int = key_int(key, types)
    if as_int is None:
        return same_hash
    ids = staged.select(as_int).to_series()
    in_range = pl.col(KEY_INT).is_between(ids.min(), ids.max()) if ids.count() else pl.lit(False)
    return same_hash & ((in_range | pl.col(KEY_INT).is_null()) if ids.null_count() else in_range)


def row_hash(columns: list[str]) -> pl.Expr:
    """A hash of the stripped text of `columns`: equal for a re-delivery spelled the same way.

    Cheap on purpose (no parsing): a row whose hash differs from its key's first arrival is compared value by
    value (`_same_value`) with that row before it counts as a conflict, so `"0"` and `"0.0"` stay the same
    value. polars' hash is stable for one polars version; the partitions' fingerprints include that version.
    """
    cells = [pl.col(c).str.strip_chars().fill_null("\x00") for c in columns]
    return pl.concat_str(cells, separator="\x1f").hash(seed=0).alias(ROW_HASH)


def compared_columns(columns: list[str], key: list[str]) -> list[str]:
    """The columns whose values decide a conflict: all but the key (none when the key is the whole row)."""
    return [c for c in columns if c not in key]


def has_key(columns: list[str], key: list[str]) -> pl.Expr:
    """True where a row can be deduplicated by `key` (see `combine`)."""
    if not compared_columns(columns, key):
        return pl.lit(True)
    return pl.all_horizontal(pl.col(k).is_not_null() for k in key)


@dataclass(frozen=True)
class Deduplicated:
    """One partition's rows after the keys of earlier partitions: new rows, conflicts, and re-deliveries."""

    raw: pl.DataFrame
    conflicts: pl.DataFrame
    repeated_rows: int


FirstRows = Callable[[pl.DataFrame], pl.DataFrame]  # (key, KEYS_FILE) rows -> those keys' first-arrival rows


def dedup_against(
    staged: pl.DataFrame,
    earlier: pl.LazyFrame | None,
    key: list[str],
    first_rows: FirstRows,
    types: Mapping[str, ColumnType] | None = None,
) -> Deduplicated:
    """Drop the rows of `staged` whose key arrived in an earlier partition (first arrival wins).

    `staged` is one partition already deduplicated within itself, with a `ROW_HASH` column; `earlier` is the
    key index of the earlier partitions in arrival order (key, `ROW_HASH`, `KEY_HASH`, `KEY_INT` for an
    integer id, `KEYS_FILE`). Only the keys that occur in `staged` are taken from it, so old partitions are
    never read in full: the index is filtered on the key's hash (and an integer id's range, `_index_filter`)
    first, so polars reads those integer columns and the other columns of the few rows that match (joining
    on the text keys of the whole index took 40% of ingest at 10M rows), then joined on the keys themselves,
    so a hash collision changes nothing. A repeated key with the same
    text hash is a re-delivery; with another hash, its first arrival is fetched (`first_rows`, a few rows) and
    compared value by value, as `combine` does: a different value makes it a conflict.
    """
    columns = [c for c in staged.columns if c != ROW_HASH]
    if earlier is None or staged.height == 0:
        return Deduplicated(staged.select(columns), staged.select(columns).clear(), 0)
    data_columns = [c for c in columns if c not in LINEAGE]
    compared = compared_columns(data_columns, key)
    keyed = has_key(data_columns, key)
    with_key = staged.filter(keyed)
    firsts = (
        earlier.filter(_index_filter(with_key, key, types))
        .join(with_key.lazy().select(key), on=key, how="semi", nulls_equal=not compared)
        .unique(subset=key, keep="first", maintain_order=True)
        .rename({ROW_HASH: FIRST_HASH})
        .collect()
    )
    joined = staged.join(firsts, on=key, how="left", nulls_equal=not compared, maintain_order="left")
    seen = keyed & pl.col(FIRST_HASH).is_not_null()
    differs = joined.filter(seen & (pl.col(ROW_HASH) != pl.col(FIRST_HASH)))
    conflicts = differs.clear().select(columns)
    if differs.height and compared:
        theirs = first_rows(differs.select(*key, KEYS_FILE)).select(data_columns)
        compared_rows = differs.join(theirs, on=key, how="left", suffix="_first", maintain_order="left")
        changed = pl.any_horizontal(~_same_value(c, (types or {}).get(c)) for c in compared)
        conflicts = compared_rows.filter(changed).select(columns)
    return Deduplicated(
        raw=joined.filter(~seen).select(columns),
        conflicts=conflicts,
        repeated_rows=joined.filter(seen).height - conflicts.height,
    )
