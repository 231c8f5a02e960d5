"""Benchmark the model families against the baselines on the bundled, scikit-learn and real tables (issues 11, 21).

    python bench/bench_datasets.py                              # every dataset and family, to bench/results/
    python bench/bench_datasets.py --datasets wine diabetes --families mlp resnet    # a subset
    python bench/bench_datasets.py --datasets sacramento --families --budget 60   # model.type auto's candidates only

What it does, in one process on the CPU (no DVC), with the project's own functions:
1. Builds each dataset's train, valid and test parts:
   - `bike`: the bundled data with params.yaml (read, clean, split by time as declared);
   - `breast_cancer` (binary), `wine` (multiclass), `diabetes` (regression): scikit-learn's bundled tables,
     declared as numeric features and a target, split at random by `evergreen.data.split` (20% valid, 20% test,
     stratified for classification, seed 42).
   - `attrition`, `lending_club`, `hotel_rates`, `sacramento`: the real tables of `../shared/datasets/tables/`,
     declared by the same inference as `evergreen init` (`evergreen.declare.infer`), cleaned and split as declared.
2. Trains each family (`model.type` = mlp, resnet, ft_transformer) with `train_model`: params.yaml's `model:`
   and `train:` sections, with the bike's `crosses` and `additive` kept on the bike only (they name its columns)
   and the per-family overrides below (a budget on a 2-core CPU; say so when quoting the figures).
3. Trains `model.type: auto`'s candidates (`evergreen.model.auto.train_candidates`: LightGBM, the linear model,
   mlp, tabm and their equal-weight blend, within `--budget` seconds), rows `auto:<family>`, the one chosen on
   valid marked.
   Fits the baselines of `evaluate.baselines` (mean, linear, hgb, lightgbm) with `fit_baselines`, as `evaluate` does.
4. Scores every model on the same test rows with `score`, on the declared metric (`promote.metric_for(task)`),
   and says what the gate would do: the candidates in their valid order, the first whose test metric is within
   `promote.baseline_margin` of the best baseline's promoted (as the promote stage does). Classifiers, the
   baselines included, decide with weights fitted on valid for macro F1, as in the pipeline. `issue_target` is
   issue 21's bar: RMSE at most 1.01x the best baseline's, a score (macro F1, ...) at most 0.01 below it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from evergreen.config import Params, SplitConfig, parse_params  # noqa: E402
from evergreen.data.clean import clean  # noqa: E402
from evergreen.data.io import read_text_table, resolve_source  # noqa: E402
from evergreen.data.split import split  # noqa: E402
from evergreen.declare.infer import infer  # noqa: E402
from evergreen.model.auto import choose, train_candidates  # noqa: E402
from evergreen.model.baselines import baseline_decision, fit_baselines, predict_baseline  # noqa: E402
from evergreen.model.metrics import best, metric, score, within_margin  # noqa: E402
from evergreen.model.preprocess import encode_target, fit_preprocessing  # noqa: E402
from evergreen.model.train import train_model  # noqa: E402

TABLES_DIR = ROOT.parent / "shared" / "datasets" / "tables"
TABLES = {"attrition": "Attrition", "lending_club": "Class", "hotel_rates": "avg_price_per_room", "sacramento": "price"}
DATASETS = ("bike", "breast_cancer", "wine", "diabetes", *TABLES)
BASELINES = ("mean", "linear", "hgb", "lightgbm")
FAMILIES = ("mlp", "resnet", "ft_transformer")
# the per-family budget: what changes from params.yaml for each family (model.*, train.*), on every dataset
FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {
    "mlp": {},
    "resnet": {},
    "ft_transformer": {"train.lr": 1e-3},
}
# ... and on the bike data only (14.5k train rows: the transformer's ensemble of 3 and 40 epochs would not fit
# the budget on a 2-core CPU; one member, 20 epochs, the one-cycle schedule compressed into them)
BIKE_OVERRIDES: dict[str, dict[str, Any]] = {"ft_transformer": {"model.ensemble": 1, "train.epochs": 20}}
SKLEARN = {"breast_cancer": "classification", "wine": "classification", "diabetes": "regression"}


def _bundled() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _bike() -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
    raw = _bundled()
    raw["data"]["source"] = str(ROOT / raw["data"]["source"])
    params = parse_params(raw)
    data = params.data
    frame = pl.concat([read_text_table(path, data) for path in resolve_source(data.source)])
    return raw, dict(split(clean(frame, data, params.clean).clean, data, params.split))


def _sklearn(name: str) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    task = SKLEARN[name]
    frame = pl.from_pandas(bunch.frame).rename(lambda c: c.replace(" ", "_"))
    features = [c for c in frame.columns if c != "target"]
    if task == "classification":
        frame = frame.with_columns(pl.col("target").cast(pl.Int64))
        target = {"name": "target", "type": "int", "role": "target", "kind": "categorical",
                  "allowed": sorted(frame["target"].unique().to_list())}  # fmt: skip
    else:
        target = {"name": "target", "type": "float", "role": "target"}
    raw = _bundled()
    raw["data"] = {
        "source": f"{name}.csv",
        "task": task,
        "columns": [{"name": c, "type": "float", "role": "feature", "kind": "numeric"} for c in features] + [target],
    }
    # the bike's knobs name its columns and log1p is for its counts (init resets them); a random split
    raw["model"] |= {"crosses": [], "additive": [], "target_transform": "none"}
    raw["split"] = {"method": "random", "valid_fraction": 0.2, "test_fraction": 0.2, "seed": 42}
    raw.pop("simulate", None)
    raw.get("monitor", {}).get("policy", {}).pop("feature_thresholds", None)
    params = parse_params(raw)
    return raw, dict(split(frame, params.data, SplitConfig(**raw["split"])))


def _real(name: str) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
    """A real table declared as `evergreen init` declares it, cleaned and split as declared."""
    from evergreen.declare.write import read_table

    path = TABLES_DIR / f"{name}.csv"
    inferred = infer(read_table(path), TABLES[name])
    raw = _bundled()
    raw["data"] = inferred.data_section(str(path))
    raw["data"]["timestamp"] = raw["data"].get("timestamp")
    raw["split"] = inferred.split | {"seed": 42}
    raw["model"] |= {"crosses": [], "additive": [], "target_transform": inferred.target_transform}
    raw.pop("simulate", None)
    raw.get("monitor", {}).get("policy", {}).pop("feature_thresholds", None)
    params = parse_params(raw)
    frame = read_text_table(str(path), params.data)
    return raw, dict(split(clean(frame, params.data, params.clean).clean, params.data, params.split))


def _auto(raw: dict[str, Any], parts: dict[str, pl.DataFrame], budget: float) -> dict[str, dict]:
    """`model.type: auto`'s candidates on the same split, each scored on test; `chosen` marks the valid winner."""
    params = _with(raw, {"model.type": "auto", "train.time_budget_s": budget})
    name = params.promote.metric_for(params.data.task)
    entries = train_candidates(parts["train"], parts["valid"], params.data, params.model, params.train, name)
    chosen = choose(entries, name)
    rows = {}
    for entry in entries:
        prep = entry.candidate.prep
        output = entry.candidate.predict(parts["test"])
        test = score(prep.task, _actual(parts["test"], prep), output, prep.classes, prep.decision_weights)
        row = {"kind": "family", "test": test, "valid": {name: entry.valid}, "seconds": entry.seconds}
        rows[f"auto:{entry.family}"] = row | {"chosen": entry is chosen, **entry.detail}
    return rows


