"""`evergreen tune` without a server: the declared space, the storage, the objective and pruning on a tiny
workspace (SQLite), the report, and `--apply` editing params.yaml in place."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from evergreen.config import parse_params
from evergreen.errors import ConfigError
from evergreen.orchestration.overrides import override_text
from evergreen.tuning.apply import apply_best, experiment_name
from evergreen.tuning.report import summary_lines, write_report
from evergreen.tuning.space import current_values, decode, suggest
from evergreen.tuning.study import (
    BASELINE,
    TuneError,
    metric_of,
    open_storage,
    open_study,
    run_worker,
    storage_url,
    summarise,
    tuned_family,
    workspace_with,
)
from evergreen.workspace import Workspace
from tests.harness import ROOT, TINY, synthetic

SPACE = {
    "train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "model.n_blocks": {"low": 1, "high": 4},
    "model.hidden": {"choices": [[16], [32, 32]]},
    "model.type": {"choices": ["mlp", "resnet"]},
}


def _params(tune: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    raw = copy.deepcopy(TINY)
    raw["tune"] = {"space": SPACE, **(tune or {})}
    raw.update(sections)
    return raw


# ------------------------------------------------------------------------------------------------ the space
@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.lrr": {"low": 1, "high": 2}}, r"tune\.space\.train\.lrr: train has no key 'lrr'"),
        ({"serve.port": {"low": 1, "high": 2}}, r"tune\.space\.serve\.port: a searchable key is train\.<key>"),
        ({"train.lr": {"low": 0.1, "high": 0.01}}, r"tune\.space\.train\.lr: low \(0\.1\) must be below high"),
        ({"model.type": {"choices": []}}, r"tune\.space\.model\.type: choices is empty"),
        ({"model.type": {"choices": ["mlp", "rnn"]}}, r"tune\.space\.model\.type: 'rnn' is not a valid model\.type"),
        ({"model.dropout": {"low": 0, "high": 1.5}}, r"tune\.space\.model\.dropout: 1\.5 is not a valid"),
        ({"train.lr": {"low": 0, "high": 1, "log": True}}, r"tune\.space\.train\.lr: a log range needs low > 0"),
        ({"train.lr": {"low": 0.1}}, r"tune\.space\.train\.lr: give a range \(low and high\) or a list"),
        ({"train.lr": {"low": 0.1, "high": 1, "choices": [1]}}, r"tune\.space\.train\.lr: give either choices"),
        ({"train.lr": {"low": 0.1, "hihg": 1}}, r"tune\.space\.train\.lr\.hihg: unknown key"),
    ],
)
def test_a_bad_space_names_the_key(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_params({**copy.deepcopy(TINY), "tune": {"space": space}})


def test_suggestions_have_the_fields_types_and_decode_back():
    params = parse_params(_params())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(6):
        trial = study.ask()
        values = suggest(trial, params.tune.space)
        assert isinstance(values["model.n_blocks"], int) and 1 <= values["model.n_blocks"] <= 4
        assert isinstance(values["train.lr"], float) and 1e-4 <= values["train.lr"] <= 1e-2
        assert values["model.hidden"] in ([16], [32, 32])  # a list, though Optuna only stores scalars
        assert decode(params.tune.space, trial.params) == values
        study.tell(trial, 1.0)
    assert current_values(params, params.tune.space)["model.hidden"] == [256, 256]


# ---------------------------------------------------------------------------------------------- the storage
def test_the_storage_is_sqlite_in_the_project_a_url_or_an_env_var(tmp_path, monkeypatch):
    ws = Workspace(tmp_path, parse_params(_params()))
    assert storage_url(ws) == f"sqlite:///{tmp_path / 'tune' / 'study.db'}"
    url = "postgresql://u:secret@db.example:5432/studies"
    ws = Workspace(tmp_path, parse_params(_params({"storage": url})))
    assert storage_url(ws) == "postgresql+psycopg://u:secret@db.example:5432/studies"  # psycopg 3 ships
    monkeypatch.setenv("STUDY_DB", url)
    ws = Workspace(tmp_path, parse_params(_params({"storage": "STUDY_DB"})))
    assert storage_url(ws).endswith("@db.example:5432/studies")
    monkeypatch.delenv("STUDY_DB")
    with pytest.raises(ConfigError, match="tune.storage: the environment variable 'STUDY_DB' is not set"):
        storage_url(ws)


def test_an_unreachable_database_is_named_without_its_password():
    with pytest.raises(
        TuneError, match=r"cannot open the study storage postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:1/x"
    ):
        open_storage("postgresql+psycopg://u:secret@127.0.0.1:1/x")


def test_a_study_for_the_other_direction_is_refused(tmp_path):
    ws = Workspace(tmp_path, parse_params(_params()))
    open_study(ws)  # rmse: minimize
    maximising = copy.deepcopy(_params())
    maximising["promote"] = {"metric": "r2"}
    with pytest.raises(TuneError, match="created to minimize, but r2 is to maximize"):
        open_study(Workspace(tmp_path, parse_params(maximising)))
    with pytest.raises(TuneError, match="no study named 'other'"):
        open_study(Workspace(tmp_path, parse_params(_params({"study": "other"}))), create=False)


# ---------------------------------------------------------------------------------- a study on a tiny table
def _tiny_project(
    root: Path, tune: dict[str, Any], train: dict[str, Any], task: str = "regression", model_type: str = "mlp"
) -> Path:
    model = {"type": model_type, "hidden": [16], "embedding_dim": 4}
    model |= {"target_transform": "none"} if task != "regression" else {}
    raw = _params(tune, train=train, model=model)
    raw["data"]["task"] = task
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "data/split").mkdir(parents=True)
    synthetic(400, 1, task).write_parquet(root / "data/split/train.parquet")
    synthetic(150, 2, task).write_parquet(root / "data/split/valid.parquet")
    return root


@pytest.mark.slow
def test_a_worker_runs_the_baseline_first_prunes_bad_trials_and_resumes(tmp_path):
    tune = {
        "n_trials": 4,
        "prune_warmup_epochs": 0,
        "prune_startup_trials": 1,
        # every suggestion is a rate that barely moves the weights: worse than the baseline at every epoch
        "space": {"train.lr": {"low": 1e-7, "high": 1e-6, "log": True}},
    }
    root = _tiny_project(tmp_path, tune, {"epochs": 4, "patience": 4, "lr": 0.01, "batch_size": 64, "device": "cpu"})
    done = run_worker(str(root), threads=1)
    assert done["trials"] == 4
    ws = Workspace.open(root)
    study = open_study(ws, create=False)
    trials = study.get_trials()
    assert trials[0].user_attrs.get(BASELINE) and trials[0].params == {}  # the params as they are, first
    assert trials[0].state == TrialState.COMPLETE
    assert any(t.state == TrialState.PRUNED for t in trials[1:]), [t.state for t in trials]
    pruned = next(t for t in trials if t.state == TrialState.PRUNED)
    assert pruned.intermediate_values  # the valid metric was reported epoch by epoch before the pruner stopped it
    assert {t.user_attrs["pid"] for t in trials} == {done["pid"]}

    # rerun with more trials: the same study goes on (resume), numbering continues
    more = run_worker(str(root), overrides={"tune.n_trials": 6})
    assert more["trials"] == 2
    assert [t.number for t in open_study(ws, create=False).get_trials()] == list(range(6))

    summary = summarise(study, ws.params, storage_url(ws))
    assert summary.best["number"] == 0 and summary.best["params"] == {}  # nothing beat the baseline
    assert summary.trials["complete"] + summary.trials["pruned"] + summary.trials["fail"] == 6
    written = write_report(study, summary, tmp_path / "tune")
    assert written["history"].stat().st_size > 1000  # a PNG image, drawn offline
    assert json.loads(written["best"].read_text())["baseline"]["number"] == 0
    lines = summary_lines(summary, written, str)
    assert "the current params are the best found" in "\n".join(lines)


@pytest.mark.slow
def test_a_classification_study_maximises_its_declared_metric(tmp_path):
    """On a classification table the objective is f1_macro on valid (the task's default), maximised."""
    tune = {"n_trials": 2, "space": {"train.lr": {"low": 0.003, "high": 0.03, "log": True}}}
    train = {"epochs": 3, "patience": 3, "lr": 0.01, "batch_size": 64, "device": "cpu"}
    root = _tiny_project(tmp_path, tune, train, task="classification")
    assert run_worker(str(root), threads=1)["trials"] == 2
    ws = Workspace.open(root)
    study = open_study(ws, create=False)
    assert metric_of(ws.params) == "f1_macro" and study.direction.name == "MAXIMIZE"
    values = [v for t in study.get_trials() for v in t.intermediate_values.values()]
    assert values and all(0 <= v <= 1 for v in values)  # macro F1 per epoch, not a loss
    assert study.best_value == max(t.value for t in study.get_trials() if t.value is not None)


# ------------------------------------------------------------------------------------- apply into params.yaml
def test_overrides_edit_values_in_place_keeping_comments_and_layout():
    text = (ROOT / "params.yaml").read_text()
    edited = override_text(text, {"train.lr": 0.00123, "model.hidden": [512, 256], "model.type": "resnet"})
    before, after = text.splitlines(), edited.splitlines()
    assert len(before) == len(after)
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert [a.split("#")[0].strip() for _, a in changed] == ["type: resnet", "hidden: [512, 256]", "lr: 0.00123"]
    for old, new in changed:  # the comment stays where it was, in its column
        if "#" in old:
            assert new.index("#") == old.index("#") and new.split("#", 1)[1] == old.split("#", 1)[1]
    # a key the file lacks goes through the round trip: set, and the comments are still there
    added = yaml.safe_load(override_text(text, {"promote.metric": "mae"}))
    assert added["promote"]["metric"] == "mae"


def test_apply_writes_the_best_trials_params_into_params_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    ws = Workspace.open(tmp_path)
    study = open_study(ws)
    assert summarise(study, ws.params, storage_url(ws)).best is None
    with pytest.raises(TuneError, match="has no completed trial yet"):
        apply_best(ws)
    for value, lr, hidden in ((60.0, 0.004, [512, 256]), (58.0, 0.002, [128, 128])):
        # Optuna's enqueue pins these two; the sampler draws the rest of the space
        study.enqueue_trial({"train.lr": lr, "model.hidden": json.dumps(hidden)})
        trial = study.ask()
        while trial.user_attrs.get(BASELINE):  # the baseline goes first; this test has no training to do
            study.tell(trial, state=TrialState.FAIL)
            trial = study.ask()
        suggest(trial, ws.params.tune.space)
        study.tell(trial, value)
    values = apply_best(ws)
    assert values["train.lr"] == 0.002 and values["model.hidden"] == [128, 128]
    assert set(values) == set(ws.params.tune.space)
    text = (tmp_path / "params.yaml").read_text()
    assert "  lr: 0.002                   # peak learning rate of the one-cycle schedule" in text
    assert "  hidden: [128, 128]          # mlp: widths" in text
    assert Workspace.open(tmp_path).params.train.lr == 0.002
    assert experiment_name("my study", 7) == "tune-my-study-7"


# --------------------------------------------------------------------------------------------- the command
def test_the_command_names_what_a_user_got_wrong(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from evergreen.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params()))
    monkeypatch.delenv("NO_SUCH_DB", raising=False)
    missing = CliRunner().invoke(app, ["tune", "-p", str(params), "--storage", "NO_SUCH_DB"])
    assert missing.exit_code == 1
    assert "error: tune.storage: the environment variable 'NO_SUCH_DB' is not set" in missing.output
    unstarted = CliRunner().invoke(app, ["tune", "-p", str(params), "--apply"])
    assert unstarted.exit_code == 1 and "no study named 'evergreen'" in unstarted.output
    bad = CliRunner().invoke(app, ["tune", "-p", str(params), "--trials", "0"])
    assert bad.exit_code == 2 and "--trials" in bad.output  # refused before anything opens a database


