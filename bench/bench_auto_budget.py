"""Benchmark `model.type: auto` against its time budget (issue 21), beside today's single-MLP pipeline.

    python bench/bench_auto_budget.py                  # 50,000 rows, train.time_budget_s 120
    python bench/bench_auto_budget.py --budget 60 --rows 20000

1. Generates a seeded regression table: an id, five floats with nonlinear effects and interactions, three
   integer counts, two string categoricals (8 and 15 levels), and a positive target (a nonlinear function
   plus noise).
2. Makes two throwaway copies of the project from the committed HEAD (`git archive HEAD`, tests and bench
   left out, a fresh git repository each). In both: `evergreen init TABLE --target y --force`, then
   `train.time_budget_s: B` set through `evergreen.config.apply_overrides` (what `evergreen run -S` uses).
   The first keeps the `model.type: auto` that init writes; the second gets `model.type: mlp`.
3. Runs `dvc repro` in each, one after the other. Every command runs with `PYTHONPATH=<copy>/src` and this
   venv's bin first on PATH, so the copy's code is what runs, not the editable install's.
4. Timing. "whole" is the wall time of the one `dvc repro` process. A stage's wall time is read from the
   same run: each line of DVC's merged output is stamped as it arrives (PYTHONUNBUFFERED), and a stage runs
   from its `Running stage 'NAME'` line to the next stage's line (the last one to the process's end). So the
   train stage's time includes its process start and imports, and DVC hashing its outputs and updating
   dvc.lock afterwards. The stage's own clock (`metrics/train.json` "seconds": the candidates' fits, the blend
   left out) and each candidate's fit seconds (`models/candidates/index.json`) are reported beside it.

Writes bench/results/auto_budget.json and prints a few lines. The copies go to a temporary folder (kept with
--keep, for their logs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # not resolved: the venv's own bin, with its `evergreen` and `dvc`
STAGE_LINE = re.compile(r"Running stage '([\w-]+)'")
TOLERANCE = 0.10  # the target: the train stage within 10% of the budget


def generate(rows: int, seed: int) -> pl.DataFrame:
    """A regression table of mixed column kinds; the target is positive, nonlinear, with interactions."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-2.0, 2.0, rows)
    x2 = rng.normal(0.0, 1.0, rows)
    x3 = rng.uniform(0.0, 1.0, rows)
    x4 = rng.normal(0.0, 1.0, rows)
    x5 = rng.exponential(1.0, rows)
    items = rng.poisson(3.0, rows)
    visits = rng.poisson(12.0, rows)
    tenure = rng.integers(0, 120, rows)
    regions = np.array([f"region_{c}" for c in "ABCDEFGH"])
    products = np.array([f"product_{i:02d}" for i in range(15)])
    region = rng.integers(0, len(regions), rows)
    product = rng.integers(0, len(products), rows)
    region_effect = rng.normal(0.0, 6.0, len(regions))[region]
    product_slope = rng.normal(0.0, 4.0, len(products))[product]  # each product's own slope on x4
    signal = (
        12.0 * np.sin(1.5 * x1)
        + 4.0 * np.clip(x2, -3, 3) ** 2
        + 10.0 * x1 * x3
        + product_slope * np.clip(x4, -3, 3)
        + 6.0 * np.log1p(items) * (x3 > 0.5)
        + 0.3 * np.sqrt(visits) * np.minimum(x5, 6.0)
        + 3.0 * np.tanh((tenure - 60) / 20)
        + region_effect
    )
    noise = rng.normal(0.0, 3.0, rows)
    y = np.maximum(1.0, 100.0 + signal + noise)  # about 40 below the mean at the worst: positive in practice
    return pl.DataFrame({
        "id": np.arange(1, rows + 1),
        "x1": x1.round(4), "x2": x2.round(4), "x3": x3.round(4), "x4": x4.round(4), "x5": x5.round(4),
        "items": items, "visits": visits, "tenure_months": tenure,
        "region": regions[region], "product": products[product],
        "y": y.round(3),
    })  # fmt: skip


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy / "src")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"  # stage output arrives line by line, so its stamps are when it was printed
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def make_copy(dest: Path) -> None:
    """The committed HEAD in `dest`, tests and bench left out, as its own git repository."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "xf", "-", "-C", str(dest)], input=archive.stdout, check=True)
    for folder in ("tests", "bench"):
        shutil.rmtree(dest / folder, ignore_errors=True)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "HEAD of the project"], cwd=dest, check=True)


def declare(copy: Path, table: Path, overrides: dict[str, Any]) -> None:
    """`evergreen init` on the table, then the overrides, validated, through the project's own mechanism."""
    env = _env(copy)
    _run(["evergreen", "init", str(table), "--target", "y", "--force"], copy, env)
    code = "import json, sys; from pathlib import Path; from evergreen.config import apply_overrides; " \
           "apply_overrides(Path('params.yaml'), json.loads(sys.argv[1]))"  # fmt: skip
    _run([str(VENV_BIN / "python"), "-c", code, json.dumps(overrides)], copy, env)


