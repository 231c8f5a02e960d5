"""Shared fixtures: a tiny declared dataset for unit tests, and the project root for end-to-end tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from evergreen.config import Params, parse_params

ROOT = Path(__file__).resolve().parents[1]

TINY: dict[str, Any] = {
    "data": {
        "source": "in/*.csv",
        "task": "regression",
        "timestamp": {"column": "day", "hour_column": "hr"},
        "columns": [
            {"name": "id", "type": "int", "role": "id", "min": 1},
            {"name": "day", "type": "date", "role": "timestamp"},
            {"name": "hr", "type": "int", "role": "feature", "kind": "categorical", "min": 0, "max": 23},
            {
                "name": "weather",
                "type": "int",
                "role": "feature",
                "kind": "categorical",
                "allowed": [1, 2, 3],
            },
            {"name": "temp", "type": "float", "role": "feature", "min": 0, "max": 1, "out_of_range": "clip"},
            {
                "name": "hum",
                "type": "float",
                "role": "feature",
                "min": 0,
                "max": 1,
                "missing": "impute_median",
            },
            {"name": "y", "type": "int", "role": "target", "min": 0},
        ],
    },
}


@pytest.fixture
def tiny_raw() -> dict[str, Any]:
    """A fresh, mutable copy of the tiny params mapping."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny(tiny_raw: dict[str, Any]) -> Params:
    return parse_params(tiny_raw)


@pytest.fixture(scope="session")
def bundled_params() -> Params:
    return parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
