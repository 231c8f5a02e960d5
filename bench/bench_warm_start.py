"""Benchmark warm-started retrains (issue 14): the backtest's cold policy against its `_warm` variant, one replay.

    python bench/bench_warm_start.py                                 # periodic vs periodic_warm, Jan-May 2012
    python bench/bench_warm_start.py --policy drift --end 2012-12-31  # the drift policy over the whole year

Both policies replay the same windows of the bundled bike data from the same initial model (trained on 2011)
and retrain at the same windows (a `_warm` variant makes its base policy's decisions). A cold retrain trains
from scratch (`train.epochs`, `train.lr`); a warm one starts from the champion's weights and preprocessing and
fine-tunes (`train.warm_epochs` at `train.lr * train.warm_lr_factor`). Reported: the replay's RMSE over every
served row, and the seconds the retrains spent in the `train` stage (its own clock, `metrics/train.json`),
summed. The project is only read; the sandboxes go to a temporary folder. Writes bench/results/warm_start.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from evergreen.backtest import backtest  # noqa: E402
from evergreen.config import load_params, with_overrides  # noqa: E402
from evergreen.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="periodic", choices=["periodic", "drift"])
    parser.add_argument("--start", default="2012-01-01")
    parser.add_argument("--end", default="2012-05-06", help="replay until here (default: 18 weekly windows)")
    parser.add_argument("--warm-epochs", type=int, default=None, help="train.warm_epochs (default: params.yaml's)")
    parser.add_argument("--warm-lr-factor", type=float, default=None, help="train.warm_lr_factor")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/warm_start.json")
    args = parser.parse_args()

    overrides = {
        "simulate.start": args.start,
        "simulate.end": args.end,
        "simulate.policies": [args.policy, f"{args.policy}_warm"],
    }
    if args.warm_epochs is not None:
        overrides["train.warm_epochs"] = args.warm_epochs
    if args.warm_lr_factor is not None:
        overrides["train.warm_lr_factor"] = args.warm_lr_factor
    params = with_overrides(load_params(ROOT / "params.yaml"), overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evergreen-bench-warm-") as tmp:
        summary = backtest(Workspace(ROOT, params), Path(tmp), progress=True)
    wall = time.perf_counter() - started
    compared = summary["warm_vs_cold"][args.policy]
    retrains = {name: run["retrains"] for name, run in summary["policies"].items()}
    per_retrain = {
        name: [w["train_seconds"] for w in run["windows"] if w["retrain"]] for name, run in summary["policies"].items()
    }
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "overrides": overrides,
        "train": params.train.model_dump(
            mode="json", include={"epochs", "lr", "patience", "warm_epochs", "warm_lr_factor"}
        ),  # fmt: skip
        "simulate_overrides": params.simulate.overrides,
        "retrains": retrains,
        "train_seconds_per_retrain": per_retrain,
        "promotions": {name: run["promotions"] for name, run in summary["policies"].items()},
        **compared,
        "wall_seconds": round(wall, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
