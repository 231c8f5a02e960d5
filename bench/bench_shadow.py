"""The cost of a shadow model on the prediction service (issue 12, item 3), beside the bare ceiling.

    python bench/bench_shadow.py                        # 10 s per level, 1 and 2 workers
    python bench/bench_shadow.py --seconds 5 --workers 1

In one run, with `bench/service_load.py`'s setup and load generator (shared with `bench_service.py`): the exported bike
model (`dvc repro`) is the champion v1 of two fresh registries; in the second, v2 (the same graph with other
bytes: a retrained model of the same features, so the service reuses the champion's input matrix for it) is
in the shadow. For each worker count, three servers run side by side: `evergreen serve` without a shadow,
`evergreen serve` with it (every request also scored by v2 and its answer logged), and the bare ceiling
(`bench/bare_service.py`). `wrk` drives them in turn at 1, 8 and 32 connections, `--repeats` rounds, so that
the three see the same moments of a machine others share; each figure is the median of its rounds (req/s,
p50, p99). Afterwards the shadow's answers in the log must cover every acknowledged request of the shadow runs.

Then, in this process (no HTTP, no wrk), the CPU time the service spends per request (all its threads: event
loop, log writer, shadow scorer) without and with the shadow, 32 requests at a time through
`PredictionService.predict_async`, alternating `--repeats` times: on a machine others share, CPU time per
request varies less than requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
import service_load as service

from tests.harness import free_port  # on the path once service_load is imported

ROOT = service.ROOT


def _shadow_version(params: Path, models: Path, work: Path) -> str:
    """Register the exported graph with other bytes (its doc string) as the shadow's version; not set yet."""
    from evergreen.registry.store import Registry
    from evergreen.workspace import Workspace

    graph = onnx.load(str(models / "model.onnx"))
    graph.doc_string = "the same model, other bytes: a shadow for the benchmark"
    onnx.save(graph, str(work / "shadow.onnx"))
    registry = Registry(Workspace.open(params.parent, params).registry)
    files = {"model.onnx": work / "shadow.onnx", "signature.json": models / "signature.json"}
    return registry.add(files, json.loads((models / "model_card.json").read_text()))


