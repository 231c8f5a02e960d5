"""Benchmark: the Prefect `pipeline` flow against plain `dvc repro`, full run and no-op run, in one run.

Each side gets its own fresh copy of the project (same files, same params), so both do exactly the same work.
The flow runs as a user runs it, `evergreen run`, against a real Prefect server started here on loopback;
the server's start-up is not counted (a deployment talks to a server that is already up).

    python bench/bench_orchestration.py [--out bench/results/orchestration.json] [--noop-repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.prefect_harness import BIN, prefect_env, prefect_server  # noqa: E402
from tests.e2e.workspace import copy_project  # noqa: E402


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/orchestration.json")
    parser.add_argument("--noop-repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        with prefect_server(tmp_path / "server-home") as api_url:
            env = prefect_env(tmp_path / "client-home", api_url)
            dvc_copy = copy_project(tmp_path / "dvc")
            flow_copy = copy_project(tmp_path / "flow")
            dvc_cmd = [str(BIN / "dvc"), "repro"]
            flow_cmd = [str(BIN / "evergreen"), "run"]
            print("full run: dvc repro ...", flush=True)
            full_dvc = timed(dvc_cmd, dvc_copy, env)
            print(f"  {full_dvc:.1f} s\nfull run: evergreen run (pipeline flow) ...", flush=True)
            full_flow = timed(flow_cmd, flow_copy, env)
            print(f"  {full_flow:.1f} s", flush=True)
            noop_dvc = [timed(dvc_cmd, dvc_copy, env) for _ in range(args.noop_repeats)]
            noop_flow = [timed(flow_cmd, flow_copy, env) for _ in range(args.noop_repeats)]

    result = {
        "machine": {"cpus": os.cpu_count()},
        "full": {
            "dvc_repro_s": full_dvc,
            "pipeline_flow_s": full_flow,
            "overhead_pct": 100 * (full_flow / full_dvc - 1),
        },
        "noop": {
            "dvc_repro_s": statistics.median(noop_dvc),
            "pipeline_flow_s": statistics.median(noop_flow),
            "extra_s": statistics.median(noop_flow) - statistics.median(noop_dvc),
            "runs": args.noop_repeats,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        "| run | dvc repro | pipeline flow | overhead |\n| --- | --- | --- | --- |\n"
        f"| full | {full_dvc:.1f} s | {full_flow:.1f} s | {result['full']['overhead_pct']:+.1f}% |\n"
        f"| no-op (median of {args.noop_repeats}) | {result['noop']['dvc_repro_s']:.2f} s | "
        f"{result['noop']['pipeline_flow_s']:.2f} s | {result['noop']['extra_s']:+.2f} s |"
    )


if __name__ == "__main__":
    main()
