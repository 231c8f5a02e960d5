"""The service's request model, derived from the declared dataset (`data.columns` in params.yaml).

What a record holds:
- every feature column, always as a key: a missing key is a 422 naming it. A feature whose missing values
  cleaning would keep or impute (`nullable`, or `missing: keep | impute_*`) accepts `null`; the graph then
  does what training taught it (the train median for numbers, the unknown bucket for categories). A feature
  whose missing values cleaning quarantines rejects `null`: the model never saw a missing value there;
- optionally the id column and the timestamp column(s) when declared. They are not model inputs; they let the
  prediction log (and monitoring) join predictions to late labels and order them in time. The exception: when
  calendar features are derived from the timestamp (`data.derived`), the timestamp is a required field and the
  derived features are not fields at all (the model computes them, as in training);
- nothing else: an unknown key is a 422 naming it (a typo must not silently become a missing value).

Types are checked strictly, without coercion: ints are JSON integers (or integral numbers such as `3.0`, which
cleaning also accepts), floats are finite numbers (NaN and infinity are rejected; send `null` for missing),
strings are at most `serve.max_string_length` characters, bools are `true`/`false`, dates and datetimes are
ISO-8601 strings.

Allowed sets and min/max ranges are deliberately *not* enforced on features. A monitored model must see, log
and score out-of-range inputs (an unseen category, a heat wave): rejecting them would hide exactly the drift
that monitoring exists to detect, and turn a data change into an outage. The graph handles them (unknown bucket,
raw value); `RequestSchema.out_of_range` names them, the answer flags them per record and the prediction log
keeps the flags, so a client can distrust such a prediction and monitoring can count them.

Labels (`POST /feedback`) are held to the declaration of the target: its min/max and allowed set, and its type
(a regression label is any finite number; for an int target, a whole one within int64: `12.0` is 12, `1.5` is
refused). A label is ground truth for the next
training run: one the data contract would quarantine is refused at the door (422) instead.

`evergreen predict` applies the same rules to batch files through the cleaning code (`serving_data`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, NotRequired

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs this one, not typing's, before Python 3.12

from evergreen.config import CleanConfig, Column, DataConfig
from evergreen.data.schema import request_columns

_INT64 = 2**63
ECHO_LIMIT = 80  # characters of a client's own text (a key, a header) that an error message repeats


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """A client's text as an error message may repeat it: at most `limit` characters, always encodable."""
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate cannot be sent


def _integral_float_to_int(value: Any) -> Any:
    # `3.0` is an int cell to cleaning, so it is one here too; `3.5`, `"3"` and `true` are not
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _text_only(value: Any) -> Any:
    # dates arrive as ISO strings; pydantic's lax mode would also take a number as a unix time
    if not isinstance(value, str | dt.date):
        raise ValueError("should be an ISO-8601 string")
    return value


def _value_type(column: Column, max_string_length: int) -> Any:
    match column.type:
        case "int":
            return Annotated[int, BeforeValidator(_integral_float_to_int), Strict(), Field(ge=-_INT64, lt=_INT64)]
        case "float":
            return Annotated[float, Strict(), Field(allow_inf_nan=False)]
        case "str":
            return Annotated[str, Strict(), Field(max_length=max_string_length)]
        case "bool":
            return Annotated[bool, Strict()]
        case "date":
            return Annotated[dt.date, BeforeValidator(_text_only)]
        case "datetime":
            return Annotated[dt.datetime, BeforeValidator(_text_only)]
    raise AssertionError(column.type)


def accepts_missing(column: Column, clean: CleanConfig) -> bool:
    """Whether a missing value is scored (cleaning keeps or imputes it) rather than refused (quarantined)."""
    return (column.missing or ("keep" if column.nullable else clean.missing)) != "quarantine"


def serving_data(data: DataConfig, clean: CleanConfig) -> tuple[DataConfig, CleanConfig]:
    """The declaration the cleaning code should apply to rows to be scored: the request columns only, with
    ranges and allowed sets dropped and missing values kept where the service accepts them (so the graph
    imputes them with its train statistics, as it does for the service), and no deduplication (two equal rows
    are two requests). Everything else a row can fail on (an unparseable cell, a refused missing value) still
    quarantines it with a reason."""
    features, annotations = request_columns(data)
    keep = {c.name for c in annotations} | {c.name for c in features if accepts_missing(c, clean)}
    wanted = {c.name for c in features} | {c.name for c in annotations}
    columns = [
        c.model_copy(
            update={
                "min": None,
                "max": None,
                "allowed": None,
                "out_of_range": None,
                "fill_value": None,
                "missing": "keep" if c.name in keep else "quarantine",
            }
        )
        for c in data.columns
        if c.name in wanted
    ]
    # a copy without the target: built with model_copy, since DataConfig's own check asks for a target
    return data.model_copy(update={"columns": columns}), clean.model_copy(update={"drop_duplicates": False})


@dataclass(frozen=True)
class FieldError:
    """One problem with a request, for the error body: where (`records[3].temp`) and what."""

    field: str
    message: str


