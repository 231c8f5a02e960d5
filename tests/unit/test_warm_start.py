"""Warm-started retrains (`train.init: champion`): the champion's weights, and its preprocessing while the schema
is unchanged; a changed schema refits the preprocessing and says so; another architecture starts from scratch."""

from __future__ import annotations

import json

import polars as pl
import pytest

from evergreen.config import Params, parse_params, with_overrides
from evergreen.model.train import TrainResult, WarmStart, train_model
from evergreen.registry.store import Registry
from evergreen.stages import train as train_stage
from evergreen.workspace import Workspace
from tests.harness import SMALL_MODEL, SMALL_TRAIN, TINY, synthetic

CFG = SMALL_TRAIN.model_copy(update={"epochs": 8, "warm_epochs": 3})


@pytest.fixture(scope="module")
def champion() -> TrainResult:
    """A model trained from scratch on the first history."""
    params = parse_params(TINY)
    return train_model(synthetic(400, 1), synthetic(100, 2), params.data, SMALL_MODEL, CFG, progress=False)


def _retrain(params: Params, champion: TrainResult | None, model=SMALL_MODEL) -> TrainResult:
    """A retrain on newer rows (other seeds: other statistics), warm from `champion` when given."""
    warm = None if champion is None else WarmStart("v1", champion.model)
    return train_model(synthetic(400, 3), synthetic(100, 4), params.data, model, CFG, progress=False, warm=warm)


def test_same_schema_keeps_the_preprocessing_and_starts_from_the_weights(tiny, champion):
    scratch, warm = _retrain(tiny, None), _retrain(tiny, champion)
    init = warm.metrics["init"]
    assert init["from"] == "champion" and init["version"] == "v1"
    assert init["preprocessing"] == "kept" and init["parameters_new"] == ""
    assert init["parameters_copied"] == len(list(champion.model.parameters()))
    # the champion's statistics, not those of the new rows (which differ: another sample)
    assert warm.model.prep == champion.model.prep
    assert scratch.model.prep.numeric_mean != champion.model.prep.numeric_mean
    assert scratch.metrics["init"] == {"from": "scratch"}
    # fine-tuning: warm_epochs at a lower rate, and its first epoch is already near the champion's best
    assert warm.metrics["epochs_run"] == CFG.warm_epochs
    assert max(r["lr"] for r in warm.history) <= CFG.lr * CFG.warm_lr_factor
    assert warm.history[0]["valid_loss"] < 0.5 * scratch.history[0]["valid_loss"]


def test_a_changed_schema_refits_the_preprocessing_and_says_so(tiny, champion):
    # humidity is no longer a feature: the input layer changes shape, the rest of the network still fits
    columns = [c.model_dump() for c in tiny.data.columns]
    for column in columns:
        if column["name"] == "hum":
            column["role"] = "ignore"
    params = with_overrides(tiny, {"data.columns": columns})
    warm = _retrain(params, champion)
    init = warm.metrics["init"]
    assert init["from"] == "champion"
    assert init["preprocessing"].startswith("refit: features, kinds, types")
    assert "hum" not in warm.model.prep.features
    assert init["parameters_new"] == "members.0.mlp.0.weight"  # the first layer: one input fewer
    assert init["parameters_copied"] == len(list(champion.model.parameters())) - 1
    assert 0.5 <= init["weights_copied"] < 1


def test_another_architecture_starts_from_scratch_and_says_why(tiny, champion, capsys):
    resnet = SMALL_MODEL.model_copy(update={"type": "resnet", "d_main": 16, "n_blocks": 1})
    result = _retrain(tiny, champion, model=resnet)
    assert result.metrics["init"]["from"] == "scratch"
    # the embeddings have the same names and shapes in both families, the rest does not
    assert "of the weights of this architecture (resnet)" in result.metrics["init"]["reason"]
    assert result.metrics["epochs_run"] == CFG.epochs  # the full schedule, not the fine-tuning one


def test_the_stage_starts_from_the_registry_champion_and_records_it(tiny, champion, tmp_path, capsys):
    """`train.init: champion` in the stage: the champion's `model.pt` from the registry; metrics/train.json
    (which the export stage copies into the model card) says where the weights came from."""
    params = with_overrides(tiny, {"train.init": "champion", "train.epochs": 4, "train.warm_epochs": 2,
                                   "train.device": "cpu", "model": SMALL_MODEL.model_dump(mode="json")})  # fmt: skip
    ws = Workspace(tmp_path, params)
    for name, seed in (("train", 3), ("valid", 4)):
        ws.split(name).parent.mkdir(parents=True, exist_ok=True)
        synthetic(200, seed).write_parquet(ws.split(name))

    train_stage.run(ws)  # an empty registry: from scratch, said so
    assert "the registry has no champion yet: training from scratch" in capsys.readouterr().out
    assert json.loads(ws.train_metrics.read_text())["init"] == {"from": "scratch"}

    registry = Registry(ws.registry)
    weights = tmp_path / "champion.pt"
    champion.model.save(weights)
    version = registry.add({train_stage.MODEL_FILE: weights}, {})
    registry.promote(version, reason="test")
    train_stage.run(ws)
    init = json.loads(ws.train_metrics.read_text())["init"]
    assert init["from"] == "champion" and init["version"] == version
    assert f"warm start from champion {version}" in capsys.readouterr().out


def test_a_feature_constant_in_the_champions_data_gets_its_statistics_refit(tiny):
    """A numeric feature with one value in the champion's train split (the year, in a model of one year) is
    normalised by 1 there; once it varies, the warm start refits its statistics alone, and says so."""
    params = parse_params(TINY)
    first = synthetic(400, 1).with_columns(hum=pl.lit(0.5))
    champion = train_model(first, synthetic(100, 2), params.data, SMALL_MODEL, CFG, progress=False)
    assert champion.model.prep.constant == ["hum"]
    warm = _retrain(tiny, champion)
    assert warm.metrics["init"]["preprocessing"] == (
        "kept (statistics refit for hum: constant in the champion's train split)"
    )
    numeric = [warm.model.prep.features[i] for i in warm.model.prep.numeric]
    hum, temp = numeric.index("hum"), numeric.index("temp")
    assert champion.model.prep.numeric_std[hum] == 1.0 and 0.2 < warm.model.prep.numeric_std[hum] < 0.4
    assert warm.model.prep.numeric_mean[temp] == champion.model.prep.numeric_mean[temp]  # the rest is kept
    assert warm.model.prep.constant == []


def test_a_classifier_warm_starts_from_its_champion_with_its_classes(tiny_raw):
    """Warm starts are not a regression-only path: a classifier keeps its champion's classes and preprocessing,
    fine-tunes for warm_epochs, and is calibrated again (a temperature is fitted on the new valid split)."""
    tiny_raw["data"]["task"] = "classification"
    data = parse_params(tiny_raw).data
    old = train_model(
        synthetic(400, 1, "classification"), synthetic(100, 2, "classification"), data, SMALL_MODEL, CFG,
        progress=False,
    )  # fmt: skip
    warm = train_model(
        synthetic(400, 3, "classification"), synthetic(100, 4, "classification"), data, SMALL_MODEL, CFG,
        progress=False, warm=WarmStart("v1", old.model),
    )  # fmt: skip
    assert warm.metrics["init"]["preprocessing"] == "kept"
    assert warm.model.prep.classes == old.model.prep.classes
    assert warm.metrics["epochs_run"] == CFG.warm_epochs
    assert "calibration" in warm.metrics
    probabilities = warm.model.predict(synthetic(50, 5, "classification"))
    assert probabilities.shape == (50, 2)