def _count(log: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(log)) as conn:
        try:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:  # no shadow table yet
            return 0


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One level's rounds: the median of each figure, the rounds' req/s kept, the requests summed."""
    figures = {k: round(statistics.median(r[k] for r in runs), 2) for k in ("requests_per_s", "p50_ms", "p99_ms")}
    return {
        "connections": runs[0]["connections"],
        **figures,
        "rounds_requests_per_s": [r["requests_per_s"] for r in runs],
        "requests": sum(r["requests"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "load_average": [r["load_average"][1] for r in runs],
    }


def _side_by_side(
    targets: dict[str, str], script: Path, connections: list[int], seconds: float, repeats: int
) -> dict[str, list[dict[str, Any]]]:
    """wrk on each target in turn, level by level, `repeats` rounds; per target the median of each level."""
    for url in targets.values():
        service.load(url, script, 4, 2.0)  # warm-up: connections, first-call allocations
    rounds: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(repeats):
        for c in connections:
            for name, url in targets.items():
                rounds.setdefault((name, c), []).append(service.load(url, script, c, seconds))
    return {name: [_median(rounds[(name, c)]) for c in connections] for name in targets}


def cpu_per_request(params: Path, shadow: str, bodies: list[bytes], repeats: int) -> dict[str, list[float]]:
    """Process CPU microseconds per request through `PredictionService.predict_async`, 32 at a time, without and
    with the shadow, alternating `repeats` times."""
    from evergreen.registry.store import Registry
    from evergreen.serving.service import PredictionService
    from evergreen.workspace import Workspace

    ws = Workspace.open(params.parent, params)
    registry = Registry(ws.registry)
    found: dict[str, list[float]] = {"evergreen": [], "evergreen+shadow": []}

    async def drive(service: PredictionService, requests: int, concurrency: int = 32) -> None:
        async def client(k: int) -> None:
            for i in range(requests // concurrency):
                await service.predict_async(bodies[(k * 131 + i) % len(bodies)])

        await asyncio.gather(*(client(k) for k in range(concurrency)))

    with PredictionService(ws) as service:
        asyncio.run(drive(service, 640))  # warm-up
        for _ in range(repeats):
            for name in found:
                if name == "evergreen+shadow":
                    registry.set_shadow(shadow, reason="benchmark")
                service.champion.shadow.refresh(service.champion.model.version)
                start = time.process_time()
                asyncio.run(drive(service, 3200))
                service.shadow_scorer.flush()  # its work counts
                found[name].append(round(1e6 * (time.process_time() - start) / 3200, 1))
                if name == "evergreen+shadow":
                    registry.end_shadow(shadow, outcome="discarded", reason="benchmark")
                    service.champion.shadow.refresh(service.champion.model.version)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per level")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shadow.json")
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="the exported bike model's folder")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each measurement (medians are kept)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    from evergreen.registry.store import Registry

    work = Path(tempfile.mkdtemp(prefix="evergreen-bench-shadow-"))
    levels: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    try:
        for project in ("alone", "shadow"):
            (work / project).mkdir()
        alone = service.prepare(work / "alone", args.models)
        params = service.prepare(work / "shadow", args.models)
        shadow = _shadow_version(params, args.models, work)
        Registry(work / "shadow" / "registry").set_shadow(shadow, reason="benchmark")
        log = work / "shadow" / "predictions.db"
        records = service.records(500)
        script = service.lua_script(work / "post.lua", records)
        for workers in args.workers:
            with contextlib.ExitStack() as servers:
                targets = {
                    "evergreen": servers.enter_context(service.server(alone, free_port(), workers)),
                    "evergreen+shadow": servers.enter_context(service.server(params, free_port(), workers)),
                    "bare": servers.enter_context(
                        service.bare(args.models.resolve() / "model.onnx", free_port(), workers)
                    ),
                }
                before = _count(log, "shadow_predictions")
                found = _side_by_side(targets, script, args.connections, args.seconds, args.repeats)
            # after the servers stopped: each scorer logged what was pending when it closed
            shadowed = _count(log, "shadow_predictions") - before
            acknowledged = sum(r["requests"] - r["non_2xx"] for r in found["evergreen+shadow"])
            checks.append({"workers": workers, "acknowledged": acknowledged, "shadow_rows": shadowed})
            levels += [{"service": name, "workers": workers, **r} for name, runs in found.items() for r in runs]
        bodies = [json.dumps({"records": [r]}).encode() for r in records]
        Registry(work / "shadow" / "registry").end_shadow(shadow, outcome="discarded", reason="benchmark done")
        cpu = cpu_per_request(params, shadow, bodies, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_generator": "wrk -t1 (one thread), single-record POST /predict, keep-alive, closed loop",
        "seconds_per_level": args.seconds,
        "rounds": args.repeats,
        "service": levels,
        # every request acknowledged in the shadow run must have a shadow answer in the log
        "shadow_check": checks,
        "cpu_us_per_request": cpu,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(_table(levels))
    for check in checks:
        verdict = "ok" if check["shadow_rows"] >= check["acknowledged"] else "MISSING SHADOW ROWS"
        counts = f"{check['acknowledged']} acknowledged, {check['shadow_rows']} shadow rows"
        print(f"{check['workers']} worker(s): {counts}: {verdict}")
    for name, values in cpu.items():
        print(f"{name}: {', '.join(f'{v:.0f}' for v in values)} CPU us per request (in process, 32 at a time)")
    print(f"results: {args.out}")


def _table(levels: list[dict[str, Any]]) -> str:
    """Without and with a shadow, beside the bare ceiling, per worker count and connection count."""
    lines = [
        "| workers | connections | no shadow req/s | shadow req/s | bare req/s | shadow / no shadow | shadow / bare "
        "| no shadow p50 / p99 ms | shadow p50 / p99 ms | bare p50 / p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by = {(r["service"], r["workers"], r["connections"]): r for r in levels}
    for alone in (r for r in levels if r["service"] == "evergreen"):
        key = (alone["workers"], alone["connections"])
        shadow, bare = by[("evergreen+shadow", *key)], by[("bare", *key)]
        lines.append(
            f"| {key[0]} | {key[1]} | {alone['requests_per_s']:,.0f} | {shadow['requests_per_s']:,.0f} "
            f"| {bare['requests_per_s']:,.0f} | {shadow['requests_per_s'] / alone['requests_per_s']:.0%} "
            f"| {shadow['requests_per_s'] / bare['requests_per_s']:.0%} "
            f"| {alone['p50_ms']} / {alone['p99_ms']} | {shadow['p50_ms']} / {shadow['p99_ms']} "
            f"| {bare['p50_ms']} / {bare['p99_ms']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
