"""Benchmark the prediction service and batch scoring (issue 5).

    python bench/bench_service.py                    # 10 s per concurrency level, 200k rows batch
    python bench/bench_service.py --seconds 3 --rows 100000

What it does:
1. Copies the exported model (`models/model.onnx`, `models/signature.json`, `models/model_card.json`, from
   `dvc repro`) into a fresh registry in a temporary folder and promotes it; the params are the project's,
   with the prediction log in the temporary folder.
2. Starts the real service (`evergreen serve`, uvicorn, one process) on a free loopback port, with an API
   token set, and drives it from load-generator processes on the same machine: single-record `POST /predict`
   requests over keep-alive connections, closed loop, at 1, 8 and 32 concurrent clients. Latency is the
   client's wall time per request (p50, p99); throughput is acknowledged requests per second. Every request
   is committed to the prediction log (SQLite WAL, synchronous=FULL) before its answer is sent.
3. Scales the bundled bike data to `--rows` rows (CSV) and times `evergreen predict` on it end to end (the
   command, including Python start-up) and the library call alone (`rows/s` as the command reports it).

The load generator shares the CPUs with the server: on a small machine it costs the server cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.harness import free_port  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "bench-token"
FEATURES_FROM = ROOT / "data" / "source" / "bike-sharing" / "hour.csv"


def _prepare(work: Path) -> Path:
    """A registry holding the exported model as champion, and params pointing at it; returns the params."""
    sys.path.insert(0, str(ROOT / "src"))
    from evergreen.registry.store import Registry

    models = ROOT / "models"
    missing = [n for n in ("model.onnx", "signature.json", "model_card.json") if not (models / n).exists()]
    if missing:
        raise SystemExit(f"models/ lacks {', '.join(missing)}: run `dvc repro export` first")
    registry = Registry(work / "registry")
    files = {n: models / n for n in ("model.onnx", "signature.json")}
    version = registry.add(files, json.loads((models / "model_card.json").read_text()))
    registry.promote(version, "benchmark")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.setdefault("promote", {})["registry_dir"] = str(work / "registry")
    params.setdefault("serve", {})["log_path"] = str(work / "predictions.db")
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@contextlib.contextmanager
def _server(params: Path, port: int) -> Iterator[str]:
    env = {**os.environ, "EVERGREEN_API_TOKEN": TOKEN}
    process = subprocess.Popen(
        [str(BIN / "evergreen"), "serve", "--params", str(params), "--port", str(port)],
        cwd=params.parent,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if process.poll() is not None:
                raise SystemExit(f"the server exited with {process.returncode}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _records(n: int) -> list[dict[str, Any]]:
    """`n` rows of the bike data as request records (rows with dirt the service would refuse are skipped)."""
    ints = ["instant", "season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit"]
    floats = ["temp", "atemp", "hum", "windspeed"]
    frame = pl.read_csv(FEATURES_FROM, infer_schema=False).select("dteday", *ints, *floats)
    frame = frame.with_columns(pl.all().str.strip_chars())
    typed = frame.with_columns(
        *(pl.col(c).cast(pl.Int64, strict=False) for c in ints),
        *(pl.col(c).cast(pl.Float64, strict=False) for c in floats),
    )
    return typed.drop_nulls().head(n).to_dicts()


def _client_process(url: str, threads: int, seconds: float, start_at: float, out: Any) -> None:
    """One load-generator process: `threads` closed-loop clients; sends back its latencies in seconds."""
    records = _records(2000)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def run(k: int) -> None:
        mine: list[float] = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
            i = k * 97
            while time.time() < start_at:
                time.sleep(0.001)
            stop = start_at + seconds
            while time.time() < stop:
                body = {"records": [records[i % len(records)]]}
                t0 = time.perf_counter()
                response = client.post("/predict", json=body)
                mine.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    with lock:
                        errors[0] += 1
                i += 1
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    out.put((latencies, errors[0]))


def load(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """Closed-loop single-record requests from `clients` concurrent clients for `seconds`."""
    processes = 1 if clients == 1 else 2
    queue: mp.Queue = mp.Queue()
    start_at = time.time() + 2.0  # every process starts sending at once, after its imports
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    workers = [mp.Process(target=_client_process, args=(url, n, seconds, start_at, queue)) for n in shares]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    errors = 0
    for _ in workers:
        part, failed = queue.get()
        latencies += part
        errors += failed
    for worker in workers:
        worker.join()
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rows", type=int, default=200_000, help="rows for batch scoring")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="evergreen-bench-service-"))
    try:
        params = _prepare(work)
        with _server(params, free_port()) as url:
            warm_up = load(url, 4, 2.0)  # connections, first-call allocations
            levels = [load(url, clients, args.seconds) for clients in args.clients]
        with contextlib.closing(sqlite3.connect(work / "predictions.db")) as conn:
            logged = conn.execute("SELECT count(*) FROM predictions").fetchone()[0]
        scoring = batch(params, work, args.rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "seconds_per_level": args.seconds,
        "service": levels,
        # every acknowledged single-record request, warm-up included, is one row of the log
        "acknowledged": warm_up["requests"] - warm_up["errors"] + sum(r["requests"] - r["errors"] for r in levels),
        "rows_logged": logged,
        "batch": scoring,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("| clients | requests/s | p50 ms | p99 ms | requests | errors |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in levels:
        cells = [r[k] for k in ("clients", "requests_per_s", "p50_ms", "p99_ms", "requests", "errors")]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(
        f"batch: {scoring['rows']} rows, {scoring['library_rows_per_s']:,} rows/s (library), "
        f"{scoring['command_rows_per_s']:,} rows/s (command, {scoring['command_s']} s)"
    )
    print(f"acknowledged requests {results['acknowledged']}, rows in the prediction log {logged}")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
