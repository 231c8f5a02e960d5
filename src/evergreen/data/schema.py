"""The declared schema turned into polars types, and the names of the columns Evergreen adds."""

from __future__ import annotations

from collections.abc import Sequence

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


def required_inputs(features: Sequence[str], derived: Sequence[tuple[str, str]]) -> list[str]:
    """The columns a row must carry to be scored, given the model's input `features` and its derived features
    as (name, timestamp it comes from) pairs: the features not derived, then those timestamps, each name once.

    The one answer for the declaration (`request_columns`), the trained model (`Preprocessing.input_columns`) and
    the exported one (`ServingModel.request_columns`): computed apart, they could drift, and the service would
    accept requests the model cannot score. Here because this module is below all three."""
    names = {name for name, _ in derived}
    return list(dict.fromkeys([n for n in features if n not in names] + [source for _, source in derived]))


def request_columns(data: DataConfig) -> tuple[list[Column], list[Column]]:
    """(features, annotations): the columns a record must hold, and the optional id/timestamp columns.

    Derived calendar features are never request fields: the model computes them from the timestamp, which is
    then a required field like a feature. Here, not in serving: the prediction log reads records of these
    columns back, and it sits below serving."""
    extra = [data.id_column.name] if data.id_column else []
    if data.timestamp is not None:
        extra += [n for n in (data.timestamp.column, data.timestamp.hour_column) if n]
    derived = [(d.name, d.from_) for d in data.derived]
    features = [data.column(n) for n in required_inputs(data.model_inputs, derived)]
    feature_names = {c.name for c in features}
    annotations = [data.column(n) for n in dict.fromkeys(extra) if n not in feature_names]
    return features, annotations


def raw_schema(data: DataConfig) -> dict[str, pl.DataType]:
    """Raw data keeps every declared column as the text it arrived as, plus lineage."""
    return {**{c.name: pl.String() for c in data.columns}, SOURCE_FILE: pl.String(), SOURCE_ROW: pl.Int64()}


def clean_schema(data: DataConfig) -> dict[str, pl.DataType]:
    """Clean data has every declared column in its declared type, plus the event time when declared."""
    schema = {c.name: polars_type(c) for c in data.columns}
    if data.timestamp is not None:
        schema[EVENT_TIME] = pl.Datetime("us")
    return schema


_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


def parse_text(text: pl.Expr, column_type: ColumnType) -> pl.Expr:
    """The typed value a (stripped) text cell stands for, or null where it does not parse as `column_type`.

    The one reading of raw text: `clean` types cells with it, and `ingest` compares repeated rows with it.
    """
    match column_type:
        case "date":
            return text.str.to_date(strict=False)
        case "datetime":
            return text.str.to_datetime(time_unit="us", strict=False)
        case "bool":
            lower = text.str.to_lowercase()
            return pl.when(lower.is_in(_TRUE)).then(True).when(lower.is_in(_FALSE)).then(False)
        case "int":
            # "3.0" is a valid int cell in many exports; "3.5" is not
            as_float = text.cast(pl.Float64, strict=False)
            return pl.when(as_float == as_float.round()).then(as_float).cast(pl.Int64, strict=False)
        case _:
            return text.cast(_POLARS_TYPES[column_type], strict=False)
