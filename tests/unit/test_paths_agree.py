"""`dvc.yaml` and `Workspace` name the same files (issue 20, item 5).

The stages write where `Workspace` says; DVC caches, restores and reruns by what `dvc.yaml` says. Were the two
to differ, a stage would write a file DVC never tracks (lost on checkout, served stale from the run cache), or
DVC would wait for a file no stage writes. `dvc.yaml` spells its paths out (a newcomer reads the pipeline from it
alone), so nothing makes them agree but this test, for the bundled params.yaml:
- every path a stage declares (deps outside `src/`, outs, metrics, plots) is a `Workspace` path;
- every `Workspace` path a stage writes lies in one of its outs, and every out holds one of them;
- every path a param moves (`validation.suites_dir`, ...) that `dvc.yaml` hard-codes matches params.yaml's
  value: changing such a param needs the same change in `dvc.yaml`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from evergreen.config import Params, load_params, with_overrides
from evergreen.errors import EvergreenError
from evergreen.workspace import SPLITS, Workspace

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS_YAML = yaml.safe_load((ROOT / "params.yaml").read_text())
KINDS = ("deps", "outs", "metrics", "plots")
WRITTEN = ("outs", "metrics", "plots")  # what DVC takes as a stage's products
VALIDATED = tuple(s.removeprefix("validate_") for s in PIPELINE["stages"] if s.startswith("validate_"))

# the Workspace methods that name a path, and the arguments the stages call them with
METHODS: dict[str, tuple[str, ...]] = {
    "split": SPLITS,
    "suite": VALIDATED,
    "validation_report": VALIDATED,
    "data_docs": VALIDATED,
    "validation_parts": VALIDATED,
    "digest_cache": ("ingest", *(f"validate_{v}" for v in VALIDATED)),
}


def _validation(stage: str) -> list[str]:
    return [f"validation_report({stage!r})", f"data_docs({stage!r})", f"validation_parts({stage!r})"]


# the Workspace paths each stage writes
WRITES: dict[str, list[str]] = {
    "ingest": ["raw_dir", "raw", "raw_conflicts", "raw_keys", "raw_manifest", "ingest_metrics"],
    "validate_raw": _validation("raw"),
    "clean": ["clean_dir", "clean", "clean_manifest", "quarantine_dir", "quarantine", "data_metrics"],
    "validate_clean": _validation("clean"),
    "split": ["split_dir", *(f"split({s!r})" for s in SPLITS), "split_manifest", "split_metrics"],
    "train": ["model", "checkpoint", "candidates", "train_metrics", "dvclive_plots"],
    "evaluate": [
        "test_predictions",
        "eval_metrics",
        "leaderboard",
        "predictions_csv",
        "residuals_csv",
        "confusion_csv",
        "calibration_csv",
    ],  # fmt: skip
    "export": ["onnx_model", "exported", "signature", "model_card", "export_metrics"],
    "promote": ["promotion_metrics"],
}
# the Workspace paths from outside the DAG each stage reads: deps no stage writes
READS: dict[str, list[str]] = {
    "ingest": ["source", "incoming"],
    "validate_raw": ["suite('raw')"],
    "validate_clean": ["suite('clean')"],
}
_FOLDER = "a folder of stage paths; dvc.yaml names the paths inside it"
_AFTER_THE_PIPELINE = "written by the service, monitoring, the shadow judge or the backtest, never by a stage"
NOT_IN_THE_PIPELINE: dict[str, str] = {
    "params_file": "stages read it through their `params:` keys, not as a dep",
    "dvc_lock": "DVC's own record of the pipeline",
    "dvc_yaml": "the pipeline itself",
    "run_lock": "held by an orchestrated run while it runs; never an output",
    **{
        f"digest_cache({stage!r})": "the stage's inputs' hashes by file stamp, in .dvc/tmp; never an output"
        for stage in METHODS["digest_cache"]
    },
    "metrics_dir": _FOLDER,
    "models_dir": _FOLDER,
    "eval_reports": _FOLDER,
    "suites_dir": _FOLDER,
    "validation_reports": _FOLDER,
    "dvclive": "DVCLive's own folder: only its plots (`dvclive_plots`) are an output",
    "tensorboard": "a local view of the training curves (`train.tensorboard`), git-ignored, not an output",
    "registry": "persistent state outside the DAG: promote adds versions, a warm start reads the champion",
    "prediction_log": _AFTER_THE_PIPELINE,
    "feedback_state": _AFTER_THE_PIPELINE,
    "monitor_reports": _AFTER_THE_PIPELINE,
    "evidently_workspace": _AFTER_THE_PIPELINE,
    "decisions": _AFTER_THE_PIPELINE,
    "backtest": _AFTER_THE_PIPELINE,
}


def workspace_paths(ws: Workspace) -> dict[str, Path]:
    """Every path `ws` names, by how a stage asks for it: `raw`, `split('train')`, `suite('raw')`."""
    paths: dict[str, Path] = {}
    for name, member in vars(Workspace).items():
        if isinstance(member, property) and not name.startswith("_"):
            value = getattr(ws, name)
            if isinstance(value, Path | str) and name != "source":
                paths[name] = Path(value)
    paths["source"] = ws.root / ws.params.data.source  # `Workspace.source` is text: it may be a glob or a URL
    for method, arguments in METHODS.items():
        paths.update({f"{method}({a!r})": getattr(ws, method)(a) for a in arguments})
    return paths


def _interpolated(path: str, params_yaml: dict[str, Any]) -> str:
    """`path` with DVC's `${a.b}` templates replaced by params.yaml's values, as DVC does."""

    def value(match: re.Match[str]) -> str:
        node: Any = params_yaml
        for key in match[1].strip().split("."):
            node = node[key]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, path)


def declared(pipeline: dict[str, Any], params_yaml: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Each stage's paths by kind (deps, outs, metrics, plots), templates resolved; the code deps (`src/`),
    which test_stage_deps.py checks, left out."""
    stages: dict[str, dict[str, list[str]]] = {}
    for name, stage in pipeline["stages"].items():
        stages[name] = {}
        for kind in KINDS:
            entries = [next(iter(e)) if isinstance(e, dict) else e for e in stage.get(kind) or []]
            resolved = [_interpolated(str(e), params_yaml).rstrip("/") for e in entries]
            stages[name][kind] = [p for p in resolved if not p.startswith("src/")]
    return stages


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def unknown_paths(ws: Workspace, stages: dict[str, dict[str, list[str]]]) -> list[str]:
    """The paths `dvc.yaml` declares that are no `Workspace` path, each named with its stage."""
    known = set(workspace_paths(ws).values())
    return [
        f"dvc.yaml stage {stage!r} {kind} {path!r} is no Workspace path (for params.yaml as it is)"
        for stage, kinds in stages.items()
        for kind, paths in kinds.items()
        for path in paths
        if ws.root / path not in known
    ]


