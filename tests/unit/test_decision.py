"""A classifier's decision for macro F1: weights chosen on valid (a threshold for two classes), kept with the
model through save, load, export and serving, used by evaluation, the gate and the baselines alike; the
probabilities themselves are never changed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from evergreen.inference import load_version, predict, predicted_classes, predicted_labels
from evergreen.model.candidates import load_candidate, save_candidate, with_decision
from evergreen.model.export import signature
from evergreen.model.metrics import classification_metrics, decision_for, fit_decision_weights, resampled
from evergreen.model.trees import fit_trees
from evergreen.monitoring.monitor import _with_probabilities
from evergreen.stages.promote import reference_sample
from tests.harness import synthetic
from tests.unit.test_linear import _prep, _xy


def _rare_class(n: int, seed: int, share: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A 5% class whose probability is raised but rarely above 0.5: argmax never predicts it."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < share).astype(int)
    p1 = np.clip(0.03 + 0.2 * y + rng.normal(0, 0.05, n), 0.001, 0.45)
    return y, np.stack([1 - p1, p1], axis=1)


def test_a_threshold_chosen_on_valid_predicts_the_rare_class_and_holds_on_new_rows():
    y_valid, p_valid = _rare_class(3000, 1)
    y_test, p_test = _rare_class(3000, 2)
    weights = fit_decision_weights(y_valid, p_valid, 2)
    assert len(weights) == 2 and 0 < weights[0] < 0.45 and weights[0] + weights[1] == pytest.approx(1)
    plain = classification_metrics(y_test, p_test, [0, 1])
    decided = classification_metrics(y_test, p_test, [0, 1], weights)
    assert plain["f1_macro"] < 0.5  # the majority class everywhere
    assert decided["f1_macro"] > plain["f1_macro"] + 0.2  # on rows the threshold never saw
    # the probabilities are untouched: their metrics do not move
    assert decided["log_loss"] == plain["log_loss"] and decided["roc_auc"] == plain["roc_auc"]
    # the bootstrap's vectorised macro F1 decides the same way
    every = np.arange(len(y_test))[None, :]
    assert resampled("f1_macro", y_test, p_test, every, weights)[0] == pytest.approx(decided["f1_macro"])


def test_no_weights_where_the_most_probable_class_is_already_best_or_the_metric_reads_probabilities():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    confident = np.stack([1.0 - y, 1.0 * y], axis=1) * 0.98 + 0.01  # every row right by argmax
    assert fit_decision_weights(y, confident, 2) == []
    _, p = _rare_class(500, 3)
    assert decision_for("log_loss", "classification", y[:500], p, 2) == []
    assert decision_for("rmse", "regression", y[:500], p, 2) == []
    assert fit_decision_weights(np.zeros(100, dtype=int), p[:100], 2) == []  # one class in valid: nothing to fit


def test_three_classes_get_one_weight_each_and_do_better_on_macro_f1():
    rng = np.random.default_rng(4)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(3, n, p=[0.8, 0.15, 0.05])
        logits = rng.normal(0, 1, (n, 3))
        logits[np.arange(n), y] += 1.0
        logits[:, 0] += 1.5  # the majority class is favoured beyond its evidence
        return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    (y_valid, p_valid), (y_test, p_test) = rows(4000), rows(4000)
    weights = fit_decision_weights(y_valid, p_valid, 3)
    assert len(weights) == 3 and max(weights) == 1.0
    gain = (classification_metrics(y_test, p_test, [0, 1, 2], weights)["f1_macro"]
            - classification_metrics(y_test, p_test, [0, 1, 2])["f1_macro"])  # fmt: skip
    assert gain > 0.01
    assert (predicted_classes(p_test, weights) != p_test.argmax(axis=1)).any()


def test_the_decision_travels_with_the_model_through_save_export_and_serving(tmp_path):
    train, valid, test = (synthetic(n, seed, "classification") for n, seed in ((800, 1), (400, 2), (300, 3)))
    prep = _prep("classification", train)
    trees = fit_trees(prep, _xy(train, prep), _xy(valid, prep), seed=0)
    x_valid, y_valid = _xy(valid, prep)
    forced = with_decision(trees, "f1_macro", x_valid, y_valid)
    # a decision far from argmax, so that any loss of it on the way shows
    forced.prep = dataclasses.replace(forced.prep, decision_weights=[0.2, 0.8])
    save_candidate(forced, tmp_path / "model.pt")
    loaded = load_candidate(tmp_path / "model.pt")
    assert loaded.prep.decision_weights == [0.2, 0.8]

    folder = tmp_path / "version"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(loaded.to_onnx(17))
    (folder / "signature.json").write_text(json.dumps(signature(loaded)))
    served = load_version(folder, "v1")
    assert served.decision_weights == [0.2, 0.8]
    output = predict(served, test)
    labels = predicted_labels(served, output)
    expected = [served.classes[i] for i in (output * np.array([0.2, 0.8])).argmax(axis=1)]
    assert labels == expected and labels != [served.classes[i] for i in output.argmax(axis=1)]

    # monitoring's reference keeps the version's scores, so monitoring never loads the model to score it again
    reference = reference_sample(test, served, rows=100, seed=0)
    assert reference["prediction"].to_list() == predicted_labels(served, predict(served, reference))
    kept = np.array([json.loads(p) for p in reference["probabilities"]])
    assert np.allclose(kept, predict(served, reference)) and kept.shape == (100, 2)
    assert _with_probabilities(reference, registry=None, champion="v1") is reference  # type: ignore[arg-type]
