"""Small pure helpers for the `evergreen run` command: parsing `-S key=value` and summarising a run."""

from __future__ import annotations

import json
from typing import Any

import yaml

from evergreen.artifacts.reports import EvalReport, ExportReport
from evergreen.errors import ConfigError
from evergreen.model.metrics import best, metric
from evergreen.workspace import Workspace


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["train.lr=0.01", "split.seed=3"]` -> `{"train.lr": 0.01, "split.seed": 3}` (values parsed as YAML)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. train.lr=0.01")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def key_metrics(ws: Workspace) -> list[tuple[str, Any]]:
    """(label, value) of the metrics worth a line: data rows, the gated metric of the model and of the baseline
    the gate compares it with, ONNX parity."""
    found: list[tuple[str, Any]] = []
    if ws.data_metrics.exists():
        data = json.loads(ws.data_metrics.read_text())
        found += [(label, data.get(key)) for key, label in (("rows_out", "clean rows"),
                                                            ("rows_quarantined", "quarantined rows"))]  # fmt: skip
    evaluation = EvalReport.read_if_exists(ws.eval_metrics)
    if evaluation is not None:
        promote = ws.params.promote
        gated = metric(promote.metric_for(ws.params.data.task))
        found.append((f"model test {gated.label}", evaluation.model.get(gated.name)))
        picked = best(gated.name, evaluation.baseline_values(gated.name, promote.baseline))
        if picked is not None:  # the baseline the gate compares with: the best one, or the one declared
            found.append((f"{picked[0]} baseline test {gated.label}", picked[1]))
    export = ExportReport.read_if_exists(ws.export_metrics)
    if export is not None:
        found.append(("ONNX parity max abs diff", export.parity_max_abs_diff))
    return [(label, value) for label, value in found if value is not None]


def run_summary(outcome: dict[str, str], ws: Workspace) -> str:
    """A short human summary: which stages ran or were skipped, and the key metrics now on disk."""
    ran = [name for name, what in outcome.items() if what == "ran"]
    skipped = [name for name, what in outcome.items() if what == "skipped"]
    lines = [
        f"ran: {', '.join(ran) or 'nothing'}",
        f"up to date (skipped): {', '.join(skipped) or 'nothing'}",
    ]
    for label, value in key_metrics(ws):
        lines.append(f"{label}: {round(value, 4) if isinstance(value, float) else value}")
    return "\n".join(lines)
