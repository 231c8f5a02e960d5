"""Benchmark training throughput (issue 3): in-memory tensor batches against a per-row Dataset/DataLoader;
and (issue 21, `--machine`) the `train` stage against a bare torch loop, quiet and beside busy processes.

    python bench/bench_training.py                      # 4 timed epochs a run, 3 rounds, to bench/results/
    python bench/bench_training.py --epochs 2 --rounds 1    # a quick run
    python bench/bench_training.py --machine --epochs 4     # to bench/results/training_machine.json

`--machine` writes the bundled splits into a scratch project and runs `evergreen stage train` there as a
subprocess (the real entry point: thread setup, checkpoint, DVCLive) for `--epochs` epochs with early stopping
off, with `train.threads: auto` and with torch's default threads (`threads` = the CPU count, what the stage
did before), each quiet and beside two busy `python -c "while True: pass"` processes. The bare loop trains
the same network on the same rows for as many epochs in this process (no validation, no checkpoint) with as
many threads as the quiet auto run chose. Ratios: stage seconds (train_model's own, from metrics/train.json)
over bare seconds, and busy over quiet wall time.

What it does, in one process on the CPU:
1. Builds the bundled bike data's train and valid splits with the project's own functions (read, clean, split
   with the params in params.yaml; no `dvc repro`), and fits the preprocessing once.
2. Trains the model of params.yaml (`model:`, ensemble included) with the optimiser, schedule, loss and
   gradient clipping of `train:`, twice from the same seed, changing only where batches come from:
   - evergreen: what `evergreen.model.train` does, the whole split held as two tensors and each batch
     indexed out of them with a slice of one `torch.randperm` per epoch;
   - per-row DataLoader: a plain `torch.utils.data.Dataset` whose `__getitem__` returns one row, fed through
     `DataLoader(batch_size=...)` with the `RandomSampler` that `shuffle=True` builds (default collate,
     `--workers` worker processes, 0 by default).
   The sampler gets its own generator with the training seed, so its first epoch is the same permutation as
   evergreen's first `randperm`; the loader's per-epoch base seed comes from a second generator (with
   `shuffle=True` alone it would come from the sampler's, or from the global RNG that drives dropout). So
   the first (warm-up) epoch sees the same batches in the same order, and its loss must agree exactly: a
   check that only the batching differs. Later epochs' orders differ, because `RandomSampler` draws and
   discards one extra permutation at the end of each epoch; both are still uniform shuffles.
   Each run has one untimed warm-up epoch, then `--epochs` timed ones; runs alternate over `--rounds` rounds
   so that noise from other work on the machine falls on both. Throughput is train rows / median epoch time.
3. Times iterating each batch source alone for one epoch (no model), the batching overhead by itself.
4. Times the real `train_model` (the `train` stage's function) for as many epochs, from its per-epoch
   callback, for reference: its epochs also evaluate the valid split and copy the best weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from evergreen.config import Params, parse_params  # noqa: E402
from evergreen.data.clean import clean  # noqa: E402
from evergreen.data.io import read_text_table, resolve_source  # noqa: E402
from evergreen.data.split import split  # noqa: E402
from evergreen.inference import feature_matrix  # noqa: E402
from evergreen.model.metrics import score  # noqa: E402
from evergreen.model.network import TabularNet  # noqa: E402
from evergreen.model.preprocess import encode_target, fit_preprocessing  # noqa: E402
from evergreen.model.train import _scheduler, train_model  # noqa: E402

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


class RowDataset(Dataset):
    """The textbook per-row dataset: one (features, target) pair per index."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def _splits(params: Params) -> dict[str, pl.DataFrame]:
    data = params.data
    raw = pl.concat([read_text_table(path, data) for path in resolve_source(str(ROOT / data.source))])
    return split(clean(raw, data, params.clean).clean, data, params.split)


