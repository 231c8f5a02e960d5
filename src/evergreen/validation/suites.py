"""Expectation suites generated from the declared schema, as plain JSON-able dicts.

The dicts have the layout of Great Expectations 1.x `ExpectationSuite.to_json_dict()`, so GX loads them back
(see `gx_adapter`), but this module does not import GX: generating and storing a suite needs no GX at all.
Each expectation carries `meta.critical`: a failed critical expectation stops the pipeline, any other is a
warning. GX's own `severity` field is set to match, so its Data Docs show the same thing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from evergreen.config import MODEL_FILLED, Column, DataConfig
from evergreen.data.schema import clean_schema, raw_schema
from evergreen.errors import EvergreenError

Stage = Literal["raw", "clean"]
STAGES: tuple[Stage, ...] = ("raw", "clean")

# Raw data is text as it arrived: allow surrounding whitespace (the bundled data has "0 "); cleaning strips it
INT_PATTERN = r"^\s*[+-]?\d+\s*$"
FLOAT_PATTERN = r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$"
# Raw data is dirty by nature; these checks only catch a column that is unusable as a whole.
RAW_MOSTLY = 0.95
# a numeric column may hold some text cells (`clean` quarantines them); `init` declares a string column numeric
# from this share of number cells on, so the raw suite must accept what `init` declared
NUMERIC_MOSTLY = 0.8


def _expectation(kind: str, critical: bool, **kwargs: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "kwargs": kwargs,
        "meta": {"critical": critical},
        "severity": "critical" if critical else "warning",
    }


def _suite(name: str, expectations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "id": None,
        "expectations": expectations,
        "meta": {"generated_by": "evergreen expectations generate"},
        "notes": None,
    }


def _raw_expectations(data: DataConfig) -> list[dict[str, Any]]:
    out = [
        _expectation("expect_table_columns_to_match_set", True, column_set=list(raw_schema(data)), exact_match=True),
        _expectation("expect_table_row_count_to_be_between", True, min_value=1, max_value=None),
    ]
    for col in data.columns:
        if not col.nullable:
            out.append(_expectation("expect_column_values_to_not_be_null", True, column=col.name, mostly=RAW_MOSTLY))
        if col.type in ("int", "float"):
            pattern = INT_PATTERN if col.type == "int" else FLOAT_PATTERN
            out.append(
                _expectation(
                    "expect_column_values_to_match_regex",
                    True,
                    column=col.name,
                    regex=pattern,
                    mostly=NUMERIC_MOSTLY,
                )
            )
    if data.id_column is not None:
        # duplicates in raw data are expected (re-sent batches); cleaning removes them, so only warn
        out.append(_expectation("expect_column_values_to_be_unique", False, column=data.id_column.name))
    return out


def _range_expectation(col: Column) -> dict[str, Any] | None:
    if col.allowed is not None:
        return _expectation("expect_column_values_to_be_in_set", True, column=col.name, value_set=list(col.allowed))
    if col.min is not None or col.max is not None:
        return _expectation(
            "expect_column_values_to_be_between", True, column=col.name, min_value=col.min, max_value=col.max
        )
    return None


def _null_after_clean(col: Column, default_missing: str) -> bool:
    """Whether clean data may hold nulls in `col`: it is nullable, or the model fills its missing cells."""
    return col.nullable or (col.missing or default_missing) in MODEL_FILLED


def _clean_expectations(data: DataConfig, default_missing: str) -> list[dict[str, Any]]:
    out = [
        _expectation("expect_table_columns_to_match_set", True, column_set=list(clean_schema(data)), exact_match=True),
        _expectation("expect_table_row_count_to_be_between", True, min_value=1, max_value=None),
    ]
    for col in data.columns:
        if not _null_after_clean(col, default_missing):
            out.append(_expectation("expect_column_values_to_not_be_null", True, column=col.name))
        ranged = _range_expectation(col)
        if ranged is not None:
            out.append(ranged)
    id_name = data.id_column.name if data.id_column is not None else None
    if id_name is not None:
        out.append(_expectation("expect_column_values_to_be_unique", True, column=id_name))
    key = data.key
    if key == [id_name]:
        pass  # the key is the id, already checked
    elif len(key) == 1:
        out.append(_expectation("expect_column_values_to_be_unique", True, column=key[0]))
    else:
        out.append(_expectation("expect_compound_columns_to_be_unique", True, column_list=key))
    return out


def generate_suite(data: DataConfig, stage: Stage, default_missing: str = "quarantine") -> dict[str, Any]:
    """The expectation suite for raw or clean data, derived from the declared columns (and `clean.missing`,
    the policy of columns without their own: `default_missing`)."""
    if stage == "raw":
        return _suite("raw", _raw_expectations(data))
    if stage == "clean":
        return _suite("clean", _clean_expectations(data, default_missing))
    raise ValueError(f"stage must be 'raw' or 'clean', not {stage!r}")


def write_suites(
    data: DataConfig, suites_dir: Path, overwrite: bool = False, default_missing: str = "quarantine"
) -> list[Path]:
    """Write `raw.json` and `clean.json` into `suites_dir`; return the paths written.

    A suite file that already exists is left as it is unless `overwrite`: hand edits win over regeneration.
    """
    suites_dir = Path(suites_dir)
    suites_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in STAGES:
        path = suites_dir / f"{stage}.json"
        if path.exists() and not overwrite:
            continue
        # sort_keys keeps the file byte-stable across runs, so DVC sees no change when nothing changed
        path.write_text(json.dumps(generate_suite(data, stage, default_missing), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def load_suite(path: Path) -> dict[str, Any]:
    """Read a suite file written by `write_suites` (or edited by hand)."""
    path = Path(path)
    if not path.exists():
        raise EvergreenError(f"{path}: no such expectation suite (run `evergreen expectations generate`)")
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EvergreenError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise EvergreenError(f"{path}: not an expectation suite (needs a mapping with an 'expectations' list)")
    return suite