def _with(raw: dict[str, Any], overrides: dict[str, Any]) -> Params:
    raw = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    return parse_params(raw)


def _actual(part: pl.DataFrame, prep: Any) -> np.ndarray:
    if prep.task == "regression":
        return part[prep.target].cast(pl.Float64).to_numpy()
    return encode_target(part, prep)


def _family(raw: dict[str, Any], parts: dict[str, pl.DataFrame], family: str, overrides: dict[str, Any]) -> dict:
    params = _with(raw, {"model.type": family, **overrides})
    result = train_model(parts["train"], parts["valid"], params.data, params.model, params.train, progress=False)
    model, prep = result.model, result.model.prep
    test = score(prep.task, _actual(parts["test"], prep), model.predict(parts["test"]), prep.classes)
    return {
        "kind": "family",
        "test": test,
        "valid": result.metrics["valid"],
        "overrides": overrides,
        "epochs_run": result.metrics["epochs_run"],
        "best_epoch": result.metrics["best_epoch"],
        "n_parameters": result.metrics["n_parameters"],
        "calibration": result.metrics.get("calibration"),
        "seconds": result.metrics["seconds"],
    }


def _baselines(params: Params, parts: dict[str, pl.DataFrame]) -> dict[str, dict]:
    prep = fit_preprocessing(parts["train"], params.data, params.model)
    train, valid = ((prep.matrix(parts[k]), _actual(parts[k], prep)) for k in ("train", "valid"))
    x_test, actual = prep.matrix(parts["test"]), _actual(parts["test"], prep)
    cfg, out = params.evaluate, {}
    started = time.perf_counter()
    fitted = fit_baselines(prep, train, valid, cfg.baselines, cfg.hgb_max_iter, cfg.hgb_patience, params.train.seed)
    seconds = round(time.perf_counter() - started, 2)
    gated = params.promote.metric_for(params.data.task)
    for name, baseline in fitted.items():
        output = predict_baseline(baseline, prep.task, x_test, len(prep.classes))
        test = score(prep.task, actual, output, prep.classes, baseline_decision(baseline, prep, valid, gated))
        out[name] = {"kind": "baseline", "test": test, "seconds": seconds}
    return out