def _in_memory(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> Batches:
    generator = torch.Generator().manual_seed(seed)

    def epoch() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            yield x[index], y[index]

    return epoch


def _per_row(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, workers: int) -> Batches:
    rows = RowDataset(x, y)
    loader = DataLoader(
        rows, batch_size=batch_size, sampler=RandomSampler(rows, generator=torch.Generator().manual_seed(seed)),
        num_workers=workers, generator=torch.Generator().manual_seed(0), persistent_workers=workers > 0,
    )  # fmt: skip
    return lambda: loader


def _fit(params: Params, prep: Any, batches: Batches, steps: int, epochs: int, valid: tuple) -> dict[str, Any]:
    """The step of `train_model` (loss over ensemble members, clipping, AdamW, schedule) on CPU, timed."""
    cfg, n_members = params.train, params.model.ensemble
    torch.manual_seed(cfg.seed)
    model = TabularNet(prep, params.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = _scheduler(optimizer, cfg, (epochs + 1) * steps)
    seconds, losses, rows = [], [], 0
    for epoch in range(epochs + 1):  # epoch 0 warms up (allocator, threads, first-call costs), untimed
        model.train()
        started, total, rows = time.perf_counter(), 0.0, 0
        for xb, yb in batches():
            loss = F.mse_loss(model.member_outputs(xb)[..., 0], yb.expand(n_members, -1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(yb)
            rows += len(yb)
        if epoch:
            seconds.append(time.perf_counter() - started)
        losses.append(total / rows)
    model.eval()
    x_valid, actual = valid
    with torch.no_grad():
        rmse = score("regression", actual, model(x_valid).numpy(), [])["rmse"]
    return {"epoch_seconds": seconds, "train_losses": losses, "valid_rmse": rmse, "rows_per_epoch": rows}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _iterate_only(batches: Batches) -> float:
    started = time.perf_counter()
    for _ in batches():
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per run (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each batch source")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--machine", action="store_true", help="stage vs bare loop, quiet vs busy (issue 21)")
    args = parser.parse_args()
    if args.machine:
        machine(args.epochs, args.out or ROOT / "bench" / "results" / "training_machine.json")
        return
    args.out = args.out or ROOT / "bench" / "results" / "training.json"

    params = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params = params.model_copy(update={"train": params.train.model_copy(update={"device": "cpu"})})
    if params.data.task != "regression":
        raise SystemExit("this benchmark trains the bundled regression task")
    cfg = params.train
    torch.use_deterministic_algorithms(True, warn_only=True)  # as train_model does
    splits = _splits(params)
    prep = fit_preprocessing(splits["train"], params.data, params.model)
    x = torch.from_numpy(feature_matrix(splits["train"], prep.features))
    y = torch.from_numpy(encode_target(splits["train"], prep))
    x_valid = torch.from_numpy(feature_matrix(splits["valid"], prep.features))
    valid = (x_valid, splits["valid"][params.data.target.name].cast(pl.Float64).to_numpy())
    steps = math.ceil(len(x) / cfg.batch_size)
    sources: dict[str, Callable[[], Batches]] = {
        "evergreen (in-memory tensors)": lambda: _in_memory(x, y, cfg.batch_size, cfg.seed),
        f"per-row Dataset + DataLoader (workers={args.workers})": lambda: _per_row(
            x, y, cfg.batch_size, cfg.seed, args.workers
        ),
    }
    print(f"{len(x)} train rows, {steps} batches of {cfg.batch_size} per epoch, model {params.model.hidden} "
          f"x{params.model.ensemble}, {torch.get_num_threads()} torch threads", flush=True)  # fmt: skip

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
    load_before = os.getloadavg()
    for round_ in range(args.rounds):
        for name, make in sources.items():
            run = _fit(params, prep, make(), steps, args.epochs, valid)
            runs[name].append(run)
            print(f"round {round_ + 1} {name}: epochs {[round(s, 2) for s in run['epoch_seconds']]} s, "
                  f"valid rmse {run['valid_rmse']:.2f}", flush=True)  # fmt: skip
    iterate = {name: statistics.median(_iterate_only(make()) for _ in range(3)) for name, make in sources.items()}

    stamps: list[float] = []
    train_model(
        splits["train"], splits["valid"], params.data, params.model,
        cfg.model_copy(update={"epochs": args.epochs + 1, "patience": args.epochs + 2}),
        on_epoch=lambda _: stamps.append(time.perf_counter()), progress=False,
    )  # fmt: skip
    stage_epoch = statistics.median(np.diff(stamps).tolist())  # from the end of epoch 1 (the warm-up) on
    load_after = os.getloadavg()

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "data": {"train_rows": len(x), "valid_rows": len(x_valid), "features": len(prep.features)},
        "config": {"model": params.model.model_dump(mode="json"), "train": cfg.model_dump(mode="json")},
        "timed_epochs_per_run": args.epochs,
        "rounds": args.rounds,
        "sources": {},
    }
    rows: list[tuple[str, float, float, float, float]] = []
    for name, name_runs in runs.items():
        epoch_seconds = [s for run in name_runs for s in run["epoch_seconds"]]
        median = statistics.median(epoch_seconds)
        results["sources"][name] = {
            "samples_per_s": round(len(x) / median),
            "median_epoch_s": round(median, 4),
            "min_epoch_s": round(min(epoch_seconds), 4),
            "epoch_seconds": [round(s, 4) for s in epoch_seconds],
            "batching_only_epoch_s": round(iterate[name], 4),
            "train_losses_last_run": name_runs[-1]["train_losses"],
            "valid_rmse_last_run": name_runs[-1]["valid_rmse"],
        }
        rows.append((name, len(x) / median, median, iterate[name], name_runs[-1]["valid_rmse"]))
    ours, theirs = (results["sources"][name] for name in sources)
    results["speedup"] = round(ours["samples_per_s"] / theirs["samples_per_s"], 3)
    results["same_first_epoch_loss"] = ours["train_losses_last_run"][0] == theirs["train_losses_last_run"][0]
    results["train_model_reference"] = {
        "median_epoch_s": round(stage_epoch, 4),
        "samples_per_s": round(len(x) / stage_epoch),
        "note": "evergreen.model.train.train_model, epochs include valid evaluation and best-weight copies",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print("\n| batches | samples/s | median epoch s | batching alone, s/epoch | valid RMSE |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rate, median, alone, rmse in rows:
        print(f"| {name} | {rate:,.0f} | {median:.2f} | {alone:.3f} | {rmse:.2f} |")
    print(f"| `train_model` as the stage runs it (incl. valid eval) | {len(x) / stage_epoch:,.0f} | "
          f"{stage_epoch:.2f} | | |")  # fmt: skip
    print(f"\nspeedup {results['speedup']}x; identical first-epoch loss: {results['same_first_epoch_loss']}")
    print(f"load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f}")
    print(f"results: {args.out}")


def _stage_run(project: Path, threads: int | str, busy: int) -> dict[str, Any]:
    """`evergreen stage train` in `project` with `train.threads: threads`, beside `busy` spinning processes."""
    params_file = project / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    raw["train"]["threads"] = threads
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(1.0 if busy else 0.0)  # let them take their cores
        started = time.perf_counter()
        done = subprocess.run([str(Path(sys.executable).with_name("evergreen")), "stage", "train"], cwd=project,
                              capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - started
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    if done.returncode:
        raise SystemExit(f"the train stage failed:\n{done.stdout}\n{done.stderr}")
    metrics = json.loads((project / "metrics" / "train.json").read_text())
    return {"threads_setting": threads, "busy_processes": busy, "wall_s": round(wall, 2),
            "train_model_s": metrics["seconds"], "threads": metrics["threads"], "epochs": metrics["epochs_run"],
            "valid_rmse": metrics["valid"]["rmse"]}  # fmt: skip


def _bare_loop(params: Params, splits: dict[str, pl.DataFrame], epochs: int) -> dict[str, Any]:
    """The same network, loss, optimiser, schedule and rows for `epochs` epochs, no validation or checkpoint."""
    started = time.perf_counter()
    prep = fit_preprocessing(splits["train"], params.data, params.model)
    x = torch.from_numpy(prep.matrix(splits["train"]))
    y = torch.from_numpy(encode_target(splits["train"], prep))
    steps = math.ceil(len(x) / params.train.batch_size)
    run = _fit(params, prep, _in_memory(x, y, params.train.batch_size, params.train.seed), steps, epochs - 1,
               (torch.from_numpy(prep.matrix(splits["valid"])),
                splits["valid"][params.data.target.name].cast(pl.Float64).to_numpy()))  # fmt: skip
    return {"seconds": round(time.perf_counter() - started, 2), "valid_rmse": run["valid_rmse"]}


def machine(epochs: int, out: Path) -> None:
    """Issue 21's figures: the stage against a bare loop, and quiet against two busy processes."""
    params = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    splits = _splits(params)
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        for name in ("params.yaml", "dvc.yaml"):  # the stage command reads its stage from dvc.yaml
            shutil.copy(ROOT / name, project / name)
        raw = yaml.safe_load((project / "params.yaml").read_text())
        raw["train"] |= {"epochs": epochs, "patience": epochs + 1, "device": "cpu"}
        (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        (project / "data" / "split").mkdir(parents=True)
        for name, frame in splits.items():
            frame.write_parquet(project / "data" / "split" / f"{name}.parquet")
        runs = []
        for threads, busy in (("auto", 0), (os.cpu_count() or 1, 0), ("auto", 2), (os.cpu_count() or 1, 2)):
            runs.append(_stage_run(project, threads, busy))
            print(runs[-1], flush=True)
    torch.set_num_threads(runs[0]["threads"])
    bare = _bare_loop(params.model_copy(update={"train": params.train.model_copy(update={"device": "cpu"})}),
                      splits, epochs)  # fmt: skip
    print({"bare": bare}, flush=True)
    quiet = {run["threads_setting"]: run for run in runs if not run["busy_processes"]}
    loaded = {run["threads_setting"]: run for run in runs if run["busy_processes"]}
    results = {
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "torch": torch.__version__,
                    "loadavg_1min_after": round(os.getloadavg()[0], 2)},  # fmt: skip
        "train_rows": len(splits["train"]), "epochs": epochs, "stage_runs": runs, "bare_loop": bare,
        "stage_over_bare": round(quiet["auto"]["train_model_s"] / bare["seconds"], 2),
        "busy_over_quiet": {str(k): round(loaded[k]["wall_s"] / quiet[k]["wall_s"], 2) for k in quiet},
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"stage/bare {results['stage_over_bare']}x; busy/quiet {results['busy_over_quiet']}; results: {out}")


if __name__ == "__main__":
    main()
