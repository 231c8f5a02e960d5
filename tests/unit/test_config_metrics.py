"""One home for the metric table: the names `promote.metric` accepts, the directions the gate reads and the
per-task defaults are one definition (`evergreen.config.metrics`), and every caller asks
`PromoteConfig.metric_for(task)` for the metric a project is judged by instead of repeating the default.

Why: the names were once listed twice (a `Literal` in the config, a table in `model/metrics.py`) and the default
was worked out at several call sites; a metric added to one list and not the other was accepted by the config
and unknown to the gate.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest

from evergreen import config
from evergreen.config import DEFAULT_METRIC, METRICS, MONITORED, TASK_METRICS, PromoteConfig, parse_params
from evergreen.errors import ConfigError
from evergreen.model import metrics as model_metrics

SRC = Path(__file__).resolve().parents[2] / "src" / "evergreen"
# the only modules that may name the per-task default: its definition, and the one method that applies it
DEFAULT_READERS = {"config/metrics.py", "config/promote.py", "config/__init__.py"}


def _accepted_names() -> tuple[str, ...]:
    """The names `promote.metric` accepts, read from the field's type (`MetricName | None`)."""
    (literal,) = [arg for arg in get_args(PromoteConfig.model_fields["metric"].annotation) if arg is not type(None)]
    assert get_origin(literal) is Literal
    return get_args(literal)


def test_the_config_accepts_exactly_the_table_and_model_metrics_reads_the_same_table() -> None:
    assert _accepted_names() == tuple(METRICS)  # the same names, in the table's order
    assert model_metrics.METRICS is METRICS and model_metrics.Metric is config.Metric
    assert model_metrics.metric("log_loss") is METRICS["log_loss"]


def test_each_task_has_its_metrics_and_a_default_among_them() -> None:
    assert sorted(name for names in TASK_METRICS.values() for name in names) == sorted(METRICS)
    assert TASK_METRICS == {
        "regression": ("rmse", "mae", "r2"),
        "classification": ("accuracy", "f1_macro", "log_loss", "roc_auc"),
    }
    for task in TASK_METRICS:
        assert DEFAULT_METRIC[task] in TASK_METRICS[task] and MONITORED[task] in TASK_METRICS[task]


def test_metric_for_is_the_declared_metric_or_the_task_default() -> None:
    assert PromoteConfig().metric_for("regression") == "rmse"
    assert PromoteConfig().metric_for("classification") == "f1_macro"
    assert PromoteConfig(metric="mae").metric_for("regression") == "mae"


def test_a_name_outside_the_table_is_refused_with_the_table_listed() -> None:
    raw = {
        "data": {
            "source": "x.csv",
            "task": "regression",
            "columns": [
                {"name": "a", "type": "float", "role": "feature"},
                {"name": "y", "type": "float", "role": "target"},
            ],
        },
        "promote": {"metric": "mape"},
    }
    with pytest.raises(ConfigError, match=f"promote.metric: 'mape' is not one of: {', '.join(METRICS)}$"):
        parse_params(raw)


def _names_used(path: Path) -> set[str]:
    """Every name a module reads or imports."""
    tree = ast.parse(path.read_text())
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
    }


def test_no_module_works_out_the_default_metric_itself() -> None:
    """Every caller asks `metric_for`: outside the config package no module names `DEFAULT_METRIC`."""
    readers = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if "DEFAULT_METRIC" in _names_used(p)}
    assert readers <= DEFAULT_READERS, sorted(readers - DEFAULT_READERS)
    assert "config/promote.py" in readers  # the control: the one method that applies it is found
