"""AutoGluon-Tabular on the rows `bench/bench_datasets.py` scores Evergreen on (issue 21).

Two steps, so the project's venv never imports AutoGluon and AutoGluon's venv never imports Evergreen:

    .venv/bin/python bench/bench_autogluon.py export --out /tmp/ag-splits
    python3 -m venv /tmp/ag-venv
    /tmp/ag-venv/bin/pip install torch==2.13.0 "autogluon.tabular[lightgbm,catboost,xgboost]"
    /tmp/ag-venv/bin/python bench/bench_autogluon.py fit --splits /tmp/ag-splits --budget 60 \
        --out bench/results/autogluon.json --compare /tmp/bench/tables.json

1. `export` (the project's venv) builds each dataset's train, valid and test parts with `bench_datasets.py`'s own
   functions (`_bike`, `_sklearn`, `_real`: the same declaration, cleaning and split, so the same rows), and
   writes for each dataset `<name>/{train,valid,test}.parquet` holding the model's declared inputs
   (`data.model_inputs`: the feature columns, then the calendar features derived from the timestamp, computed
   by `evergreen.inference.derive_features`) and the target, plus `<name>/spec.json`: the target, the task, the
   gated metric (`promote.metric_for(task)`), the categorical inputs (declared `kind: categorical`, or strings
   without a declared order) and, for a classifier, the classes in Evergreen's order.
2. `fit` (AutoGluon's venv) fits `TabularPredictor(label, problem_type, eval_metric=rmse | f1_macro)` on train
   with `tuning_data=valid`, `presets="medium_quality"` (no bagging nor stacking: valid is AutoGluon's holdout
   for early stopping, model selection and its weighted ensemble, as it is Evergreen's) and
   `time_limit=--budget`, then scores the test rows by Evergreen's definitions: RMSE in target units, macro F1
   over Evergreen's classes (scikit-learn's, `zero_division=0`) of the classes `predict` returns (for a binary
   target with the decision threshold AutoGluon calibrates on valid for F1, its default). Records the fit's
   seconds, the model AutoGluon picked, its leaderboard on test and the 1-minute load average before and after.
   With `--compare`, prints a table against a `bench_datasets.py` result (its `gate`: promoted and best baseline).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REAL = ("attrition", "lending_club", "hotel_rates", "sacramento")
DATASETS = ("bike", "breast_cancer", "wine", "diabetes", *REAL)
PARTS = ("train", "valid", "test")
AG_METRIC = {"rmse": "root_mean_squared_error", "f1_macro": "f1_macro"}


def export(out: Path, datasets: list[str]) -> None:
    """Write each dataset's parts and spec under `out` (the project's venv: Evergreen's own functions)."""
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
    import polars as pl
    from bench_datasets import TABLES, _bike, _real, _sklearn

    from evergreen.config import parse_params
    from evergreen.inference import derive_features
    from evergreen.model.preprocess import fit_preprocessing

    for name in datasets:
        raw, parts = _bike() if name == "bike" else _real(name) if name in TABLES else _sklearn(name)
        params = parse_params(raw)
        data = params.data
        inputs, target = data.model_inputs, data.target.name
        categorical = [c.name for c in data.features if c.kind == "categorical" or (c.type == "str" and not c.order)]
        categorical += [d.name for d in data.derived if d.kind == "categorical"]
        ordered = {c.name: list(c.order) for c in data.features if c.order}
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for part, frame in parts.items():
            frame = derive_features(frame, data.derived).select(*inputs, target)
            # an ordered string is its rank in the declared order to every Evergreen family: the same here
            frame = frame.with_columns(
                pl.col(c).replace_strict(order, list(range(len(order))), default=None, return_dtype=pl.Int64)
                for c, order in ordered.items()
            )
            frame.write_parquet(folder / f"{part}.parquet")
        spec: dict[str, Any] = {
            "dataset": name,
            "target": target,
            "task": data.task,
            "metric": params.promote.metric_for(data.task),
            "inputs": inputs,
            "categorical": categorical,
            "sizes": {part: frame.height for part, frame in parts.items()},
        }
        if data.task == "classification":
            spec["classes"] = list(fit_preprocessing(parts["train"], data, params.model).classes)
        (folder / "spec.json").write_text(json.dumps(spec, indent=2, default=str) + "\n")
        print(f"{name}: {data.task}, {spec['metric']}, rows {spec['sizes']}, {len(inputs)} inputs "
              f"({len(categorical)} categorical)", flush=True)  # fmt: skip