def untracked_writes(ws: Workspace, stages: dict[str, dict[str, list[str]]]) -> list[str]:
    """The Workspace paths a stage writes outside its outs, and the outs that hold none of them."""
    paths = workspace_paths(ws)
    problems = []
    for stage, names in WRITES.items():
        outs = [ws.root / p for kind in WRITTEN for p in stages[stage][kind]]
        written = [paths[n] for n in names]
        problems += [
            f"Workspace.{name} ({ws.show(paths[name])}) is written by stage {stage!r} but lies in none of its "
            "dvc.yaml outs, metrics or plots: DVC would neither cache nor restore it"
            for name in names
            if not any(_within(paths[name], out) for out in outs)
        ]
        problems += [
            f"dvc.yaml stage {stage!r} declares the output {ws.show(out)!r}, which holds no Workspace path the "
            "stage writes: no stage writes it there"
            for out in outs
            if not any(_within(path, out) for path in written)
        ]
    return problems


def unsourced_deps(ws: Workspace, stages: dict[str, dict[str, list[str]]]) -> list[str]:
    """The deps that neither an earlier stage writes nor the stage reads from outside the DAG (`READS`)."""
    paths = workspace_paths(ws)
    problems = []
    for stage, kinds in stages.items():
        outside = [paths[n] for n in READS.get(stage, [])]
        upstream = [ws.root / p for other, k in stages.items() if other != stage for kind in WRITTEN for p in k[kind]]
        declared_deps = [ws.root / p for p in kinds["deps"]]
        problems += [
            f"dvc.yaml stage {stage!r} dep {ws.show(dep)!r} is neither another stage's output nor in READS"
            for dep in declared_deps
            if dep not in outside and not any(_within(dep, out) for out in upstream)
        ]
        problems += [
            f"stage {stage!r} reads Workspace.{name} ({ws.show(paths[name])}), which its dvc.yaml deps do not list"
            for name in READS.get(stage, [])
            if paths[name] not in declared_deps
        ]
    return problems


def string_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Every text value in the params mapping, by dotted key (lists are not walked: they hold no paths)."""
    found: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            found |= string_params(value, f"{prefix}{key}.")
        elif isinstance(value, str):
            found[f"{prefix}{key}"] = value
    return found


def path_params(params: Params) -> dict[str, list[str]]:
    """Each param that moves Workspace paths, and the names of the paths it moves (found by moving it)."""
    base = workspace_paths(Workspace(ROOT, params))
    moved: dict[str, list[str]] = {}
    for key, value in string_params(params.model_dump(mode="json")).items():
        try:
            other = workspace_paths(Workspace(ROOT, with_overrides(params, {key: f"{value}-moved"})))
        except EvergreenError:  # a name, a choice or a URL: not a path
            continue
        names = [n for n, path in base.items() if other[n] != path]
        if names:
            moved[key] = names
    return moved


def param_disagreements(params: Params, stages: dict[str, dict[str, list[str]]]) -> list[str]:
    """The stage paths a param moves that `dvc.yaml` does not declare where params.yaml's value puts them."""
    ws = Workspace(ROOT, params)
    paths = workspace_paths(ws)
    in_dvc_yaml = {ws.root / p for kinds in stages.values() for ps in kinds.values() for p in ps}
    in_pipeline = {n for names in [*WRITES.values(), *READS.values()] for n in names}
    values = string_params(params.model_dump(mode="json"))
    problems = []
    for key, names in path_params(params).items():
        problems += [
            f"params.yaml sets {key}: {values[key]!r}, so Workspace.{name} is {ws.show(paths[name])!r}, which dvc.yaml "
            f"does not declare: dvc.yaml hard-codes this path, so changing {key} needs the same change in "
            f"dvc.yaml (or write it there as ${{{key}}})"
            for name in names
            if name in in_pipeline and not any(_within(paths[name], p) for p in in_dvc_yaml)
        ]
    return problems


