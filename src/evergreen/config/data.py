"""`data`: the dataset, declared once (source, task, columns, timestamp, derived calendar features)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from evergreen.config.base import CrossReferenceErrors, StrictModel

ColumnType = Literal["int", "float", "str", "bool", "date", "datetime"]
Role = Literal["feature", "target", "timestamp", "id", "ignore"]
Kind = Literal["numeric", "categorical"]
MissingPolicy = Literal["quarantine", "impute_median", "impute_mode", "impute_constant", "keep"]
# policies whose fill value is a statistic of the data: `clean` keeps the row and leaves the cell null, and the
# model's preprocessing fills it with the statistic of the train split (test rows never shape it)
MODEL_FILLED = ("impute_median", "impute_mode")
OutOfRangePolicy = Literal["quarantine", "clip"]
PiiPolicy = Literal["hash", "drop"]
Scalar = int | float | str | bool


class Column(StrictModel):
    """One declared column: its type, its role in the model, and how cleaning treats bad values."""

    name: str = Field(min_length=1)
    type: ColumnType
    role: Role
    kind: Kind | None = None
    nullable: bool = False
    min: float | str | None = None
    max: float | str | None = None
    allowed: list[Scalar] | None = None
    # string categories in their order (e.g. [low, medium, high]): every model family sees the value's rank, one
    # ordered number; it is also the allowed set, so a value outside it follows `out_of_range`
    order: list[str] | None = None
    # cleaning policies; None means the `clean` section's default
    missing: MissingPolicy | None = None
    fill_value: Scalar | None = None
    out_of_range: OutOfRangePolicy | None = None
    # personal data: what the prediction log, reports and validation examples store of it (the model still sees
    # it when it is a feature): a keyed hash (key in `data.pii_key_env`) or nothing; `true` means hash
    # left out of dumps when undeclared: the clean partitions' fingerprints (a dump of the columns) stay as they were
    pii: PiiPolicy | None = Field(None, exclude_if=lambda value: value is None)

    @field_validator("pii", mode="before")
    @classmethod
    def _pii_true_is_hash(cls, value: Any) -> Any:
        if value is True:
            return "hash"
        return None if value is False else value

    @model_validator(mode="after")
    def _check(self) -> Column:
        if self.kind is None:
            kind = "numeric" if self.type in ("int", "float") else "categorical"
            object.__setattr__(self, "kind", kind)
        if self.kind == "numeric" and self.type not in ("int", "float"):
            raise ValueError(f"kind 'numeric' needs type int or float, not {self.type!r}")
        if self.allowed is not None and (self.min is not None or self.max is not None):
            raise ValueError("declare either an allowed set or a min/max range, not both")
        if self.allowed is not None and len(self.allowed) == 0:
            raise ValueError("allowed must list at least one value")
        if self.order is not None:
            self._check_order()
        self._check_value_types()
        if self.type in ("date", "datetime"):
            self._check_no_time_zone()
        if self.type in ("int", "float"):
            for bound in ("min", "max"):
                if isinstance(getattr(self, bound), str):
                    raise ValueError(f"{bound} of a {self.type} column must be a number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.missing == "impute_constant" and self.fill_value is None:
            raise ValueError("missing: impute_constant needs a fill_value")
        if self.missing == "impute_median" and self.type not in ("int", "float"):
            raise ValueError("missing: impute_median needs a numeric column")
        if self.out_of_range == "clip" and (self.type not in ("int", "float") or self.allowed is not None):
            raise ValueError("out_of_range: clip needs a numeric column with min/max")
        return self

    def _check_order(self) -> None:
        assert self.order is not None
        if self.type != "str":
            raise ValueError(f"order needs a str column, not {self.type!r} (a number already has its order)")
        if len(self.order) < 2 or len(set(self.order)) != len(self.order):
            raise ValueError(f"order must list two or more distinct values, not {self.order}")
        if self.allowed is None:
            object.__setattr__(self, "allowed", list(self.order))
        elif set(self.allowed) != set(self.order):
            raise ValueError(f"allowed {self.allowed} and order {self.order} must hold the same values")

    def _check_no_time_zone(self) -> None:
        """Cleaned times carry no zone (a zoned Parquet value is read in UTC), and a zoned bound cannot be
        ordered with them: it crashed the split's checks with a TypeError."""
        for bound in ("min", "max"):
            value = getattr(self, bound)
            try:
                zoned = isinstance(value, str) and dt.datetime.fromisoformat(value).tzinfo is not None
            except ValueError:
                continue  # not ISO: `clean` names it
            if zoned:
                raise ValueError(
                    f"{bound} {value!r} has a time zone, but the cleaned times carry none: write it in UTC, without one"
                )

    @field_validator("min", "max", mode="before")
    @classmethod
    def _bound_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # a float field would take `true` as 1.0
            raise ValueError("a bound is a number (or a date for a date column), not a bool")
        return value

    def _check_value_types(self) -> None:
        """Each declared value (allowed, fill_value, a date's min/max) must be of the column's type: `clean`
        compares the data with them, and a bool among strings fails there, far from the key that caused it."""
        fits = _VALUE_FITS[self.type]
        values = [(f"allowed[{i}]", v) for i, v in enumerate(self.allowed or [])]
        bounds = ("min", "max") if self.type not in ("int", "float") else ()  # a number's bounds: checked below
        values += [(key, getattr(self, key)) for key in ("fill_value", *bounds) if getattr(self, key) is not None]
        problems = [
            (where, f"{value!r} is a {type(value).__name__}, but column {self.name!r} has type {self.type}"
             + (" (quote it in params.yaml to make it text)" if self.type == "str" else ""))
            for where, value in values
            if not fits(value)
        ]  # fmt: skip
        if problems:
            raise CrossReferenceErrors(problems)

    @property
    def has_range(self) -> bool:
        return self.min is not None or self.max is not None or self.allowed is not None