# ------------------------------------------------------------------------------------------ model.type: auto
@pytest.mark.slow
def test_a_study_of_an_auto_project_tunes_the_network_its_last_auto_run_ranked_first(tmp_path):
    # `evergreen init` writes model.type: auto, which no trial can train (TabularNet knows the families only)
    root = _tiny_project(tmp_path, {"n_trials": 1}, {"epochs": 1, "batch_size": 64}, model_type="auto")
    with pytest.raises(TuneError, match=r"model\.type is auto and no models/candidates/index\.json .* set model\.type"):
        workspace_with(str(root))
    index = root / "models/candidates/index.json"
    index.parent.mkdir(parents=True)
    rows = [{"family": "ensemble"}, {"family": "lightgbm"}, {"family": "linear"}]
    index.write_text(json.dumps({"metric": "rmse", "candidates": rows}))
    with pytest.raises(TuneError, match="index.json lists no network to tune"):
        workspace_with(str(root))
    # ranked: the chosen one first, then best on valid; a tree champion still has its best network tuned
    index.write_text(json.dumps({"metric": "rmse", "candidates": [rows[1], {"family": "tabm"}, {"family": "mlp"}]}))
    ws = workspace_with(str(root))
    assert ws.params.model.type == "tabm"
    assert Workspace.open(str(root)).params.model.type == "auto"  # params.yaml itself is left as it is
    summary = run_worker(str(root))  # trial 0 (the params as they are) trains: it crashed on `auto`
    assert summary["trials"] == 1


def test_a_named_family_is_tuned_as_it_is():
    params = parse_params(_params(model={"type": "resnet"}))
    assert tuned_family(params, None) == "resnet"
    assert tuned_family(params, {"candidates": [{"family": "mlp"}]}) == "resnet"
