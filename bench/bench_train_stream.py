"""Benchmark the `train` and `evaluate` stages at scale (issue 22): a streamed train split against one loaded
whole, side by side on the same partitioned split, one epoch each.

    python bench/bench_train_stream.py --rows 10000000 --parts 100 --out bench/results/train_stream_10m.json
    python bench/bench_train_stream.py --rows 30000000 --parts 300 --out bench/results/train_stream_30m.json

What it does, in one run:
1. Writes a clean history of `--rows` rows in `--parts` parts (`bench_split.write_history`: an integer id, the
   event time, five floats, a 12-level category, a float target that depends on them) and splits it with the
   partitioned time split (80/10/10), as `dvc repro split` does.
2. Runs `evergreen.stages.train.run` (what `dvc repro train` runs), each time in a fresh Python process, so its
   peak RSS (VmHWM) is its own: an mlp of `--hidden` widths, `train.epochs` 1, `train.batch_size` auto (4096
   here), `train.threads` pinned to `--threads` (shared out between torchrun's ranks), so both paths get
   the same CPU whatever else the machine runs:
   - streamed: `train.stream.from_rows` 1, so the train split is read from its pieces;
   - in memory: `train.stream.from_rows` above the rows, today's path (the whole split loaded);
   - with `--processes 2`, also streamed under torchrun, each rank reading its own pieces.
3. With `--evaluate`, runs `evergreen.stages.evaluate.run` and then `evergreen.stages.export.run` once on the
   streamed model (the baselines fit on `evaluate.baseline_rows` sampled rows; both read the test split one
   record batch at a time). With `--before SRC` (the `src/` folder of an earlier commit, e.g. a `git worktree`),
   runs the same two stages with that code too, side by side on the same model and split.
Each line reports the stage's wall time, its peak RSS and the valid RMSE of the one epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from bench_split import land, params_for, run_split, write_history

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, sys, time
started = time.perf_counter()
from evergreen.stages import {stage}
from evergreen.workspace import Workspace
ws = Workspace.open(sys.argv[1])
begin = time.perf_counter()
{stage}.run(ws)
done = time.perf_counter()
print(json.dumps({{"run_s": done - begin, "process_s": done - started,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_child_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""


def _params(streamed: bool, processes: int, hidden: list[int], threads: int) -> dict[str, Any]:
    raw = params_for("time", 1)
    raw["train"] = {"epochs": 1, "batch_size": "auto", "threads": threads,
                    "stream": {"from_rows": 1 if streamed else 10**12}}  # fmt: skip
    if processes > 1:
        raw["train"]["distributed"] = {"nproc_per_node": processes, "backend": "gloo"}
    raw["model"] = {"type": "mlp", "target_transform": "none", "hidden": hidden}
    raw["evaluate"] = {"baselines": ["mean", "linear"]}
    return raw


def run_stage(
    project: Path, stage: str, streamed: bool, opts: argparse.Namespace, processes: int = 1, src: Path = ROOT / "src"
) -> dict[str, Any]:
    """One stage in a fresh process, with the code in `src`; under torchrun, `peak_child_rss_mib` is the largest
    rank's peak."""
    threads = max(1, opts.threads // processes)
    (project / "params.yaml").write_text(yaml.safe_dump(_params(streamed, processes, opts.hidden, threads)))
    env = {**os.environ, "PYTHONPATH": str(src)}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD.format(stage=stage), str(project)],
        env=env, capture_output=True, text=True, check=False, cwd=project,
    )  # fmt: skip
    wall = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"{stage} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    said = [line for line in done.stdout.splitlines() if line.startswith(f"{stage}:")]
    out["said"] = said
    if stage == "train":
        metrics = json.loads((project / "metrics/train.json").read_text())
        out["valid_rmse"] = metrics["valid"]["rmse"]
        out["n_train"], out["batch_size"] = metrics["n_train"], metrics["batch_size"]
        out["streamed"], out["threads"] = metrics.get("streamed", False), metrics["threads"]
    print(f"  {out['run_s']:.1f} s, peak {out['peak_rss_mib']:.0f} MiB; {said[-1] if said else ''}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--parts", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1, help="also train streamed under torchrun")
    parser.add_argument("--skip-in-memory", action="store_true")
    parser.add_argument("--evaluate", action="store_true", help="also run evaluate and export")
    parser.add_argument("--before", type=Path, help="the src/ of earlier code: evaluate and export with it too")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="the mlp's widths")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in all, shared by the ranks")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/train_stream.json")
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="evergreen-train-") as tmp:
        project = Path(tmp)
        shutil.copy(ROOT / "dvc.yaml", project)  # torchrun's ranks start through the CLI, which reads it
        began = time.perf_counter()
        entries = write_history(project, opts.rows, opts.parts, arrival=1)
        land(project, entries[:-1])
        print(f"history: {opts.rows} rows in {opts.parts} parts, written in {time.perf_counter() - began:.0f} s")
        print("split (partitioned)")
        results["split"] = run_split(project, "time", 1)
        print("train, streamed")
        results["train streamed"] = run_stage(project, "train", streamed=True, opts=opts)
        for code, src in [("", ROOT / "src")] + ([(" before", opts.before)] if opts.before else []):
            for stage in ("evaluate", "export") if opts.evaluate else ():
                print(f"{stage}{code} (the streamed model)")
                results[f"{stage}{code}"] = run_stage(project, stage, streamed=True, opts=opts, src=src)
        if opts.processes > 1:
            print(f"train, streamed, {opts.processes} processes")
            results["train streamed torchrun"] = run_stage(
                project, "train", streamed=True, opts=opts, processes=opts.processes
            )
        if not opts.skip_in_memory:
            print("train, in memory")
            results["train in memory"] = run_stage(project, "train", streamed=False, opts=opts)

    summary: dict[str, Any] = {
        "rows": opts.rows,
        "parts": opts.parts,
        "results": results,
        "hidden": opts.hidden,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
    }
    if "train in memory" in results:
        streamed, whole = results["train streamed"], results["train in memory"]
        summary["streamed_over_in_memory"] = {
            "peak_rss": round(streamed["peak_rss_mib"] / whole["peak_rss_mib"], 3),
            "time": round(streamed["run_s"] / whole["run_s"], 3),
            "valid_rmse": round(streamed["valid_rmse"] / whole["valid_rmse"], 4),
        }
        print(f"streamed/in memory: {summary['streamed_over_in_memory']}")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {opts.out}")


if __name__ == "__main__":
    main()
