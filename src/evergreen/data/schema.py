"""The declared schema turned into polars types, and the names of the columns Evergreen adds."""

from __future__ import annotations

import polars as pl

from evergreen.config import Column, ColumnType, DataConfig

# Columns Evergreen adds. Lineage travels from ingest to quarantine so errors can name file and row.
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"  # 1-based data row in its file, header excluded
LINEAGE = [SOURCE_FILE, SOURCE_ROW]
EVENT_TIME = "_event_time"  # derived in `clean` from the declared timestamp (date plus hour)
REASON = "_reason"  # why a quarantined row was set aside

_POLARS_TYPES: dict[ColumnType, pl.DataType] = {
    "int": pl.Int64(),
    "float": pl.Float64(),
    "str": pl.String(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
}


def polars_type(column: Column) -> pl.DataType:
    """The polars dtype a declared column has after cleaning."""
    return _POLARS_TYPES[column.type]


def raw_schema(data: DataConfig) -> dict[str, pl.DataType]:
    """Raw data keeps every declared column as the text it arrived as, plus lineage."""
    return {**{c.name: pl.String() for c in data.columns}, SOURCE_FILE: pl.String(), SOURCE_ROW: pl.Int64()}


def clean_schema(data: DataConfig) -> dict[str, pl.DataType]:
    """Clean data has every declared column in its declared type, plus the event time when declared."""
    schema = {c.name: polars_type(c) for c in data.columns}
    if data.timestamp is not None:
        schema[EVENT_TIME] = pl.Datetime("us")
    return schema
