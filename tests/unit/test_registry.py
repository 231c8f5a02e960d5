"""The registry's atomic versions and champion pointer, and the promotion gate's pure decision."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from evergreen.registry.gate import compare, decide, per_row_loss
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
        baseline_name="hgb",
        baseline_value=70.0,
        baseline_margin=0.05,
        comparison=None,
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
        ({"model_value": 80.0}, "baseline: rmse 80 vs hgb 70"),
    ],
)
def test_each_failing_check_blocks_promotion(overrides, failed):
    decision = _decide(**overrides)
    assert not decision.promote
    assert any(reason.startswith(failed) for reason in decision.reasons)


def test_champion_comparison_with_bootstrap_interval():
    rng = np.random.default_rng(0)
    actual = rng.normal(100, 30, 2000)
    champion = actual + rng.normal(0, 10, 2000)
    worse = actual + rng.normal(0, 14, 2000)
    comparison = compare(
        "regression",
        per_row_loss("regression", actual, worse),
        per_row_loss("regression", actual, champion),
        samples=500,
        confidence=0.95,
        seed=1,
    )
    assert comparison.relative_difference == pytest.approx(0.4, abs=0.06)
    assert comparison.ci_low < comparison.relative_difference < comparison.ci_high
    assert comparison.ci_low > 0.2  # clearly worse, not noise
    decision = _decide(comparison=comparison)
    assert not decision.promote and decision.reasons[0].startswith("champion: rmse")

    same = compare("regression", *(per_row_loss("regression", actual, champion),) * 2, 200, 0.95, 1)
    assert same.relative_difference == 0 and _decide(comparison=same).promote


def test_classification_loss_is_the_true_class_log_likelihood():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    loss = per_row_loss("classification", np.array(["a", "b"]), probs, classes=["a", "b"])
    assert loss == pytest.approx(-np.log([0.9, 0.8]))
