"""The defaults in `evergreen.config` (one module per section) are the values `params.yaml` ships with, so a
key left out means the same thing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evergreen.config import parse_params

ROOT = Path(__file__).resolve().parents[2]
# values that describe the bundled bike data (its calendar, its features), not a default for any table
DATASET_SPECIFIC = {
    "split.valid_from",
    "split.test_from",
    "model.crosses",
    "model.additive",
    "model.ensemble",  # 3 for the demo's accuracy; 1 by default keeps a first run on a new table cheap
    "monitor.policy.feature_thresholds",
    "simulate",
    "orchestration.deployments",
}


def _differences(shipped: Any, default: Any, path: str) -> list[str]:
    if any(path == key or path.startswith(key + ".") for key in DATASET_SPECIFIC):
        return []
    if isinstance(shipped, dict) and isinstance(default, dict):
        return [d for key in shipped for d in _differences(shipped[key], default.get(key), f"{path}.{key}")]
    return [] if shipped == default else [f"{path}: params.yaml has {shipped!r}, the config defaults to {default!r}"]


def test_config_defaults_match_the_shipped_params() -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    shipped = parse_params(raw).model_dump(mode="json")
    defaults = parse_params({"data": raw["data"]}).model_dump(mode="json")
    differences = [
        d for section in raw if section != "data" for d in _differences(shipped[section], defaults[section], section)
    ]
    assert not differences, "\n".join(differences)


def test_the_comparison_sees_a_difference() -> None:
    assert _differences({"epochs": 40}, {"epochs": 60}, "train") == [
        "train.epochs: params.yaml has 40, the config defaults to 60"
    ]