def repro(copy: Path) -> dict[str, Any]:
    """`dvc repro` once: its whole wall time and each stage's, from the stamped lines of its output.

    A failed stage is recorded (`failed_stage`, its error lines), not raised: the stages before it still count.
    """
    log = (copy / "repro.log").open("w", buffering=1)
    started = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=copy, env=_env(copy), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)  # fmt: skip
    marks: list[tuple[str, float]] = []
    errors: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.perf_counter() - started
        log.write(f"{now:9.2f} {line}")
        found = STAGE_LINE.search(line)
        if found:
            marks.append((found.group(1), now))
        if line.lower().startswith(("error", "traceback")):
            errors.append(line.strip())
    code = proc.wait()
    whole = time.perf_counter() - started
    log.close()
    ends = [t for _, t in marks[1:]] + [whole]
    stages = {name: round(end - start, 2) for (name, start), end in zip(marks, ends, strict=True)}
    failed = marks[-1][0] if code != 0 and marks else None
    if code != 0:
        print(f"  dvc repro failed ({code}) at stage {failed}: {errors[:1]}; see {copy / 'repro.log'}", flush=True)
    return {"whole_s": round(whole, 2), "stages_s": stages, "returncode": code, "failed_stage": failed,
            "errors": errors}  # fmt: skip


def _read(path: Path) -> Any:
    """A JSON output of the run, or {} when the stage that writes it did not run (a stage before it failed)."""
    return json.loads(path.read_text()) if path.exists() else {}


def outcome(copy: Path) -> dict[str, Any]:
    """What the run produced: the candidates' fit seconds, the promoted model, its test RMSE against the baselines."""
    train = _read(copy / "metrics/train.json")
    index = _read(copy / "models/candidates/index.json")
    evaluation = _read(copy / "metrics/eval.json")
    promotion = _read(copy / "metrics/promotion.json")
    baselines = {name: scores.get("rmse") for name, scores in evaluation.get("baselines", {}).items()}
    best = min(((v, k) for k, v in baselines.items() if v is not None), default=(None, None))
    keep = ("family", "valid", "seconds", "chosen", "budget_s", "epochs_run", "best_epoch", "best_round",
            "stopped_by_deadline", "note")  # fmt: skip
    candidates = [{k: c[k] for k in keep if k in c} for c in index.get("candidates", [])]
    return {
        "chosen": train.get("model_type"),
        "train_json_seconds": train.get("seconds"),
        "candidates": candidates,
        "test_rmse": evaluation.get("model", {}).get("rmse"),
        "best_baseline": {"name": best[1], "rmse": best[0]},
        "baselines_rmse": baselines,
        "promoted": promotion.get("promoted"),
        "version": promotion.get("version"),
        "reasons": promotion.get("reasons"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="train.time_budget_s, in both copies")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--keep", action="store_true", help="keep the copies (their repro.log) and say where")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/auto_budget.json")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="evergreen-bench-auto-"))
    table = tmp / "generated.csv"
    generate(args.rows, args.seed).write_csv(table)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    load_before = os.getloadavg()
    runs: dict[str, Any] = {}
    for name, overrides in (("auto", {"train.time_budget_s": args.budget}),
                            ("mlp", {"train.time_budget_s": args.budget, "model.type": "mlp"})):  # fmt: skip
        copy = tmp / name
        make_copy(copy)
        declare(copy, table, overrides)
        print(f"{name}: dvc repro in {copy} ...", flush=True)
        runs[name] = {"overrides": overrides, **repro(copy), **outcome(copy)}
    load_after = os.getloadavg()

    auto = runs["auto"]
    train_s = auto["stages_s"]["train"]
    result = {
        "rows": args.rows,
        "seed": args.seed,
        "budget_s": args.budget,
        "commit": head,
        "train_stage_s": train_s,
        "train_stage_over_budget": round(train_s / args.budget, 3),
        "within_10pct": train_s <= (1 + TOLERANCE) * args.budget,
        "runs": runs,
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "timing": "one dvc repro per copy; a stage from its 'Running stage' line to the next (stamped as read)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    verdict = "within" if result["within_10pct"] else "over"
    print(f"auto train stage {train_s:.1f} s = {train_s / args.budget:.2f} x budget {args.budget:.0f} s "
          f"({verdict} 10%); its own clock {auto['train_json_seconds']} s")  # fmt: skip
    print("  candidates: " + ", ".join(f"{c['family']} {c['seconds']:.1f} s" for c in auto["candidates"]))
    for name, run in runs.items():
        ended = "" if run["returncode"] == 0 else f", FAILED at {run['failed_stage']}"
        print(f"{name}: whole dvc repro {run['whole_s']:.1f} s{ended} (train {run['stages_s'].get('train', 0):.1f} s); "
              f"chose {run['chosen']}, test RMSE {run['test_rmse']} vs best baseline {run['best_baseline']['name']} "
              f"{run['best_baseline']['rmse']}; promoted {run['promoted']}")  # fmt: skip
    print(f"load before {load_before}, after {load_after}; wrote {args.out}")
    if args.keep:
        print(f"copies kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
