"""Benchmark data-parallel training (issue 14): the `train` stage with 1 and 2 CPU processes, and the cost of the
data-parallel plumbing to the default single-process path.

    python bench/bench_distributed.py                     # params.yaml's training, 1 round
    python bench/bench_distributed.py --epochs 10 --rounds 2

1. Stage runs, on the bundled data's real splits (in a temporary project, see
   tests/e2e/test_distributed_training.py): `evergreen stage train` as DVC runs it, with
   - 1 process: the default path (`train.distributed: null`), no torchrun;
   - 1 process, 1 thread: the same with OMP_NUM_THREADS=1;
   - 2 processes: `train.distributed: {nproc_per_node: 2, backend: gloo}`, relaunched through torchrun (which
     gives each process one intra-op thread; the single process uses as many as there are cores).
   Reported: the stage's wall time (process start to exit: imports, torchrun's rendezvous and all), the training
   loop's samples/s (train rows x epochs run / `metrics/train.json` seconds), and the test RMSE of each model.
2. The default path against the code before data-parallel training (`git show <--before>:src/.../train.py`,
   loaded as a module beside the current one): `train_model` on the same splits and params, runs alternating
   over `--rounds`, so that the single-process path's overhead (one more `nn.Module` call per step, a scalar
   multiply of the loss) is measured, not assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from evergreen.model import train as current  # noqa: E402
from tests.e2e.test_distributed_training import hgb_test_rmse, make_project, served_rmse  # noqa: E402

# (project, OMP_NUM_THREADS): torchrun gives each of its processes one thread; the single process uses every
# core unless told otherwise, so it runs both ways to tell threads from processes
VARIANTS = {"1 process": ("one", None), "1 process, 1 thread": ("one", 1), "2 processes (gloo)": ("two", None)}


def _stage(ws, threads: int | None) -> dict:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "evergreen.cli", "stage", "train"], cwd=ws.root,
                          capture_output=True, text=True, env=env)  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-4000:])
    metrics = json.loads(ws.train_metrics.read_text())
    return {
        "processes": metrics["processes"],
        "wall_seconds": round(wall, 2),
        "train_seconds": metrics["seconds"],
        "epochs_run": metrics["epochs_run"],
        "samples_per_second": round(metrics["n_train"] * metrics["epochs_run"] / metrics["seconds"], 1),
        "valid_rmse": round(metrics["valid"]["rmse"], 3),
        "test_rmse": round(served_rmse(ws), 3),
    }


def _before(commit: str) -> types.ModuleType:
    """The training module as it was at `commit`, importable beside the current one."""
    source = subprocess.run(["git", "show", f"{commit}:src/evergreen/model/train.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    module = types.ModuleType("evergreen_train_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{commit}:train.py", "exec"), module.__dict__)
    return module


def _overhead(ws, commit: str, rounds: int) -> dict:
    params = ws.params
    train, valid = (pl.read_parquet(ws.split(n)) for n in ("train", "valid"))
    runs = {"before": _before(commit).train_model, "now": current.train_model}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    valid_rmse = {}
    for _ in range(rounds):
        for name, train_model in runs.items():
            result = train_model(train, valid, params.data, params.model, params.train, progress=False)
            seconds[name].append(result.metrics["seconds"])
            valid_rmse[name] = result.metrics["valid"]["rmse"]
    before, now = statistics.median(seconds["before"]), statistics.median(seconds["now"])
    return {"seconds": seconds, "median_before": before, "median_now": now, "ratio_now_to_before": now / before,
            "valid_rmse": valid_rmse}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs (default: params.yaml's)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--overhead-epochs", type=int, default=4)
    parser.add_argument("--before", default="HEAD", help="the commit whose train.py is the single-path reference")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/distributed.json")
    args = parser.parse_args()
    light = {"train.epochs": args.epochs} if args.epochs else {}
    two = {**light, "train.distributed": {"nproc_per_node": 2, "backend": "gloo"}}
    variants = {name: VARIANTS[name] for name in args.variants}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="evergreen-bench-ddp-") as tmp:
        projects = {"one": make_project(Path(tmp, "one"), light), "two": make_project(Path(tmp, "two"), two)}
        hgb = hgb_test_rmse(projects["one"])
        for _ in range(args.rounds):
            for name, (project, threads) in variants.items():
                runs[name].append(_stage(projects[project], threads))
                print(name, runs[name][-1], flush=True)
        quick = make_project(Path(tmp, "overhead"), {"train.epochs": args.overhead_epochs,
                                                     "train.patience": args.overhead_epochs})  # fmt: skip
        overhead = _overhead(quick, args.before, max(args.rounds, 3))
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": __import__("torch").__version__,
            "load_average_after": os.getloadavg(),
        },
        "stage": runs,
        "hgb_test_rmse": round(hgb, 3),
    }
    for single in ("1 process, 1 thread", "1 process"):
        if single in runs and "2 processes (gloo)" in runs:
            one, two_runs = runs[single], runs["2 processes (gloo)"]
            result[f"2 processes against {single}"] = {
                "wall_ratio": statistics.median(r["wall_seconds"] for r in two_runs)
                / statistics.median(r["wall_seconds"] for r in one),
                "samples_per_second_ratio": statistics.median(r["samples_per_second"] for r in two_runs)
                / statistics.median(r["samples_per_second"] for r in one),
            }
    result["single_path_overhead"] = overhead
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