@pytest.fixture(scope="module")
def bundled() -> Params:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def stages() -> dict[str, dict[str, list[str]]]:
    return declared(PIPELINE, PARAMS_YAML)


def top_level_plot_files(pipeline: dict[str, Any]) -> list[str]:
    """The files the top-level `plots:` views draw from (each view's `y` mapping names them)."""
    views = [next(iter(v.values())) for v in pipeline.get("plots") or [] if isinstance(v, dict)]
    return [f for view in views if isinstance(view.get("y"), dict) for f in view["y"]]


def test_every_path_dvc_yaml_declares_is_a_workspace_path(bundled, stages):
    ws = Workspace(ROOT, bundled)
    problems = unknown_paths(ws, stages)
    plotted = {ws.root / p for kinds in stages.values() for p in kinds["plots"]}
    problems += [f"dvc.yaml's top-level plots draw from {f!r}, no stage's plot" for f in top_level_plot_files(PIPELINE)
                 if ws.root / f not in plotted]  # fmt: skip
    assert top_level_plot_files(PIPELINE), "the top-level plots name no file: the check above looks at nothing"
    assert not problems, "\n".join(problems)


def test_every_workspace_path_a_stage_writes_is_one_of_its_outs(bundled, stages):
    problems = untracked_writes(Workspace(ROOT, bundled), stages)
    assert not problems, "\n".join(problems)


def test_every_dep_is_an_upstream_output_or_a_declared_input(bundled, stages):
    problems = unsourced_deps(Workspace(ROOT, bundled), stages)
    assert not problems, "\n".join(problems)


def test_the_params_that_move_stage_paths_agree_with_dvc_yaml(bundled, stages):
    problems = param_disagreements(bundled, stages)
    assert not problems, "\n".join(problems)


def test_every_workspace_path_and_stage_is_classified(bundled):
    """A new Workspace path or stage must be placed in WRITES, READS or NOT_IN_THE_PIPELINE (else the checks
    above would not look at it)."""
    names = set(workspace_paths(Workspace(ROOT, bundled)))
    classified = {n for group in [*WRITES.values(), *READS.values()] for n in group} | set(NOT_IN_THE_PIPELINE)
    assert names == classified, {"unclassified": names - classified, "not Workspace paths": classified - names}
    assert set(WRITES) == set(PIPELINE["stages"]), "WRITES must list every dvc.yaml stage"
    methods = {n for n, m in vars(Workspace).items() if callable(m) and not n.startswith("_")}
    assert methods - {"open", "at", "show"} == set(METHODS), "a Workspace method naming paths is not in METHODS"


def _moved(pipeline: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    copy = yaml.safe_load(yaml.safe_dump(pipeline))
    edit(copy)
    return copy


def test_the_checks_see_each_kind_of_disagreement(bundled):
    """The controls: a moved suites folder, a renamed out and a dropped metric are each reported, with the
    param or the stage named."""
    ws = Workspace(ROOT, bundled)
    suites_moved = with_overrides(bundled, {"validation.suites_dir": "suites"})
    problems = param_disagreements(suites_moved, declared(PIPELINE, PARAMS_YAML))
    assert problems and all("validation.suites_dir: 'suites'" in p for p in problems), problems
    assert {"validation.suites_dir", "validation.reports_dir", "data.source"} <= set(path_params(bundled))

    def rename_onnx(p: dict[str, Any]) -> None:
        p["stages"]["export"]["outs"][0] = "models/graph.onnx"

    renamed = declared(_moved(PIPELINE, rename_onnx), PARAMS_YAML)
    assert any("'export' outs 'models/graph.onnx'" in p for p in unknown_paths(ws, renamed))
    assert any("Workspace.onnx_model" in p for p in untracked_writes(ws, renamed))

    def drop_metric(p: dict[str, Any]) -> None:
        p["stages"]["split"].pop("metrics")

    dropped = declared(_moved(PIPELINE, drop_metric), PARAMS_YAML)
    assert any("Workspace.split_metrics" in p and "'split'" in p for p in untracked_writes(ws, dropped))
