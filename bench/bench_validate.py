"""Time `validate_raw`'s work on its partitions with this code and with earlier code, side by side.

    git worktree add /tmp/before 620a8fa
    python bench/bench_validate.py --before /tmp/before/src              # 4M raw rows
    python bench/bench_validate.py --before /tmp/before/src --rows 1000000   # a quick run

It scales the bundled bike data up to `--rows` raw rows (as `bench_data_pipeline.py` does: new ids, noise and
about 1% dirt, then ingest's `combine`) and cuts them into partitions of 1M and of 100k rows. For each code and
each partition size, `--workers` processes (like the stage's Dask workers, one thread each) validate their
share of the partitions with `validate_partition`, what each of the stage's Dask tasks runs: GX in batches of
`validation.batch_rows`, and the partition's Data Docs. A worker's clock starts after its imports, as a
standing Dask worker's would. The codes take turns (this, before, this) so that a noisy machine hurts both.
Writes `bench/results/validate.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import json, sys, time
from evergreen.config import load_params
import evergreen.validation.gx_adapter  # GX's import: once per standing worker, not timed
from evergreen.validation.stage import Task, validate_partition
from evergreen.validation.suites import generate_suite
params = load_params(sys.argv[1])
suite = generate_suite(params.data, "raw")
started = time.perf_counter()
for path, rows in json.loads(sys.argv[2]):
    task = Task(path, path, rows, params.validation.batch_rows, suite, 5, path + ".docs")
    validate_partition(task)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def make_partitions(work: Path, partition_rows: int) -> list[tuple[str, int]]:
    import polars as pl

    raw = pl.read_parquet(work / "raw.parquet")
    out = work / f"parts_{partition_rows}"
    out.mkdir(exist_ok=True)
    parts = []
    for i, start in enumerate(range(0, raw.height, partition_rows)):
        path = out / f"{i:06d}.parquet"
        piece = raw.slice(start, partition_rows)
        piece.write_parquet(path)
        parts.append((str(path), piece.height))
    return parts


def generate_raw(rows: int, work: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_data_pipeline as pipeline

    from evergreen.config import load_params
    from evergreen.data import io
    from evergreen.data.ingest import combine

    params = load_params(ROOT / "params.yaml")
    (work / "csv").mkdir()
    pipeline.generate(rows, work / "csv", max(1, rows // 1_000_000), 0)
    frames = [io.read_text_table(f, params.data) for f in io.resolve_source(str(work / "csv" / "*.csv"))]
    io.write_parquet(combine(frames, params.data.key).raw, work / "raw.parquet")


def run_code(src: Path, parts: list[tuple[str, int]], workers: int) -> dict[str, Any]:
    """`workers` processes, each validating every `workers`-th partition; seconds of the slowest."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    shares = [parts[w::workers] for w in range(workers)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(ROOT / "params.yaml"), json.dumps(share)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
        if share
    ]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    rows = sum(n for _, n in parts)
    work_s = max(o["seconds"] for o in outs)
    return {
        "rows": rows,
        "work_s": round(work_s, 2),
        "process_s": round(time.perf_counter() - started, 2),
        "rows_per_s": round(rows / work_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the earlier code's src folder")
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "validate.json")
    opts = parser.parse_args()
    results: dict[str, Any] = {"rows": opts.rows, "workers": opts.workers, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_raw(opts.rows, work)
        for partition_rows in (1_000_000, 100_000):
            parts = make_partitions(work, partition_rows)
            for label, src in (("this", ROOT / "src"), ("before", opts.before), ("this", ROOT / "src")):
                run = {"code": label, "partition_rows": partition_rows, **run_code(src, parts, opts.workers)}
                print(json.dumps(run), flush=True)
                results["runs"].append(run)
    opts.out.write_text(json.dumps(results, indent=2) + "\n")
    for partition_rows in (1_000_000, 100_000):
        runs = [r for r in results["runs"] if r["partition_rows"] == partition_rows]
        mine = [r["rows_per_s"] for r in runs if r["code"] == "this"]
        this = round(sum(mine) / len(mine))  # the mean of the two runs around the one before
        before = next(r["rows_per_s"] for r in runs if r["code"] == "before")
        print(f"{partition_rows:>9,}-row partitions: {this:,} rows/s against {before:,} before ({this / before:.2f}x)")


if __name__ == "__main__":
    main()
