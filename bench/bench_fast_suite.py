"""The fast test suite (`pytest -m "not slow" -n 2`), this checkout against another, run alternately.

    git worktree add /tmp/before_suite <commit>
    python bench/bench_fast_suite.py --before /tmp/before_suite --pairs 2

Each run is a fresh pytest process in that checkout's folder, with its `src/` and tests first on the path (both
use this interpreter's installed libraries). Pairs alternate before and after, so that a machine that speeds up
or slows down during the benchmark weighs on both sides alike. Recorded per run: wall seconds, the CPU seconds of
pytest and its workers (user + system), and pytest's own "passed in" figure. The machine is shared: compare the
two sides of one run, as ratios, rather than figures from different days.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["-m", "pytest", "-m", "not slow", "-n", "2", "-q", "-p", "no:cacheprovider"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(checkout: Path) -> dict[str, Any]:
    """One fast suite in `checkout`: wall and CPU seconds, pytest's figure, and whether it passed."""
    env = {**os.environ, "PYTHONPATH": f"{checkout / 'src'}{os.pathsep}{checkout}"}
    cpu, started = _children_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, *COMMAND], cwd=checkout, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    figure = re.search(r" in ([0-9.]+)s", last)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 1),
        "pytest_s": float(figure.group(1)) if figure else None,
        "passed": done.returncode == 0,
        "summary": last,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (a git worktree)")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fast_suite.json")
    args = parser.parse_args()

    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for pair in range(1, args.pairs + 1):
        for side, checkout in (("before", args.before.resolve()), ("after", ROOT)):
            print(f"pair {pair}, {side} ...", flush=True)
            runs[side].append(run_suite(checkout))
            print(f"  {runs[side][-1]['summary']}", flush=True)

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    report = {
        "command": " ".join(["python", "bench/bench_fast_suite.py", *sys.argv[1:]]),
        "suite": " ".join(["python", *COMMAND]),
        "runs": runs,
        "median": {side: {k: median(side, k) for k in ("pytest_s", "wall_s", "cpu_s")} for side in runs},
        "load_at_end": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    before, after = report["median"]["before"], report["median"]["after"]
    print(
        f"fast suite, median of {args.pairs}: {after['pytest_s']:.1f} s against {before['pytest_s']:.1f} s before "
        f"({after['pytest_s'] / before['pytest_s']:.2f}x); CPU {after['cpu_s']:.0f} s against {before['cpu_s']:.0f} s"
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
