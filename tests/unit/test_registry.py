"""The registry's atomic versions and champion pointer, and the promotion gate's pure decision."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from evergreen.model.metrics import score
from evergreen.registry.gate import compare, decide
from evergreen.registry.store import Registry, RegistryError


def _files(tmp_path: Path, content: str) -> dict[str, Path]:
    model = tmp_path / f"{content}.onnx"
    model.write_text(content)
    return {"model.onnx": model}


def test_versions_are_numbered_and_complete(tmp_path):
    registry = Registry(tmp_path / "reg")
    assert registry.versions() == [] and registry.champion() is None
    for i in range(1, 12):
        assert registry.add(_files(tmp_path, f"m{i}"), {"n": i}) == f"v{i}"
    assert registry.versions()[-2:] == ["v10", "v11"]  # numeric, not lexical, order
    assert (registry.path("v3") / "model.onnx").read_text() == "m3"
    assert registry.card("v3")["n"] == 3 and registry.card("v3")["version"] == "v3"


def test_staging_leftovers_are_not_versions(tmp_path):
    registry = Registry(tmp_path / "reg")
    registry.add(_files(tmp_path, "a"), {})
    (registry.root / ".staging-v2-dead").mkdir()  # a crash mid-write leaves only a hidden folder
    assert registry.versions() == ["v1"]
    assert registry.add(_files(tmp_path, "b"), {}) == "v2"


def test_promote_and_rollback(tmp_path):
    registry = Registry(tmp_path / "reg")
    for name in "abc":
        registry.promote(registry.add(_files(tmp_path, name), {}), reason="test")
    assert registry.champion() == "v3"
    assert registry.rollback() == "v2"
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError, match="nothing to roll back to: v1 is the first champion"):
        registry.rollback()
    assert [e["event"] for e in registry.history()] == ["promote"] * 3 + ["rollback"] * 2


def test_shadow_pointer_is_set_ended_and_kept_out_of_rollback(tmp_path):
    registry = Registry(tmp_path / "reg")
    for name in "ab":
        registry.add(_files(tmp_path, name), {})
    registry.promote("v1", reason="first")
    assert registry.shadow() is None
    with pytest.raises(RegistryError, match="v1 is the champion"):
        registry.set_shadow("v1", reason="x")
    registry.set_shadow("v2", reason="passed the offline gate")
    assert registry.shadow() == "v2" and registry.champion() == "v1"
    registry.end_shadow("v2", outcome="discarded", reason="worse on live labels")
    assert registry.shadow() is None and registry.champion() == "v1"
    (registry.root / "SHADOW").write_bytes(b"\x00junk")
    with pytest.raises(RegistryError, match="SHADOW is damaged"):
        registry.shadow()
    registry.set_shadow("v2", reason="again")  # replacing a damaged pointer repairs it
    assert registry.shadow() == "v2"
    registry.add(_files(tmp_path, "c"), {})
    registry.set_shadow("v3", reason="a newer challenger")  # a pending shadow replaced: its end is recorded
    registry.set_shadow("v2", reason="back")
    assert [(e["event"], e["version"], e.get("outcome")) for e in registry.history()[-4:]] == [
        ("shadow", "v3", None),
        ("end_shadow", "v2", "replaced"),
        ("shadow", "v2", None),
        ("end_shadow", "v3", "replaced"),
    ]
    registry.promote("v2", reason="won in the shadow")
    registry.end_shadow("v2", outcome="promoted", reason="won in the shadow")
    events = [e["event"] for e in registry.history()]
    assert events[:4] == ["promote", "shadow", "end_shadow", "shadow"] and events[-2:] == ["promote", "end_shadow"]
    assert registry.rollback() == "v1"  # shadow events are not champions


def test_unknown_version_names_the_known_ones(tmp_path):
    registry = Registry(tmp_path / "reg")
    registry.add(_files(tmp_path, "a"), {})
    with pytest.raises(RegistryError, match=r"no model version 'v9' .* \(versions: v1\)"):
        registry.promote("v9", reason="test")
    with pytest.raises(RegistryError, match="has no champion yet"):
        registry.rollback()


def test_champion_pointer_is_replaced_not_rewritten(tmp_path):
    registry = Registry(tmp_path / "reg")
    registry.promote(registry.add(_files(tmp_path, "a"), {}), reason="test")
    inode = os.stat(registry.root / "CHAMPION").st_ino
    registry.promote(registry.add(_files(tmp_path, "b"), {}), reason="test")
    assert os.stat(registry.root / "CHAMPION").st_ino != inode  # a new file renamed over the old one
    assert registry.champion() == "v2"


def test_repromoting_the_champion_is_a_no_op_and_rollback_leaves_it(tmp_path):
    """Promoting the current champion again changes and records nothing (promote returns False), so a rollback
    afterwards really goes to the previous different champion instead of "rolling back" onto itself."""
    registry = Registry(tmp_path / "reg")
    v1, v2 = (registry.add(_files(tmp_path, name), {}) for name in "ab")
    assert registry.promote(v1, reason="first") is True
    assert registry.promote(v2, reason="second") is True
    assert registry.promote(v2, reason="again") is False
    assert [e["version"] for e in registry.history()] == ["v1", "v2"]
    assert registry.rollback() == "v1" and registry.champion() == "v1"


def test_rollback_skips_repeated_promotions_in_an_old_history(tmp_path):
    """A history written before the fix (the champion promoted twice in a row) still rolls back to the
    previous *different* champion, and a rollback after a hand promotion returns to the one before it."""
    registry = Registry(tmp_path / "reg")
    for name in "ab":
        registry.add(_files(tmp_path, name), {})
    lines = [{"event": "promote", "version": v, "previous": None, "reason": "old"} for v in ("v1", "v2", "v2")]
    (registry.root / "CHAMPION").write_text("v2\n")
    (registry.root / "history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert registry.rollback() == "v1"
    assert registry.promote("v2", reason="by hand") is True
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError, match="nothing to roll back to: v1 is the first champion"):
        registry.rollback()


def test_failed_verification_names_the_version_and_keeps_the_champion(tmp_path):
    """`promote` and `rollback` call `verify(folder, version)` first; when it raises, the error is one
    RegistryError line naming the folder, the champion pointer is untouched and nothing is recorded."""
    registry = Registry(tmp_path / "reg")
    v1, v2 = (registry.add(_files(tmp_path, name), {}) for name in "ab")
    seen: list[tuple[Path, str]] = []

    def verify(folder: Path, version: str) -> None:
        seen.append((folder, version))
        if (folder / "model.onnx").read_text() == "a":
            raise ValueError("graph\nunusable")

    registry.promote(v2, reason="ok", verify=verify)
    assert seen == [(registry.root / "v2", "v2")]
    with pytest.raises(RegistryError) as err:
        registry.promote(v1, reason="bad", verify=verify)
    message = str(err.value)
    assert "\n" not in message and str(registry.root / "v1") in message and "graph unusable" in message
    assert registry.champion() == "v2" and len(registry.history()) == 1
    registry.promote(v1, reason="unchecked")  # without verify only the recorded hashes are checked
    with pytest.raises(RegistryError, match="cannot roll back to v2"):
        registry.rollback(verify=lambda folder, version: (_ for _ in ()).throw(OSError("no")))
    assert registry.champion() == "v1"


def test_a_byte_identical_model_is_not_registered_twice(tmp_path):
    """Adding a model.onnx identical to an existing version's returns that version and writes nothing, so a
    rerun after a crash between registering and promoting leaves no byte-identical twin."""
    registry = Registry(tmp_path / "reg")
    first = registry.add(_files(tmp_path, "a"), {"n": 1})
    registry.add(_files(tmp_path, "b"), {"n": 2})
    assert registry.add(_files(tmp_path, "a"), {"n": 3}) == first
    assert registry.versions() == ["v1", "v2"] and registry.card("v1")["n"] == 1
    assert registry.add(_files(tmp_path, "c"), {}) == "v3"


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    """Staging folders, `.*.tmp` files (root and version folders) and a torn last history line are removed
    by the next write; the torn line was never an event and the history stays readable."""
    registry = Registry(tmp_path / "reg")
    registry.promote(registry.add(_files(tmp_path, "a"), {}), reason="test")
    leftovers = [
        registry.root / ".staging-v2-dead",
        registry.root / ".CHAMPION.x1y2.tmp",
        registry.root / "v1" / ".model_card.json.z3.tmp",
    ]
    leftovers[0].mkdir()
    (leftovers[0] / "model.onnx").write_text("half")
    for path in leftovers[1:]:
        path.write_text("v9")
    with (registry.root / "history.jsonl").open("a") as handle:
        handle.write('{"event": "promote", "ver')
    assert [e["version"] for e in registry.history()] == ["v1"]  # the torn line is skipped when reading
    assert registry.add(_files(tmp_path, "b"), {}) == "v2"
    assert not any(path.exists() for path in leftovers)
    assert (registry.root / "history.jsonl").read_text().endswith("}\n")
    registry.promote("v2", reason="test")
    assert [e["version"] for e in registry.history()] == ["v1", "v2"]


def _decide(**overrides):
    args = dict(
        data_suites_passed={"raw": True, "clean": True},
        parity_diff=1e-5,
        parity_limit=1e-3,
        metric="rmse",
        model_value=60.0,
        baselines={"mean": 120.0, "linear": 90.0, "hgb": 70.0},
        baseline_margin=0.05,
        train_rows=5000,
        min_train_rows=100,
        champion=None,
        champion_margin=0.02,
    )
    return decide(**{**args, **overrides})


def test_first_model_is_promoted_when_the_rest_pass():
    decision = _decide()
    assert decision.promote and decision.reasons == ["every check passed"]


@pytest.mark.parametrize(
    ("overrides", "failed"),
    [
        ({"data_suites_passed": {"raw": True, "clean": False}}, "data_suites: failed suites: clean"),
        ({"parity_diff": 0.5}, "onnx_parity"),
        ({"model_value": 80.0}, "baseline: rmse 80 vs best baseline hgb 70"),
        ({"train_rows": 8}, "training_rows: trained on 8 rows (promote.min_train_rows 100)"),
        ({"champion": "champion v1 trained on 990 of the 1000 test rows"}, "champion: champion v1 trained on 990"),
        ({"model_value": None}, "baseline: rmse is undefined for the model"),
    ],
)
def test_each_failing_check_blocks_promotion(overrides, failed):
    decision = _decide(**overrides)
    assert not decision.promote
    assert any(reason.startswith(failed) for reason in decision.reasons), decision.reasons


def test_the_gate_compares_with_the_best_baseline_in_the_metrics_direction():
    # the case: judged against a bad HistGradientBoosting, a weak model passed; the best baseline stops it
    scores = {"mean": 0.30, "linear": 0.56, "hgb": 0.20}
    weak = _decide(metric="f1_macro", model_value=0.47, baselines=scores)
    assert not weak.promote and "vs best baseline linear 0.56" in weak.reasons[0]
    assert _decide(metric="f1_macro", model_value=0.55, baselines=scores).promote  # within 5% of 0.56
    # lower is better for log loss: the best is the smallest, None (undefined) is ignored
    losses = {"mean": 1.2, "linear": 0.9, "hgb": None}
    assert not _decide(metric="log_loss", model_value=1.0, baselines=losses).promote
    assert _decide(metric="log_loss", model_value=0.93, baselines=losses).promote
    assert _decide(metric="rmse", model_value=80.0, baselines={"mean": 120.0}).promote  # one named baseline


def _rows(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    actual = rng.normal(100, 30, n)
    return actual, actual + rng.normal(0, 10, n), actual + rng.normal(0, 14, n)


def test_champion_comparison_with_bootstrap_interval():
    actual, champion, worse = _rows(0)
    comparison = compare("rmse", actual, worse, champion, samples=500, confidence=0.95, seed=1)
    assert comparison.relative_difference == pytest.approx(0.4, abs=0.06)
    assert comparison.ci_low < comparison.relative_difference < comparison.ci_high
    assert comparison.ci_low > 0.2  # clearly worse, not noise
    decision = _decide(champion=comparison)
    assert not decision.promote and decision.reasons[0].startswith("champion: rmse")

    same = compare("rmse", actual, champion, champion, 200, 0.95, 1)
    assert same.relative_difference == 0 and _decide(champion=same).promote


def test_comparison_is_signed_worse_for_higher_is_better_metrics():
    actual, champion, worse = _rows(1)
    r2 = compare("r2", actual, worse, champion, 200, 0.9, 1)
    assert r2.challenger < r2.champion and r2.relative_difference > 0 and r2.ci_low > 0
    better = compare("r2", actual, champion, worse, 200, 0.9, 1)
    assert better.relative_difference < 0


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "log_loss", "roc_auc"])
def test_bootstrap_of_classification_metrics_matches_their_definition(metric):
    rng = np.random.default_rng(2)
    actual = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3)) + 2.0 * np.eye(3)[actual]
    good = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    noisy = 0.5 * good + 0.5 * rng.dirichlet(np.ones(3), 600)
    # 30 resamples: ROC AUC is computed resample by resample (~50 ms each), and the noisy model's interval
    # stays clear of 0 with 30 (ci_low 0.06 against 0.064 with 100)
    comparison = compare(metric, actual, noisy, good, 30, 0.9, 3)
    assert comparison.champion == pytest.approx(score("classification", actual, good, ["a", "b", "c"])[metric])
    assert comparison.relative_difference > 0 and comparison.ci_low > 0  # the noisy model is worse


def test_a_refused_champion_comparison_is_reported_and_blocks():
    decision = _decide(champion="champion v2 trained on 900 of the 1000 test rows; the 100 left are fewer")
    assert not decision.promote and decision.comparison is None
    assert [c.name for c in decision.checks if not c.passed] == ["champion"]
