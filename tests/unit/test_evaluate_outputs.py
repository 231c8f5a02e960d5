"""What `evaluate` adds for a task: per-class metrics and the plot tables (calibration, residuals)."""

from __future__ import annotations

import numpy as np
import pytest

from evergreen.model.metrics import per_class_metrics
from evergreen.stages.evaluate import calibration, residuals


def test_per_class_precision_recall_f1_name_every_class_even_an_absent_one():
    actual = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1, 0], [0.4, 0.6, 0], [0.2, 0.8, 0], [0.3, 0.7, 0]])
    table = per_class_metrics(actual, probabilities, ["low", "high", "rare"])
    assert table["low"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert table["high"]["precision"] == pytest.approx(2 / 3) and table["high"]["recall"] == 1.0
    assert table["rare"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_calibration_bins_confidence_against_accuracy_and_residuals_are_actual_minus_predicted():
    actual = np.array([0, 1, 1, 0, 0])
    probabilities = np.array([[0.95, 0.05], [0.15, 0.85], [0.9, 0.1], [0.92, 0.08], [0.55, 0.45]])
    table = calibration(actual, probabilities, bins=10)
    assert table["rows"].to_list() == [1, 1, 3]
    assert table["accuracy"].to_list() == [1.0, 1.0, 0.6667]  # the 0.9+ bin is right 2 times in 3: overconfident
    frame = residuals(np.array([10.0, 5.0]), np.array([8.0, 7.5]))
    assert frame["residual"].to_list() == [2.0, -2.5]
