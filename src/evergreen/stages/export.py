"""Stage `export`: `models/model.pt` into `models/model.onnx`, gated on parity with torch over the test split.

Also writes the input signature, a model card (params, data hashes, metrics, code version) and
`metrics/export.json` (parity and onnxruntime vs torch latency, measured in the same run).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from evergreen.config import Params
from evergreen.data import io, paths
from evergreen.model.export import benchmark, check_parity, export_onnx, onnx_session, parity, signature
from evergreen.model.network import TabularNet
from evergreen.model.preprocess import check_frame, feature_matrix
from evergreen.stages.train import read_split


def data_hashes(lock: dict[str, Any]) -> dict[str, str]:
    """The md5 of every data dependency of the `train` stage recorded in a parsed dvc.lock."""
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    entries = stages.get("train", {}).get("deps", []) or stages.get("split", {}).get("outs", [])
    return {e["path"]: e["md5"] for e in entries if str(e.get("path", "")).startswith("data/") and "md5" in e}


def code_version() -> dict[str, str | None]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None  # not a git checkout, or no commit yet
    try:
        version = metadata.version("evergreen-ml")
    except metadata.PackageNotFoundError:
        version = None
    return {"git_commit": commit, "package_version": version}


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def run(params: Params) -> None:
    cfg = params.export
    model = TabularNet.load(paths.MODEL)
    test = read_split("test")
    check_frame(test, model.prep.features, "test")
    graph = export_onnx(model, cfg.opset)
    session = onnx_session(graph)
    x = feature_matrix(test, model.prep.features)
    scale = model.prep.target_scale if model.prep.task == "regression" else 1.0
    max_abs_diff = parity(session, model, x)
    check_parity(max_abs_diff, cfg.parity_tolerance, scale)  # raises before anything is written

    timings = benchmark(session, model, x, cfg.latency_runs, cfg.throughput_batch)
    report = {
        "parity_max_abs_diff": max_abs_diff,
        "parity_tolerance": cfg.parity_tolerance,
        "parity_limit": cfg.parity_tolerance * scale,
        "parity_rows": len(x),
        "opset": cfg.opset,
        **timings,
    }
    lock = yaml.safe_load(paths.DVC_LOCK.read_text()) if paths.DVC_LOCK.exists() else {}
    card = {
        "task": model.prep.task,
        "target": model.prep.target,
        "onnx_sha256": hashlib.sha256(graph).hexdigest(),
        "params": model.params,
        "data": data_hashes(lock),
        "metrics": _read_json(paths.EVAL_METRICS),
        "train_metrics": _read_json(paths.TRAIN_METRICS),
        "code": code_version(),
    }
    paths.MODEL_DIR.mkdir(parents=True, exist_ok=True)
    paths.ONNX_MODEL.write_bytes(graph)
    io.write_json(signature(model), paths.SIGNATURE)
    io.write_json(card, paths.MODEL_CARD)
    io.write_json(report, paths.EXPORT_METRICS)
    ort_ms, torch_ms = report["onnxruntime"]["latency_p50_ms"], report["torch"]["latency_p50_ms"]
    print(
        f"export: parity max |diff| {max_abs_diff:.3g} (limit {report['parity_limit']:.3g}); "
        f"batch-1 p50 onnxruntime {ort_ms:.3f} ms, torch {torch_ms:.3f} ms"
    )
