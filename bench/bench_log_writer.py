"""Benchmark the prediction log's writer alone, SQLite against PostgreSQL (issue 12), without HTTP.

    python bench/bench_log_writer.py                  # 3,000 awaited writes at 1 and at 32 at a time

One `PredictionLog` per backend (a SQLite file in a temporary folder; a throwaway PostgreSQL 15 cluster on
loopback from `tests/postgres_harness.py`), driven from one event loop the way the service drives it: each
write is one single-record request awaiting its commit (`write_async`). Reports writes/s, how many commits
they took, and the median commit time (the `on_commit` hook, as `/metrics` reports it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from evergreen.prediction_log.base import utc_now  # noqa: E402
from evergreen.prediction_log.writer import PredictionLog, log_rows  # noqa: E402
from evergreen.workspace import LogLocation  # noqa: E402
from tests.postgres_harness import start_cluster  # noqa: E402


async def _drive(log: PredictionLog, writes: int, concurrency: int, prefix: str) -> dict[str, Any]:
    commits: list[tuple[float, int]] = []
    log.on_commit = lambda seconds, operations: commits.append((seconds, operations))
    gate = asyncio.Semaphore(concurrency)
    record = {"hr": 8, "weathersit": 1, "temp": 0.5, "hum": 0.4}

    async def one(i: int) -> None:
        async with gate:
            await log.write_async(log_rows(f"{prefix}-{i}", utc_now(), "v1", [record], [1.0]))

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(writes)))
    seconds = time.perf_counter() - start
    durations = sorted(s for s, _ in commits)
    return {
        "concurrency": concurrency,
        "writes_per_s": round(writes / seconds),
        "commits": len(commits),
        "commit_p50_ms": round(durations[len(durations) // 2] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--logs", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "log_writer.json")
    args = parser.parse_args()
    cluster = start_cluster()  # started either way: the same processes on the machine for both backends
    results: list[dict[str, Any]] = []
    try:
        for kind in args.logs:
            if kind == "sqlite":
                location = LogLocation.sqlite(Path(tempfile.mkdtemp(prefix="evergreen-bench-log-")) / "predictions.db")
            else:
                location = LogLocation.postgresql(cluster.create_database("bench_writer"))
            log = PredictionLog(location, timeout_s=10)
            try:
                for concurrency in args.concurrency:
                    run = asyncio.run(_drive(log, args.writes, concurrency, f"c{concurrency}"))
                    results.append({"log": kind, **run})
                    print(
                        f"{kind:>10}, {concurrency:>3} at a time: {run['writes_per_s']:>6,} writes/s, "
                        f"{run['commits']:>5} commits, commit p50 {run['commit_p50_ms']} ms"
                    )
            finally:
                log.close()
    finally:
        cluster.stop()
    out = {"writes": args.writes, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0], "runs": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
