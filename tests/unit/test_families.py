"""Model families (`model.type`): each trains on both tasks with crosses, additive terms and an ensemble, and
exports to ONNX with a dynamic batch behind the parity gate; temperature scaling and TensorBoard curves."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable

import numpy as np
import onnx
import polars as pl
import pytest
import torch

from evergreen.config import ModelConfig, Params, parse_params
from evergreen.errors import ConfigError
from evergreen.inference import onnx_predict
from evergreen.model.export import check_parity, export_onnx, onnx_session, parity
from evergreen.model.network import TabularNet
from evergreen.model.train import fit_temperature, train_model
from tests.harness import SMALL_MODEL, SMALL_TRAIN, TINY, synthetic

FAMILIES = ["mlp", "resnet", "ft_transformer", "tabm"]
# small enough to train in about a second on one thread; two members, a cross and an additive feature
SMALL = {
    "mlp": SMALL_MODEL,
    "resnet": SMALL_MODEL.model_copy(update={"type": "resnet", "d_main": 16, "n_blocks": 2}),
    "ft_transformer": SMALL_MODEL.model_copy(
        update={"type": "ft_transformer", "d_token": 8, "heads": 2, "n_blocks": 2}
    ),
    "tabm": SMALL_MODEL.model_copy(
        update={"type": "tabm", "k": 4, "d_block": 16, "n_blocks": 2, "bins": 8, "d_embedding": 4}
    ),
}


def _params(task: str) -> Params:
    raw = copy.deepcopy(TINY)
    raw["data"]["task"] = task
    return parse_params(raw)


def _train(family: str, task: str, **update: object) -> TabularNet:
    config = SMALL[family].model_copy(update={"ensemble": 2, "additive": ["temp"], **update})
    train, valid = synthetic(500, 1, task), synthetic(150, 2, task)
    return train_model(train, valid, _params(task).data, config, SMALL_TRAIN, progress=False).model


@pytest.fixture(scope="module")
def trained() -> Callable[..., TabularNet]:
    """`_train(family, task, **update)`, trained once per module for each set of arguments: most tests only read
    the model, and training is most of their time. Each call returns a copy, so a test may change its own."""
    models: dict[str, TabularNet] = {}

    def get(family: str, task: str, **update: object) -> TabularNet:
        key = repr((family, task, sorted(update.items())))
        if key not in models:
            models[key] = _train(family, task, **update)
        return copy.deepcopy(models[key])

    return get


def _awkward_rows(model: TabularNet, task: str) -> np.ndarray:
    """Rows with unseen categories and missing values, which the graph must treat as torch does."""
    rows = synthetic(60, 3, task).with_columns(
        weather=pl.when(pl.col("id") % 3 == 0).then(pl.lit(7)).otherwise(pl.col("weather")),
        hum=pl.when(pl.col("id") % 4 == 0).then(None).otherwise(pl.col("hum")),
    )
    return model.prep.matrix(rows)


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_learns_and_exports_with_parity(family, task, trained):
    model = trained(family, task)
    assert model.config.type == family and len(model.members) == 2
    # tabm's k members count as members: 2 x 4 outputs, each trained on its own loss
    k = model.config.k if family == "tabm" else 1
    assert model.member_outputs(torch.from_numpy(_awkward_rows(model, task))).shape[0] == 2 * k
    rows = synthetic(200, 4, task)
    output = model.predict(rows)
    if task == "regression":  # better than predicting the mean
        actual = rows["y"].to_numpy().astype(float)
        assert np.sqrt(np.mean((output - actual) ** 2)) < 0.8 * actual.std()
    else:
        np.testing.assert_allclose(output.sum(axis=1), 1, atol=1e-5)
        assert (output.argmax(axis=1) == rows["y"].to_numpy()).mean() > 0.85
    session = onnx_session(export_onnx(model, opset=17))
    x = _awkward_rows(model, task)
    scale = model.prep.target_scale if task == "regression" else 1.0
    check_parity(parity(session, model, x), 1e-4, scale)
    for batch in (1, 37):  # the batch axis is dynamic
        assert len(onnx_predict(session, x[:batch])) == batch


def test_the_transformer_graph_holds_plain_onnx_ops_only(trained):
    """nn.TransformerEncoder's fused fast path must not leak into the graph: standard ops, any batch size."""
    graph = onnx.load_from_string(export_onnx(trained("ft_transformer", "regression"), opset=17))
    ops = {node.op_type for node in graph.graph.node}
    assert {"Softmax", "MatMul", "LayerNormalization"} <= ops
    assert all(node.domain in ("", "ai.onnx") for node in graph.graph.node)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("family", FAMILIES)