def _frames(folder: Path, spec: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    frames = {part: pd.read_parquet(folder / f"{part}.parquet") for part in PARTS}
    for frame in frames.values():
        for column in spec["categorical"]:
            frame[column] = frame[column].astype("string").astype("category")
    return frames


def _test_metric(spec: dict[str, Any], actual: Any, predicted: Any) -> float:
    """Evergreen's definitions (`evergreen.model.metrics`): RMSE in target units; macro F1 over the classes."""
    import numpy as np
    from sklearn.metrics import f1_score

    if spec["metric"] == "rmse":
        error = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
        return float(np.sqrt(np.mean(error**2)))
    classes = [str(c) for c in spec["classes"]]
    actual, predicted = np.asarray(actual).astype(str), np.asarray(predicted).astype(str)
    return float(f1_score(actual, predicted, labels=classes, average="macro", zero_division=0))


def _fit_one(folder: Path, budget: float, models: Path, num_cpus: int | str) -> dict[str, Any]:
    from autogluon.tabular import TabularPredictor

    spec = json.loads((folder / "spec.json").read_text())
    frames = _frames(folder, spec)
    target, task = spec["target"], spec["task"]
    problem = "regression" if task == "regression" else "binary" if len(spec["classes"]) == 2 else "multiclass"
    predictor = TabularPredictor(label=target, problem_type=problem, eval_metric=AG_METRIC[spec["metric"]],
                                 path=str(models / spec["dataset"]), verbosity=1)  # fmt: skip
    load_before, started = os.getloadavg()[0], time.perf_counter()
    predictor.fit(
        frames["train"], tuning_data=frames["valid"], presets="medium_quality", time_limit=budget, num_cpus=num_cpus
    )
    seconds = time.perf_counter() - started
    test = frames["test"]
    test_value = _test_metric(spec, test[target], predictor.predict(test.drop(columns=[target])))
    board = predictor.leaderboard(test, extra_info=False, silent=True)
    return {
        "task": problem,
        "metric": spec["metric"],
        "sizes": spec["sizes"],
        "test": test_value,
        "best_model": predictor.model_best,
        "decision_threshold": getattr(predictor, "decision_threshold", None),
        "fit_seconds": round(seconds, 1),
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        # AutoGluon's own scores (its sign convention: higher is better, so RMSE is negated)
        "leaderboard": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in board[["model", "score_test", "score_val", "fit_time"]].to_dict("records")
        ],
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("autogluon.tabular", "lightgbm", "catboost", "xgboost-cpu", "xgboost", "torch", "pandas"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def fit(splits: Path, budget: float, out: Path, datasets: list[str], compare: Path | None, num_cpus: int | str) -> None:
    """Fit and score AutoGluon on each exported dataset (AutoGluon's venv); write `out`."""
    import tempfile

    results, started = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ag-models-") as models:
        for name in datasets:
            if not (splits / name / "spec.json").exists():
                print(f"{name}: not exported under {splits}, skipped", flush=True)
                continue
            results[name] = row = _fit_one(splits / name, budget, Path(models), num_cpus)
            print(f"{name}: {row['metric']} {row['test']:.4g} ({row['best_model']}, fit {row['fit_seconds']} s, "
                  f"load {row['load_1min']})", flush=True)  # fmt: skip
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "versions": _versions(),
        "presets": "medium_quality",
        "budget_s": budget,
        "num_cpus": num_cpus,
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written to {out}")
    if compare is not None:
        print(comparison(results, json.loads(compare.read_text())["results"]))


def comparison(autogluon: dict[str, dict], evergreen: dict[str, dict]) -> str:
    """A Markdown table: Evergreen's promoted (or refused) challenger, its best baseline, AutoGluon."""
    lines = ["| table | metric | Evergreen (challenger) | best baseline | AutoGluon medium_quality |",
             "| --- | --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, ag in autogluon.items():
        gate = evergreen.get(name, {}).get("gate")
        if gate is None:
            lines.append(f"| {name} | {ag['metric']} | - | - | {ag['test']:.4g} ({ag['best_model']}) |")
            continue
        verdict = "promoted" if gate["promoted"] else "refused"
        lines.append(f"| {name} | {ag['metric']} | {gate['challenger_test']:.4g} ({gate['challenger']}, {verdict}) "
                     f"| {gate['best_baseline_test']:.4g} ({gate['best_baseline']}) "
                     f"| {ag['test']:.4g} ({ag['best_model']}) |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    out = steps.add_parser("export", help="write the parts (the project's venv)")
    out.add_argument("--out", type=Path, required=True)
    out.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    ag = steps.add_parser("fit", help="fit and score AutoGluon (AutoGluon's venv)")
    ag.add_argument("--splits", type=Path, required=True)
    ag.add_argument("--budget", type=float, default=60.0, help="AutoGluon's time_limit, seconds per dataset")
    ag.add_argument("--out", type=Path, default=ROOT / "bench/results/autogluon.json")
    ag.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    ag.add_argument("--compare", type=Path, help="a bench_datasets.py result on the same datasets")
    ag.add_argument(
        "--num-cpus",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="AutoGluon's num_cpus (auto: every core; on busy shared cores 1 can be faster)",
    )
    args = parser.parse_args()
    if args.step == "export":
        export(args.out, args.datasets)
    else:
        fit(args.splits, args.budget, args.out, args.datasets, args.compare, args.num_cpus)


if __name__ == "__main__":
    main()
