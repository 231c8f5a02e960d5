"""Benchmark the prediction service against its bare ceiling, and batch scoring (issues 5 and 12).

    python bench/bench_service.py                         # 10 s per level, 200k rows batch
    python bench/bench_service.py --seconds 5 --rows 0    # the service only
    python bench/bench_service.py --logs sqlite postgresql --connections 32 --rows 0   # both log backends

What it does, in one run:
1. Copies the exported model (`models/model.onnx`, `models/signature.json`, `models/model_card.json`, from
   `dvc repro`) into a fresh registry in a temporary folder and promotes it; the params are the project's,
   with the prediction log in the temporary folder.
2. For 1 and 2 server processes (`--workers`), starts the real service (`evergreen serve --workers N`, API
   token on) and then the bare ceiling (`bench/bare_service.py`: FastAPI + onnxruntime on the same graph, no
   request model, no log) on a free loopback port, and drives each with `wrk` (one client thread, keep-alive
   connections, closed loop; a Lua script cycles single-record `POST /predict` bodies from the bike data) at
   1, 8 and 32 connections: requests/s, p50 and p99 as wrk reports them, non-2xx answers, and the load
   average. Every Evergreen answer is committed to the prediction log before it is sent: SQLite WAL,
   synchronous=FULL, or (`--logs postgresql`) a throwaway PostgreSQL cluster on loopback (`serve.log_url`,
   `tests/postgres_harness.py`); afterwards the log must hold at least every acknowledged request (wrk does
   not count the answers still in flight when it stops). Then it times 200 sequential `GET /metrics` scrapes
   (p50 and p99 ms), the counters full from the load.
3. Scales the bundled bike data to `--rows` rows (CSV) and times `evergreen predict` on it end to end (the
   command, including Python start-up) and the library call alone (`rows/s` as the command reports it).

wrk shares the CPUs with the servers: on a small machine it costs the servers a core's share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from service_load import BIN, FEATURES_FROM, ROOT, TOKEN, bare, load, lua_script, prepare, records, server

from tests.harness import free_port  # on the path once service_load is imported


def batch(params: Path, work: Path, rows: int) -> dict[str, Any]:
    """`evergreen predict` on `rows` rows of the bike data, as CSV."""
    source = pl.read_csv(FEATURES_FROM, infer_schema=False)
    repeats = -(-rows // source.height)
    big = pl.concat([source] * repeats).head(rows)
    big = big.with_columns(pl.int_range(1, big.height + 1).cast(pl.String).alias("instant"))
    path = work / "batch.csv"
    big.write_csv(path)
    out = work / "scored.parquet"
    start = time.perf_counter()
    done = subprocess.run(
        [
            str(BIN / "evergreen"),
            "predict",
            "--params",
            str(params),
            "--input",
            str(path),
            "--output",
            str(out),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - start
    reported = done.stdout.split("(")[1].split(" rows/s")[0].replace(",", "")
    return {
        "rows": rows,
        "command_s": round(seconds, 2),
        "command_rows_per_s": round(rows / seconds),
        "library_rows_per_s": int(reported),
        "scored": pl.scan_parquet(out).select(pl.len()).collect().item(),
        "output": done.stdout.strip(),
    }


def _logged(location: Path | str) -> int:
    if isinstance(location, str):
        import psycopg

        with psycopg.connect(location) as conn:
            return conn.execute("SELECT count(*) FROM predictions").fetchone()[0]
    if not location.exists():
        return 0
    with contextlib.closing(sqlite3.connect(location)) as conn:
        return conn.execute("SELECT count(*) FROM predictions").fetchone()[0]


def scrapes(url: str, n: int = 200) -> dict[str, Any]:
    """`n` sequential `GET /metrics` on one keep-alive connection: p50 and p99 in ms, and the body's size."""
    times = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        for _ in range(n):
            start = time.perf_counter()
            response = client.get("/metrics")
            times.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    times.sort()
    return {"scrapes": n, "p50_ms": round(times[n // 2], 2), "p99_ms": round(times[int(n * 0.99)], 2),
            "bytes": len(response.content)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per level")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--logs", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite"])
    parser.add_argument("--rows", type=int, default=200_000, help="rows for batch scoring (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service.json")
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="the exported bike model's folder")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")

    work = Path(tempfile.mkdtemp(prefix="evergreen-bench-service-"))
    levels: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    scraped: list[dict[str, Any]] = []
    cluster = None
    try:
        script = lua_script(work / "post.lua", records(500))
        if "postgresql" in args.logs:
            from tests.postgres_harness import start_cluster

            cluster = start_cluster()
        for workers in args.workers:
            for kind in args.logs:
                log: Path | str = work / "predictions.db"
                if kind == "postgresql":
                    log = cluster.create_database(f"bench_{workers}")
                params = prepare(work, args.models, log if kind == "postgresql" else None)
                with server(params, free_port(), workers) as url:
                    load(url, script, 4, 2.0)  # warm-up: connections, first-call allocations
                    start = _logged(log)
                    runs = [load(url, script, c, args.seconds) for c in args.connections]
                    scraped.append({"log": kind, "workers": workers, **scrapes(url)})
                acknowledged = sum(r["requests"] - r["non_2xx"] for r in runs)
                logged = _logged(log) - start
                checks.append({"log": kind, "workers": workers, "acknowledged": acknowledged, "logged": logged})
                levels += [{"service": "evergreen", "log": kind, "workers": workers, **r} for r in runs]
            with bare(args.models.resolve() / "model.onnx", free_port(), workers) as url:
                load(url, script, 4, 2.0)
                levels += [
                    {"service": "bare", "workers": workers, **load(url, script, c, args.seconds)}
                    for c in args.connections
                ]
        scoring = batch(prepare(work, args.models), work, args.rows) if args.rows else None
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_generator": "wrk -t1 (one thread), single-record POST /predict, keep-alive, closed loop",
        "seconds_per_level": args.seconds,
        "service": levels,
        # every answer wrk counted as 2xx must be in the log; the log may hold more (answers in flight at the end)
        "log_check": checks,
        "metrics_scrape": scraped,
        "batch": scoring,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(_table(levels))
    for check in checks:
        verdict = "ok" if check["logged"] >= check["acknowledged"] else "MISSING ROWS"
        counts = f"{check['acknowledged']} acknowledged, {check['logged']} logged"
        print(f"{check['log']} log, {check['workers']} worker(s): {counts}: {verdict}")
    for scrape in scraped:
        print(
            f"/metrics, {scrape['log']} log, {scrape['workers']} worker(s): p50 {scrape['p50_ms']} ms, "
            f"p99 {scrape['p99_ms']} ms, {scrape['bytes']:,} bytes"
        )
    if scoring:
        print(
            f"batch: {scoring['rows']} rows, {scoring['library_rows_per_s']:,} rows/s (library), "
            f"{scoring['command_rows_per_s']:,} rows/s (command, {scoring['command_s']} s)"
        )
    print(f"results: {args.out}")


def _table(levels: list[dict[str, Any]]) -> str:
    """Evergreen beside the bare ceiling, per worker count and connection count."""
    lines = [
        "| log | workers | connections | Evergreen req/s | bare req/s | share | Evergreen p50 / p99 ms "
        "| bare p50 / p99 ms | load average |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    bare = {(r["workers"], r["connections"]): r for r in levels if r["service"] == "bare"}
    for r in (r for r in levels if r["service"] == "evergreen"):
        b = bare[(r["workers"], r["connections"])]
        share = r["requests_per_s"] / b["requests_per_s"]
        lines.append(
            f"| {r['log']} | {r['workers']} | {r['connections']} | {r['requests_per_s']:,.0f} "
            f"| {b['requests_per_s']:,.0f} "
            f"| {share:.0%} | {r['p50_ms']} / {r['p99_ms']} | {b['p50_ms']} / {b['p99_ms']} "
            f"| {r['load_average'][1]} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