# which declared values fit a column of each type (bool is an int to Python: never a number here)
_VALUE_FITS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer(),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "date": lambda v: isinstance(v, str),
    "datetime": lambda v: isinstance(v, str),
}


class TimestampConfig(StrictModel):
    """Where the event time comes from: a date or datetime column, plus an optional hour-of-day column."""

    column: str
    hour_column: str | None = None


CalendarPart = Literal["year", "month", "day_of_week", "day_of_year", "hour"]
# what each part is to the model: a month or an hour is a category (no order the network should assume), a
# year or a day of the year a number (a trend, a season that extrapolates)
CALENDAR_KINDS: dict[str, Kind] = {
    "year": "numeric",
    "month": "categorical",
    "day_of_week": "categorical",
    "day_of_year": "numeric",
    "hour": "categorical",
}


class DerivedFeature(StrictModel):
    """A feature computed from the timestamp column, e.g. ``{name: date_month, from: date, part: month}``.

    It is not a column of the data: the model's input builder computes it (`evergreen.inference`), the same
    way in training, evaluation, export and serving. `kind` defaults by part (month, day of week and hour
    categorical; year and day of year numeric).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    name: str = Field(min_length=1)
    from_: str = Field(alias="from", min_length=1)
    part: CalendarPart
    kind: Kind | None = None

    @model_validator(mode="after")
    def _check(self) -> DerivedFeature:
        if self.kind is None:
            object.__setattr__(self, "kind", CALENDAR_KINDS[self.part])
        return self


class DataConfig(StrictModel):
    """The dataset, declared once: source, task and columns. Everything else derives from it."""

    source: str = Field(min_length=1, description="path, glob or fsspec URL of CSV or Parquet files")
    incoming: str = "data/incoming"
    # a Dask scheduler (tcp://host:8786) for per-partition work; None: local processes (env
    # EVERGREEN_DASK_SCHEDULER wins). Not an input of any stage: where work runs never changes what it makes
    scheduler: str | None = Field(None, exclude=True)  # excluded: saved configs stay as they were
    task: Literal["regression", "classification"]
    timestamp: TimestampConfig | None = None
    columns: list[Column] = Field(min_length=1)
    # calendar features computed from the timestamp column (see DerivedFeature)
    derived: list[DerivedFeature] = Field(default_factory=list)
    # the environment variable holding the key of the keyed hash (HMAC-SHA256) of the `pii: hash` columns
    pii_key_env: str = Field("EVERGREEN_PII_KEY", min_length=1)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        names = [c.name for c in self.columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"column names must be unique; repeated: {', '.join(duplicated)}")
        targets = [c.name for c in self.columns if c.role == "target"]
        if len(targets) != 1:
            raise ValueError(f"exactly one column must have role 'target', found {len(targets)}")
        if sum(c.role == "id" for c in self.columns) > 1:
            raise ValueError("at most one column may have role 'id'")
        timestamp = self.timestamp.column if self.timestamp else None
        for c in self.columns:  # monitoring compares targets and orders by time: both must be stored as they are
            if c.pii is not None and (c.role in ("target", "timestamp") or c.name == timestamp):
                raise ValueError(f"column {c.name!r}: pii cannot be declared on the target or the timestamp column")
        if not any(c.role == "feature" for c in self.columns) and not self.derived:
            raise ValueError("at least one column must have role 'feature' (or a derived feature)")
        if self.timestamp is not None:
            for key in ("column", "hour_column"):
                name = getattr(self.timestamp, key)
                if name is not None and name not in names:
                    raise ValueError(f"timestamp.{key} {name!r} is not a declared column")
            ts_type = self.column(self.timestamp.column).type
            if ts_type not in ("date", "datetime"):
                raise ValueError(f"timestamp.column must have type date or datetime, not {ts_type!r}")
        self._check_derived(set(names))
        return self

    def _check_derived(self, names: set[str]) -> None:
        seen: set[str] = set()
        for i, feature in enumerate(self.derived):
            where = f"derived[{i}] ({feature.name})"
            if feature.name in names or feature.name in seen:
                raise ValueError(f"{where}: the name {feature.name!r} is already a column or a derived feature")
            seen.add(feature.name)
            if self.timestamp is None or feature.from_ != self.timestamp.column:
                declared = f"the timestamp column {self.timestamp.column!r}" if self.timestamp else "no timestamp"
                raise ValueError(f"{where}: from {feature.from_!r} must be the timestamp column ({declared})")
            if feature.part == "hour" and self.column(feature.from_).type != "datetime":
                raise ValueError(f"{where}: part 'hour' needs a datetime timestamp; {feature.from_!r} is a date")

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def target(self) -> Column:
        return next(c for c in self.columns if c.role == "target")

    @property
    def types(self) -> dict[str, ColumnType]:
        """Each declared column's type, by name."""
        return {c.name: c.type for c in self.columns}

    @property
    def id_column(self) -> Column | None:
        return next((c for c in self.columns if c.role == "id"), None)

    @property
    def features(self) -> list[Column]:
        """The declared feature columns (derived features are not columns: see `model_inputs`)."""
        return [c for c in self.columns if c.role == "feature"]

    @property
    def model_inputs(self) -> list[str]:
        """The model's input features, in order: the feature columns, then the derived features."""
        return [c.name for c in self.features] + [d.name for d in self.derived]

    @property
    def key(self) -> list[str]:
        """Columns that identify a row: the id when declared, else every declared column.

        Never the timestamp alone: many rows may share a time (a daily or yearly date), so without an id only
        exact duplicate rows are duplicates.
        """
        if self.id_column is not None:
            return [self.id_column.name]
        return self.names
