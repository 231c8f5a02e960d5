"""Benchmark `evergreen tune` (issue 14): trials per hour with 1 and 2 workers, and what a 30-trial study finds.

    dvc repro split                        # once: the bundled data's train/valid/test parts
    python bench/bench_tune.py             # to bench/results/tune.json
    python bench/bench_tune.py --epochs 4 --prune-warmup 1 --rate-trials 4 --rate-epochs 2 --skip-full  # busy cores

What it does, on the CPU, in a throwaway project folder (params.yaml and the split parts copied from here):
1. Throughput: the same study (the shipped `tune.space`, `--rate-epochs` epochs, one ensemble member, no
   pruning, so every trial trains fully) run with 1 worker, then with 2 worker processes, each on its own
   SQLite study of `--rate-trials` trials, alternating for `--rounds` rounds; trials per hour = trials / wall
   time, the processes' start included. The 1-minute load average is recorded before and after each run.
2. Search: one study of `--trials` trials with `--workers` workers, TPE and median pruning as shipped, each
   trial `--epochs` epochs of one member (lighter than params.yaml's 40 epochs of 3 members: the time budget).
   Trial 0 is the hand-set params under the same budget. The objective is valid RMSE; test is not read.
3. Then, outside the study, the best params and the hand-set params are each trained once more at the
   study's budget and at full params.yaml settings (40 epochs, ensemble 3), and scored on valid and test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from evergreen.config import with_overrides  # noqa: E402
from evergreen.data.split import read_split  # noqa: E402
from evergreen.model.metrics import score  # noqa: E402
from evergreen.tuning.study import open_study, run_workers, storage_url, summarise, workspace_with  # noqa: E402
from evergreen.workspace import Workspace  # noqa: E402


def _project(folder: Path) -> Path:
    """A folder with the project's params.yaml and its split parts: all a study reads."""
    (folder / "data/split").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", folder / "params.yaml")
    for part in ("train", "valid", "test"):
        source = ROOT / "data/split" / f"{part}.parquet"
        if not source.exists():
            raise SystemExit(f"{source} is missing: run `dvc repro split` first")
        shutil.copy(source, folder / "data/split" / source.name)
    return folder


def _study(root: Path, workers: int, overrides: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    # one torch thread per worker process in every run: on cores other work keeps busy, a two-thread team
    # stalls whenever one of its threads is descheduled, so the comparison is of processes, not of threads
    run_workers(str(root), workers, overrides, threads=1)
    seconds = time.perf_counter() - started
    ws = workspace_with(str(root), overrides)
    summary = summarise(open_study(ws, create=False), ws.params, storage_url(ws))
    done = sum(summary.trials.values())
    return {"workers": workers, "trials": done, "seconds": round(seconds, 1),
            "trials_per_hour": round(done / seconds * 3600, 1), "summary": summary.to_dict()}  # fmt: skip


def _scores(ws: Workspace, values: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    """Train `values` (over params.yaml, and `budget`) once; valid and test RMSE, seconds."""
    import torch

    from evergreen.model.train import train_model

    torch.set_num_threads(1)  # as the study's workers

    params = with_overrides(ws.params, {**budget, **values})
    train, valid, test = (read_split(ws, p) for p in ("train", "valid", "test"))
    result = train_model(train, valid, params.data, params.model, params.train, progress=False,
                         params=params.model_dump(mode="json"))  # fmt: skip
    target = params.data.target.name
    tested = score("regression", test[target].to_numpy(), result.model.predict(test))
    return {"valid_rmse": round(result.metrics["valid"]["rmse"], 3), "test_rmse": round(tested["rmse"], 3),
            "test_mae": round(tested["mae"], 3), "epochs_run": result.metrics["epochs_run"],
            "seconds": result.metrics["seconds"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20, help="epochs of each search trial")
    parser.add_argument("--workers", type=int, default=2, help="workers of the search study")
    parser.add_argument("--prune-warmup", type=int, default=5, help="tune.prune_warmup_epochs of the search")
    parser.add_argument("--rate-trials", type=int, default=6)
    parser.add_argument("--rate-epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="alternating 1- and 2-worker throughput rounds")
    parser.add_argument("--skip-full", action="store_true", help="do not retrain at full params.yaml settings")
    parser.add_argument("--skip-search", action="store_true", help="throughput only")
    parser.add_argument(
        "--full-only", action="store_true", help="only step 3 at full settings, for the best in --output"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/tune.json")
    args = parser.parse_args()

    light = {"model.ensemble": 1, "train.device": "cpu"}
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    if args.full_only:  # the full-settings comparison for a finished run's best params, added to its results
        results = json.loads(args.output.read_text())
        with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
            ws = Workspace.open(_project(Path(tmp) / "project"))
            best, full = results["search"]["summary"]["best"]["params"], {"train.device": "cpu"}
            results["compare"]["full"] = {"hand_set": _scores(ws, {}, full), "best": _scores(ws, best, full)}
        print(f"at full settings: {results['compare']['full']}", flush=True)
        args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
        return
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        root = _project(Path(tmp) / "project")
        # 1. throughput: every trial trains all its epochs (pruning off), 1 worker then 2
        rate = {**light, "train.epochs": args.rate_epochs, "train.patience": args.rate_epochs,
                "tune.n_trials": args.rate_trials, "tune.prune_startup_trials": 10**6}  # fmt: skip
        results["throughput"] = []
        for round_ in range(args.rounds):  # alternating, so that other work on the machine falls on both
            for workers in (1, 2):
                load = os.getloadavg()[0]
                run = _study(root, workers, {**rate, "tune.study": f"rate-{workers}-{round_}"})
                run.pop("summary")
                run |= {"round": round_, "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
                results["throughput"].append(run)
                print(f"throughput: {run}", flush=True)

        if args.skip_search:
            args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
            print(f"wrote {args.output}")
            return
        # 2. search: as shipped, at a lighter budget
        budget = {**light, "train.epochs": args.epochs}
        searched = {"tune.n_trials": args.trials, "tune.study": "search", "tune.prune_warmup_epochs": args.prune_warmup}
        search = _study(root, args.workers, {**budget, **searched})
        results["search"] = search
        summary = search["summary"]
        print(f"search: {search['trials']} trials in {search['seconds']} s; best {summary['best']}", flush=True)

        # 3. best against hand-set, trained again outside the study, scored on valid and test
        ws = Workspace.open(root)
        best = summary["best"]["params"]
        results["compare"] = {"study_budget": {"hand_set": _scores(ws, {}, budget), "best": _scores(ws, best, budget)}}
        print(f"at the study's budget: {results['compare']['study_budget']}", flush=True)
        if not args.skip_full:
            full = {"train.device": "cpu"}
            results["compare"]["full"] = {"hand_set": _scores(ws, {}, full), "best": _scores(ws, best, full)}
            print(f"at full settings: {results['compare']['full']}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
