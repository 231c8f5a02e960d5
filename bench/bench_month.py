"""A month unattended, compressed (issue 19, part 6): the real service under steady load while the scheduled
cycle runs again and again, with retention on the log and the registry.

    python bench/bench_month.py                       # 30 cycles, 5 requests/s
    python bench/bench_month.py --cycles 20 --rate 4 --out month.json

Setup (`tests/service_harness.build_project`): a tiny model trained, evaluated and exported by the real stages,
champion v1, each version registered with a reference sample; `promote.keep_versions` and
`serve.log_retention_days` set. `evergreen serve` runs as its own process, and one client thread sends
1-3 records per request at `--rate` requests per second and labels every fifth answer through /feedback.

Each cycle is one "day" of the month, in this order:
1. retention: the log forgets what was scored more than `--retention-cycles` cycles ago (the cycle's wall-clock
   start stands for its day, so a day is a few seconds here);
2. monitor: `monitor_once`, the real drift check and policy, which records one decision;
3. retrain: a challenger is the champion's graph with its output scaled (x 1.001 on odd cycles: a model as good
   as the champion; x 1.5 on even ones: a worse one), registered with its card and reference. This stands in
   for `dvc repro` on new data, which would cost minutes per cycle and measure training, not the month;
4. gate: test RMSE of challenger and champion through onnxruntime, the challenger passing within 2%;
5. promote (`Registry.promote`, pruning to `keep_versions` after it) or discard.

Reported (JSON): failed requests (should be 0); the server's RSS (all its processes) after each cycle, first
after warm-up vs last (flat within 10%); log rows and registry folders still holding files after each cycle
(bounded by retention); decisions recorded per cycle (one each); promotions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import polars as pl
import psutil
import yaml
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evergreen.inference import load_version, predict  # noqa: E402
from evergreen.monitoring.monitor import monitor_once  # noqa: E402
from evergreen.prediction_log.read import read_log  # noqa: E402
from evergreen.prediction_log.retention import delete_older_than  # noqa: E402
from evergreen.registry.store import Registry  # noqa: E402
from evergreen.workspace import Workspace  # noqa: E402
from tests.service_harness import AUTH, build_project, running_server  # noqa: E402

GOOD, BAD = 1.001, 1.5  # output scales of the challengers: as good as the champion, clearly worse


def _scaled(graph: Path, out: Path, factor: float) -> None:
    """The graph with its output times `factor`: another model with other bytes, for the gate to judge."""
    model = onnx.load(str(graph))
    [output] = model.graph.output
    tag = len(model.graph.node)  # the champion may be a scaled graph already: new names each time
    inner, scale = f"{output.name}_unscaled_{tag}", f"scale_{tag}"
    for node in model.graph.node:
        node.output[:] = [inner if name == output.name else name for name in node.output]
    model.graph.initializer.append(helper.make_tensor(scale, onnx.TensorProto.FLOAT, [], [factor]))
    model.graph.node.append(helper.make_node("Mul", [inner, scale], [output.name]))
    onnx.save(model, str(out))


class Load:
    """One client thread at a steady rate: 1-3 records per request, every fifth answer labelled."""

    def __init__(self, url: str, records: list[dict[str, Any]], rate: float):
        self.url, self.records, self.period = url, records, 1.0 / rate
        self.sent = self.failed = self.labelled = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(0)
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=30) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                batch = rng.sample(self.records, rng.randint(1, 3))
                try:
                    answer = client.post("/predict", json={"records": batch})
                    ok = answer.status_code == 200
                    if ok and self.sent % 5 == 0:
                        labels = [float(r["hr"]) for r in batch]
                        body = {"request_id": answer.json()["request_id"], "labels": labels}
                        self.labelled += client.post("/feedback", json=body).status_code == 200
                except httpx.HTTPError as exc:
                    ok, answer = False, exc
                self.sent += 1
                if not ok:
                    self.failed += 1
                    self.failures.append(str(getattr(answer, "text", answer))[:200])
                next_at += self.period
                time.sleep(max(0.0, next_at - time.monotonic()))


def _rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def _rmse(folder: Path, version: str, test: pl.DataFrame, target: str) -> float:
    output = predict(load_version(folder, version, threads=1), test)
    return float(np.sqrt(np.mean((output - test[target].to_numpy()) ** 2)))


def _register(registry: Registry, graph: Path, signature: Path, reference: Path, card: dict[str, Any]) -> str:
    files = {"model.onnx": graph, "signature.json": signature, "reference.parquet": reference}
    return registry.add(files, card)


def _configure(root: Path, keep: int, cycles: int) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params.setdefault("promote", {})["keep_versions"] = keep
    # a generous bound: retention is done by the cycle (compressed days), not by wall-clock days
    params.setdefault("serve", {})["log_retention_days"] = cycles + 1
    params["monitor"] = {"window": {"last_rows": 500}, "policy": {"min_rows": 20}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_month(root: Path, cycles: int, rate: float, keep: int, retention_cycles: int, warmup: int) -> dict[str, Any]:
    """Build the project, serve it under load, run `cycles` cycles; the figures of the month."""
    project = build_project(root)
    _configure(root, keep, cycles)
    ws = Workspace.open(root)
    target = ws.params.data.target.name
    registry = Registry(ws.registry, keep_versions=keep)
    reference = root / "reference.parquet"
    project.test.with_columns(prediction=pl.Series(project.evaluated)).write_parquet(reference)
    for version in registry.versions():  # the harness registered no reference sample
        folder = registry.path(version)
        folder.joinpath("reference.parquet").write_bytes(reference.read_bytes())
    card = registry.card("v1")
    signature = root / "signature.json"  # every challenger has the champion's inputs
    signature.write_bytes((registry.path("v1") / "signature.json").read_bytes())
    figures: dict[str, list[Any]] = {"rss_mb": [], "log_rows": [], "versions_with_files": [], "decisions": []}
    promotions = discards = 0
    starts: list[dt.datetime] = []
    with running_server(root) as (url, process):
        load = Load(url, project.records(), rate)
        load.thread.start()
        try:
            for cycle in range(cycles):
                starts.append(dt.datetime.now(dt.UTC))
                if cycle >= retention_cycles:  # the log keeps `retention_cycles` "days"
                    now = dt.datetime.now(dt.UTC)
                    days = (now - starts[cycle - retention_cycles]).total_seconds() / 86400
                    delete_older_than(ws.prediction_log_location, days, now=now)
                decisions_before = _lines(ws.decisions)
                decision = monitor_once(ws)
                champion = registry.champion() or "v1"
                factor = GOOD if cycle % 2 else BAD
                graph = root / f"challenger-{cycle}.onnx"
                _scaled(registry.path(champion) / "model.onnx", graph, factor)
                challenger = _register(registry, graph, signature, reference, card)
                graph.unlink()
                ours = _rmse(registry.path(challenger), challenger, project.test, target)
                theirs = _rmse(registry.path(champion), champion, project.test, target)
                if ours <= theirs * 1.02:
                    registry.promote(challenger, f"month cycle {cycle}: rmse {ours:.4g} vs {theirs:.4g}")
                    promotions += 1
                else:
                    discards += 1
                time.sleep(0.5)  # the service picks up the new champion between cycles
                figures["rss_mb"].append(round(_rss_mb(process.pid), 1))
                figures["log_rows"].append(read_log(ws.prediction_log_location).height)
                kept = [v for v in registry.versions() if (registry.root / v / "model.onnx").exists()]
                figures["versions_with_files"].append(len(kept))
                figures["decisions"].append(_lines(ws.decisions) - decisions_before)
                print(
                    f"cycle {cycle + 1}/{cycles}: {decision.action}; champion {registry.champion()}; "
                    f"rss {figures['rss_mb'][-1]} MB; log {figures['log_rows'][-1]} rows; "
                    f"{len(kept)} versions with files; {load.sent} requests, {load.failed} failed",
                    flush=True,
                )
        finally:
            load.stop.set()
            load.thread.join(60)
    rss = figures["rss_mb"]
    first, last = rss[min(warmup, len(rss) - 1)], rss[-1]
    return {
        "cycles": cycles,
        "requests": load.sent,
        "failed_requests": load.failed,
        "failures": load.failures[:5],
        "labelled": load.labelled,
        "promotions": promotions,
        "discards": discards,
        "rss_after_warmup_mb": first,
        "rss_last_mb": last,
        "rss_change": round(last / first - 1, 4),
        "max_log_rows": max(figures["log_rows"]),
        "max_versions_with_files": max(figures["versions_with_files"]),
        "registry_folders": len(registry.versions()),
        "keep_versions": keep,
        **figures,
    }


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second, one client")
    parser.add_argument("--keep-versions", type=int, default=3)
    parser.add_argument("--retention-cycles", type=int, default=5, help="cycles (days) the log keeps")
    parser.add_argument("--warmup", type=int, default=3, help="cycles before the first RSS figure compared")
    parser.add_argument("--root", type=Path, default=None, help="a fresh folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="evergreen-month-"))
    root.mkdir(parents=True, exist_ok=True)
    result = run_month(root, args.cycles, args.rate, args.keep_versions, args.retention_cycles, args.warmup)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
