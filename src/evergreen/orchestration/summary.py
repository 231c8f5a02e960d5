"""Small pure helpers for the `evergreen run` command: parsing `-S key=value` and summarising a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from evergreen.config import ConfigError

# metrics worth a line in the summary: (file, dotted key path, label)
KEY_METRICS = [
    ("metrics/data.json", "rows_out", "clean rows"),
    ("metrics/data.json", "rows_quarantined", "quarantined rows"),
    ("metrics/eval.json", "model.rmse", "model test RMSE"),
    ("metrics/eval.json", "baselines.hgb.rmse", "HistGradientBoosting test RMSE"),
    ("metrics/export.json", "parity_max_abs_diff", "ONNX parity max abs diff"),
]


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["train.lr=0.01", "split.seed=3"]` -> `{"train.lr": 0.01, "split.seed": 3}` (values parsed as YAML)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. train.lr=0.01")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _lookup(payload: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(payload, dict) or part not in payload:
            return None
        payload = payload[part]
    return payload


def run_summary(outcome: dict[str, str], root: Path) -> str:
    """A short human summary: which stages ran or were skipped, and the key metrics now on disk."""
    ran = [name for name, what in outcome.items() if what == "ran"]
    skipped = [name for name, what in outcome.items() if what == "skipped"]
    lines = [
        f"ran: {', '.join(ran) or 'nothing'}",
        f"up to date (skipped): {', '.join(skipped) or 'nothing'}",
    ]
    for file, key, label in KEY_METRICS:
        path = root / file
        if path.exists():
            value = _lookup(json.loads(path.read_text()), key)
            if value is not None:
                lines.append(f"{label}: {round(value, 4) if isinstance(value, float) else value}")
    return "\n".join(lines)