def _where(loc: tuple[Any, ...], prefix: str) -> str:
    out = prefix
    for part in loc:  # a part may be a client's unknown key: clipped
        out += f"[{part}]" if isinstance(part, int) else f".{clip(str(part))}"
    return out


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field: not a declared feature, id or timestamp column"
    if err["type"] == "missing":
        return "required field is missing (send null for a missing value where the column allows it)"
    return err["msg"].removeprefix("Value error, ")


def field_errors(exc: ValidationError, prefix: str = "records") -> list[FieldError]:
    """Readable errors; the offending input is never echoed back (it may be megabytes long), and a key is
    repeated clipped to `ECHO_LIMIT` characters."""
    return [FieldError(_where(e["loc"], prefix), clip(_message(e), 300)) for e in exc.errors(include_input=False)]


@dataclass(frozen=True)
class RequestSchema:
    """Validators for the records of `POST /predict` and the labels of `POST /feedback` (None: no label)."""

    features: list[str]
    annotations: list[str]
    records: TypeAdapter[list[dict[str, Any]]]
    labels: TypeAdapter[list[Any]]
    # per feature with a declared range or set: a test that its (non-null) value lies outside it
    outside: dict[str, Callable[[Any], bool]] = field(default_factory=dict)

    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the records list, with the record inlined (for /model and the OpenAPI page)."""
        raw = self.records.json_schema()
        definitions = raw.pop("$defs", {})
        reference = raw.get("items", {}).get("$ref", "")
        if reference:
            raw["items"] = definitions[reference.rsplit("/", 1)[-1]]
        return raw

    def validate_records(self, payload: Any) -> list[dict[str, Any]]:
        """The records, typed; raises `pydantic.ValidationError` (see `field_errors`)."""
        return self.records.validate_python(payload)

    def out_of_range(self, records: list[dict[str, Any]]) -> list[list[str]]:
        """Per validated record, the features whose value lies outside the declared min/max or allowed set."""
        checks = self.outside.items()
        return [[n for n, outside in checks if r[n] is not None and outside(r[n])] for r in records]


def _bound(column: Column, value: float | str) -> Any:
    if column.type == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if column.type == "datetime" and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value


def _outside(column: Column) -> Callable[[Any], bool] | None:
    """A test for a value outside the column's declared range or set; None when nothing is declared."""
    if column.allowed is not None:
        allowed = frozenset(column.allowed)
        return lambda value: value not in allowed
    low = None if column.min is None else _bound(column, column.min)
    high = None if column.max is None else _bound(column, column.max)
    if low is None and high is None:
        return None

    def outside(value: Any) -> bool:
        try:
            return (low is not None and value < low) or (high is not None and value > high)
        except TypeError:  # a naive datetime against an aware bound: not comparable, not flagged
            return False

    return outside


def _in_declaration(column: Column) -> Callable[[Any], Any]:
    """A validator holding a label to the target's declared range and allowed set."""
    outside = _outside(column)

    def check(value: Any) -> Any:
        if outside is not None and outside(value):
            if column.allowed is not None:
                raise ValueError(f"not one of the declared values of {column.name}: {column.allowed}")
            raise ValueError(f"outside the declared range of {column.name}: [{column.min}, {column.max}]")
        return value

    return check


def _whole(column: Column) -> Callable[[float], float]:
    """A validator refusing a label with a fractional part for an `int` column."""

    def check(value: float) -> float:
        if not value.is_integer():
            raise ValueError(f"{column.name} is declared int: send a whole number, not {value!r}")
        return value

    return check


def build_schema(data: DataConfig, clean: CleanConfig, max_string_length: int) -> RequestSchema:
    """The request model from the declaration (see the module docstring for what it accepts and why)."""
    features, annotations = request_columns(data)
    fields: dict[str, Any] = {}
    for column in features:
        value = _value_type(column, max_string_length)
        fields[column.name] = value | None if accepts_missing(column, clean) else value
    for column in annotations:
        fields[column.name] = NotRequired[_value_type(column, max_string_length) | None]
    # functional TypedDict: any column name is a valid key (a class would clash with names such as `copy`)
    record = with_config(ConfigDict(extra="forbid", title="Record"))(TypedDict("Record", fields))
    # a regression label is any finite number (a count may come as 12.0) that an int target's int64 can hold;
    # a class label has the target's type; both must lie in the target's declared range or set
    target = data.target
    value = _value_type(target, max_string_length)
    if data.task == "regression":
        value = _value_type(target.model_copy(update={"type": "float"}), max_string_length)
        if target.type == "int":
            value = Annotated[value, Field(ge=-_INT64, lt=_INT64)]
    label = Annotated[value, AfterValidator(_in_declaration(target))]
    if data.task == "regression" and target.type == "int":
        # taken as a float (as the log keeps it), but whole: 1.5 would land in the next training set as "1"
        label = Annotated[label, AfterValidator(_whole(target))]
    checks = {c.name: _outside(c) for c in features}
    return RequestSchema(
        features=[c.name for c in features],
        annotations=[c.name for c in annotations],
        records=TypeAdapter(Annotated[list[record], Field(min_length=1)]),  # type: ignore[valid-type]
        labels=TypeAdapter(Annotated[list[label | None], Field(min_length=1)]),  # type: ignore[valid-type]
        outside={name: check for name, check in checks.items() if check is not None},
    )