def _gate(params: Params, rows: dict[str, dict]) -> dict[str, Any]:
    """What the gate would do: the candidates of `model.type: auto` (else every family) in their valid order,
    the first whose test metric is within `promote.baseline_margin` of the best baseline's is promoted, as the
    promote stage does; `challenger` is that one (or the best on valid, when none passes)."""
    name = params.promote.metric_for(params.data.task)
    families = {k: v for k, v in rows.items() if v["kind"] == "family"}
    families = {k: v for k, v in families.items() if k.startswith("auto:")} or families
    baselines = {k: v["test"][name] for k, v in rows.items() if v["kind"] == "baseline"}
    reference, value = best(name, baselines)
    lower = metric(name).lower_is_better
    ranked = sorted(families, key=lambda k: (families[k]["valid"].get(name) is None,
                                             (1 if lower else -1) * (families[k]["valid"].get(name) or 0)))  # fmt: skip
    passing = [k for k in ranked if within_margin(name, families[k]["test"][name], value,
                                                   params.promote.baseline_margin)]  # fmt: skip
    challenger = passing[0] if passing else ranked[0]
    test = families[challenger]["test"][name]
    passes = bool(passing)
    target = test <= 1.01 * value if metric(name).lower_is_better else test >= value - 0.01
    return {"metric": name, "challenger": challenger, "challenger_test": test, "best_baseline": reference,
            "best_baseline_test": value, "margin": params.promote.baseline_margin, "promoted": passes,
            "issue_target": bool(target),
            "best_family_on_test": best(name, {k: v["test"][name] for k, v in families.items()})[0]}  # fmt: skip


def _table(results: dict[str, dict]) -> str:
    names = list(dict.fromkeys(k for result in results.values() for k in result["rows"]))
    names = [k for k in names if k not in BASELINES] + [k for k in BASELINES if k in names]
    lines = ["| dataset | metric | " + " | ".join(names) + " | gate |",
             "|---|---|" + "---:|" * len(names) + "---|"]  # fmt: skip
    for dataset, result in results.items():
        gate, rows = result["gate"], result["rows"]
        name = gate["metric"]
        cells = [f"{rows[k]['test'][name]:.4g}" if k in rows and rows[k]["test"].get(name) is not None else "-"
                 for k in names]  # fmt: skip
        verdict = "promoted" if gate["promoted"] else "refused"
        lines.append(f"| {dataset} | {metric(name).label} | " + " | ".join(cells)
                     + f" | {gate['challenger']} {verdict} (vs {gate['best_baseline']}) |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--families", nargs="*", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--budget", type=float, default=300.0, help="model.type auto's train.time_budget_s")
    parser.add_argument("--no-auto", action="store_true", help="skip model.type auto's candidates")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/datasets.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, results = time.perf_counter(), {}
    for dataset in args.datasets:
        raw, parts = _bike() if dataset == "bike" else _real(dataset) if dataset in TABLES else _sklearn(dataset)
        params = parse_params(raw)
        sizes = {k: v.height for k, v in parts.items()}
        print(f"{dataset}: {params.data.task}, rows {sizes}", flush=True)
        rows = _baselines(params, parts)
        if not args.no_auto:
            rows |= _auto(raw, parts, args.budget)
        for family in args.families:
            overrides = FAMILY_OVERRIDES[family] | (BIKE_OVERRIDES.get(family, {}) if dataset == "bike" else {})
            rows[family] = _family(raw, parts, family, overrides)
        for name, row in rows.items():
            shown = {k: round(v, 4) for k, v in row["test"].items() if v is not None}
            print(f"  {name:15s} test {shown} ({row['seconds']:.1f} s)", flush=True)
        results[dataset] = {"task": params.data.task, "sizes": sizes, "rows": rows, "gate": _gate(params, rows)}
        print(f"  gate: {results[dataset]['gate']}", flush=True)
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },  # fmt: skip
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(_table(results))
    print(f"total {report['seconds']:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