def test_additive_features_skip_the_family(family):
    """An additive feature's effect is the same for every row: its weight times its value, whatever the rest."""
    model = _train(family, "regression", target_transform="none")
    rows = synthetic(4, 5).with_columns(temp=pl.lit(0.2))
    shifted = rows.with_columns(temp=pl.lit(0.7))
    change = model.predict(shifted) - model.predict(rows)
    assert abs(change[0]) > 1e-3
    np.testing.assert_allclose(change, change[0], rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_saved_family_loads_with_its_type_and_temperature(family, tmp_path, trained):
    model = trained(family, "classification")
    model.save(tmp_path / "model.pt")
    loaded = TabularNet.load(tmp_path / "model.pt")
    assert loaded.config.type == family and float(loaded.temperature) == float(model.temperature)
    rows = synthetic(30, 6, "classification")
    np.testing.assert_array_equal(loaded.predict(rows), model.predict(rows))


def test_a_model_saved_before_temperature_scaling_still_loads(tmp_path, trained):
    model = trained("mlp", "classification")
    model.temperature.fill_(1.0)
    saved = {"state_dict": {k: v for k, v in model.state_dict().items() if k != "temperature"},
             "config": {k: v for k, v in model.config.model_dump(mode="json").items() if k != "type"},
             "preprocessing": model.prep.to_dict(), "params": {}}  # fmt: skip
    torch.save(saved, tmp_path / "old.pt")
    loaded = TabularNet.load(tmp_path / "old.pt")
    assert loaded.config.type == "mlp" and float(loaded.temperature) == 1.0
    rows = synthetic(30, 6, "classification")
    np.testing.assert_array_equal(loaded.predict(rows), model.predict(rows))


def test_fit_temperature_recovers_the_temperature_of_overconfident_logits():
    rng = np.random.default_rng(0)
    calibrated = torch.from_numpy(rng.normal(0, 2, (1, 4000, 3)))
    # labels drawn from softmax(calibrated): those logits are calibrated; logits * 3 are overconfident
    probabilities = torch.softmax(calibrated[0], dim=-1).numpy()
    target = torch.from_numpy(np.array([rng.choice(3, p=p) for p in probabilities]))
    assert fit_temperature(calibrated * 3, target) == pytest.approx(3, rel=0.1)
    assert fit_temperature(calibrated / 2, target) == pytest.approx(0.5, rel=0.1)


def test_fit_temperature_stays_1_when_nothing_improves():
    logits = torch.zeros((1, 10, 2))  # every row 50/50: no temperature changes the likelihood
    assert fit_temperature(logits, torch.tensor([0, 1] * 5)) == 1.0


def test_fit_temperature_stays_1_on_a_split_the_model_separates_perfectly():
    """The likelihood then grows as T shrinks to 0: no evidence for sharpening the rows it gets wrong."""
    target = torch.tensor([0, 1] * 20)
    logits = torch.nn.functional.one_hot(target, 2).double().unsqueeze(0) * 2  # right, with p = 0.88
    assert fit_temperature(logits, target) == 1.0


def test_an_ensemble_is_calibrated_as_the_mean_of_its_members():
    rng = np.random.default_rng(1)
    calibrated = torch.from_numpy(rng.normal(0, 2, (1, 3000, 2)))
    target = torch.from_numpy((rng.uniform(size=3000) < torch.softmax(calibrated[0], -1)[:, 1].numpy()).astype(int))
    members = torch.cat([calibrated * 3, calibrated * 3])  # two identical overconfident members
    assert fit_temperature(members, target) == pytest.approx(3, rel=0.1)


def test_the_temperature_is_fitted_on_valid_reported_and_inside_the_graph():
    params = _params("classification")
    result = train_model(synthetic(500, 1, "classification"), synthetic(150, 2, "classification"),
                         params.data, SMALL_MODEL, SMALL_TRAIN, progress=False)  # fmt: skip
    calibration, model = result.metrics["calibration"], result.model
    assert calibration["temperature"] == pytest.approx(float(model.temperature))
    assert calibration["valid_log_loss_after"] <= calibration["valid_log_loss_before"]
    assert result.metrics["valid"]["log_loss"] == calibration["valid_log_loss_after"]
    x = model.prep.matrix(synthetic(40, 3, "classification"))
    session = onnx_session(export_onnx(model, opset=17))
    model.temperature.fill_(float(model.temperature) * 2)  # the graph keeps the fitted one
    assert parity(session, model, x) > 1e-3
    model.temperature.fill_(float(model.temperature) / 2)
    assert parity(session, model, x) < 1e-5


def test_regression_has_no_calibration():
    params = _params("regression")
    result = train_model(synthetic(300, 1), synthetic(100, 2), params.data, SMALL_MODEL,
                         SMALL_TRAIN.model_copy(update={"epochs": 2}), progress=False)  # fmt: skip
    assert "calibration" not in result.metrics and result.metrics["model_type"] == "mlp"
    assert float(result.model.temperature) == 1.0


def _stage_workspace(tmp_path, tensorboard: bool, family: str = "resnet"):
    from evergreen.workspace import Workspace

    raw = copy.deepcopy(TINY)
    raw["train"] = {"epochs": 3, "device": "cpu", "tensorboard": tensorboard}
    raw["model"] = SMALL[family].model_dump(mode="json")
    ws = Workspace(tmp_path, parse_params(raw))
    ws.split("train").parent.mkdir(parents=True)
    synthetic(300, 1).write_parquet(ws.split("train"))
    synthetic(100, 2).write_parquet(ws.split("valid"))
    return ws


def test_the_train_stage_writes_tensorboard_curves_per_family(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from evergreen.stages import train as train_stage

    ws = _stage_workspace(tmp_path, tensorboard=True)
    train_stage.run(ws)
    train_stage.run(ws)  # a rerun replaces the family's curves instead of adding a second run beside them
    runs = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    assert runs == ["resnet"] and len(list((tmp_path / "tensorboard/resnet").iterdir())) == 1
    events = EventAccumulator(str(tmp_path / "tensorboard/resnet")).Reload()
    assert {"loss/train", "loss/valid", "valid/rmse", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("valid/rmse")] == [1, 2, 3]


def test_without_tensorboard_nothing_is_written_for_it(tmp_path):
    from evergreen.stages import train as train_stage

    ws = _stage_workspace(tmp_path, tensorboard=False)
    train_stage.run(ws)
    assert ws.model.exists() and not ws.tensorboard.exists()


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    from evergreen.stages import train as train_stage

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an absent package looks like
    ws = _stage_workspace(tmp_path, tensorboard=True)
    with pytest.raises(ConfigError, match=r"train.tensorboard is true, but the `tensorboard` package"):
        train_stage.run(ws)


def test_model_config_families_are_typed():
    assert ModelConfig().type == "mlp"
    assert ModelConfig(type="ft_transformer", d_token=96, heads=8).heads == 8


@pytest.mark.parametrize(
    "update",
    [
        {"num_embeddings": "periodic"},
        {"num_embeddings": "none", "categorical_encoding": "embedding"},
        {"additive": ["temp", "hum", "hr", "weather"], "crosses": []},  # nothing left for the backbone
    ],
)
def test_tabm_variants_learn_and_export_with_parity(update):
    model = _train("tabm", "regression", **update)
    session = onnx_session(export_onnx(model, opset=17))
    x = _awkward_rows(model, "regression")
    check_parity(parity(session, model, x), 1e-4, model.prep.target_scale)
    assert len(onnx_predict(session, x[:3])) == 3


def test_tabm_bins_come_from_the_train_split_and_travel_with_the_model(tmp_path, trained):
    from evergreen.model.tabm import TabMFamily

    model = trained("tabm", "regression")
    member = model.members[0]
    assert isinstance(member, TabMFamily)
    impl = member.num_embeddings.impl
    # fitted, not the placeholder edges (-1..1 in 8 even bins, whose slopes are all 4)
    assert not torch.allclose(impl.weight[:, 0], torch.full_like(impl.weight[:, 0], 4.0))
    refit = TabularNet(model.prep, model.config)
    train = torch.from_numpy(model.prep.matrix(synthetic(500, 1)))
    refit.fit_to_train(train)
    np.testing.assert_allclose(refit.members[0].num_embeddings.impl.weight, impl.weight, rtol=1e-6)
    model.save(tmp_path / "tabm.pt")
    loaded = TabularNet.load(tmp_path / "tabm.pt")
    np.testing.assert_array_equal(loaded.predict(synthetic(20, 7)), model.predict(synthetic(20, 7)))


def test_tabm_is_trained_on_the_mean_of_its_members_losses_not_the_loss_of_their_mean(trained):
    """Members that disagree symmetrically have a perfect mean; the loss must still see each one's error."""
    from evergreen.model.train import _loss_function

    model = trained("tabm", "regression")
    target = torch.zeros(4)
    loss_of = _loss_function(model.prep, None, torch.device("cpu"))
    with torch.no_grad():
        outputs = model.member_outputs(torch.from_numpy(model.prep.matrix(synthetic(4, 8))))
    assert outputs.shape == (2 * 4, 4, 1)  # what the loop hands the loss: every member of every tabm
    disagreeing = torch.tensor([1.0, -1.0]).view(2, 1, 1).expand(2, 4, 1)  # [members, rows, 1], mean 0
    assert float(loss_of(disagreeing, target)) == pytest.approx(1.0)


def test_quantile_edges_handle_constant_and_discrete_columns():
    from evergreen.model.tabm import quantile_edges

    values = torch.stack([torch.full((100,), 3.0), torch.arange(100.0) % 3, torch.arange(100.0)], dim=1)
    constant, discrete, spread = quantile_edges(values, bins=8)
    assert constant.tolist() == [2.5, 3.5]  # one bin around the value
    assert discrete.tolist() == [0.0, 1.0, 2.0]  # ties merge bins
    assert len(spread) == 9 and bool((spread.diff() > 0).all())


def test_tabm_knobs_are_typed_and_named():
    assert ModelConfig(type="tabm").k == 32 and ModelConfig(type="tabm").d_block == 512
    with pytest.raises(ConfigError, match=r"model\.num_embeddings"):
        raw = copy.deepcopy(TINY)
        raw["model"] = {"type": "tabm", "num_embeddings": "fourier"}
        parse_params(raw)
