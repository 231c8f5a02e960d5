"""Benchmark the prediction service's start-up cost: import time and resident memory (issue 9.1).

    python bench/bench_service_import.py                       # this working tree, 7 fresh interpreters
    python bench/bench_service_import.py --src /tmp/old/src --src src   # two checkouts, runs interleaved

Each run is a fresh interpreter that imports `evergreen.serving.app` (timed), then builds the app on a
one-version registry (timed; this loads the ONNX session and opens the prediction log), and reports its
resident memory (VmRSS) after the import and after the app is built, and its peak (VmHWM). `import_cpu_s` is
the CPU time of the import, steadier than its wall time on a busy machine. It then serves
one `/predict` through the app (lifespan entered) to show the app works, and lists which heavy packages
ended up imported. The registry holds a hand-made linear ONNX graph over the bundled `models/signature.json`
features (the size of the graph does not matter here; what is imported does), promoted as champion; the
params are the checkout's own `params.yaml`, with the registry and the log in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "sklearn", "pandas", "scipy", "evidently", "prefect", "great_expectations", "dvc")

# runs in the fresh interpreter: argv = [params file, registry folder, log file]
CHILD = (
    f"""
HEAVY = {HEAVY!r}
"""
    + r"""
import inspect, json, sys, time

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

t0, c0 = time.perf_counter(), time.process_time()
from evergreen.serving.app import create_app
import_s, import_cpu_s = time.perf_counter() - t0, time.process_time() - c0
rss_import = status("VmRSS")

from evergreen.config import load_params
params_file, registry, log = sys.argv[1:4]
params = load_params(params_file)
params = params.model_copy(update={
    "promote": params.promote.model_copy(update={"registry_dir": registry}),
    "serve": params.serve.model_copy(update={"log_path": log}),
})
t0 = time.perf_counter()
if "workspace" in inspect.signature(create_app).parameters:
    from evergreen.workspace import Workspace
    app = create_app(Workspace(__import__("pathlib").Path(registry).parent, params))
else:
    app = create_app(params, registry, log)
app_s = time.perf_counter() - t0
rss_app = status("VmRSS")

from fastapi.testclient import TestClient
features = [c.name for c in params.data.features]
record = {c.name: (0.5 if c.type == "float" else 1) for c in params.data.features}
with TestClient(app) as client:
    answer = client.post("/predict", json={"records": [record]}, headers={"Content-Type": "application/json"})
print(json.dumps({
    "import_s": import_s, "import_cpu_s": import_cpu_s, "create_app_s": app_s,
    "rss_import_mib": rss_import, "rss_app_mib": rss_app,
    "peak_mib": status("VmHWM"), "predict_status": answer.status_code,
    "heavy_imported": [m for m in HEAVY if m in sys.modules],
}))
"""
)


def _linear_graph(n_features: int, out: Path) -> None:
    """features [N, F] float32 -> prediction [N]: a weighted sum, enough for a service to load and run."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((n_features, 1), 0.1, dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["y2"]), helper.make_node("Reshape", ["y2", "shape"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        initializer=[weights, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out))


def _registry(work: Path) -> Path:
    """A registry whose champion is a linear graph over the bundled signature's features."""
    sys.path.insert(0, str(ROOT / "src"))
    from evergreen.registry.store import Registry

    signature = ROOT / "models" / "signature.json"
    n_features = len(json.loads(signature.read_text())["input"]["columns"])
    _linear_graph(n_features, work / "model.onnx")
    registry = Registry(work / "registry")
    version = registry.add({"model.onnx": work / "model.onnx", "signature.json": signature}, {"note": "bench"})
    registry.promote(version, "bench: import cost")
    return registry.root


def measure(src: Path, registry: Path, run: int) -> dict[str, float]:
    """One fresh interpreter importing evergreen from `src` (its checkout's params.yaml)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("EVERGREEN_API_TOKEN", None)
    log = registry.parent / f"log-{abs(hash(src))}-{run}.db"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(src.parent / "params.yaml"), str(registry), str(log)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=registry.parent,
    )
    if done.returncode != 0:
        raise SystemExit(f"run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, action="append", help="a `src` folder to import evergreen from")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    sources = [p.resolve() for p in args.src or [ROOT / "src"]]
    results: dict[Path, list[dict[str, float]]] = {src: [] for src in sources}
    with tempfile.TemporaryDirectory() as tmp:
        registry = _registry(Path(tmp))
        for run in range(args.runs):  # interleaved, so a busy spell on a shared machine hits every checkout
            for src in sources:
                results[src].append(measure(src, registry, run))
    for src, runs in results.items():
        print(f"{src}: median of {args.runs} fresh interpreters")
        for key in [k for k in runs[0] if k.endswith(("_s", "_mib"))]:
            value = statistics.median(r[key] for r in runs)
            print(f"  {key:16} {value:8.3f}" if key.endswith("_s") else f"  {key:16} {value:8.1f}")
        print(f"  /predict status  {sorted({r['predict_status'] for r in runs})}")
        print(f"  heavy imported   {sorted({m for r in runs for m in r['heavy_imported']})}")


if __name__ == "__main__":
    main()
