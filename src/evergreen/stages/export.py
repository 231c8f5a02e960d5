"""Stage `export`: `models/model.pt` into `models/model.onnx`, gated on parity over the test split with the model's
own framework (torch eager for a network, LightGBM's predict for trees, both for their ensemble).

Also writes the input signature, a model card (params, data hashes, metrics, code version) and
`metrics/export.json` (parity and onnxruntime vs torch latency, measured in the same run).
"""

from __future__ import annotations

import hashlib
import json

from evergreen.artifacts.card import ModelCard
from evergreen.artifacts.reports import EvalReport, ExportReport
from evergreen.data import io
from evergreen.data.split import read_split
from evergreen.model.candidates import NetworkCandidate, load_candidate
from evergreen.model.export import benchmark, check_parity, onnx_session, parity, signature
from evergreen.model.preprocess import check_frame
from evergreen.provenance import code_version, read_data_hashes
from evergreen.workspace import Workspace


def run(ws: Workspace) -> None:
    cfg = ws.params.export
    model = load_candidate(ws.model)
    test = read_split(ws, "test")
    check_frame(test, model.prep.input_columns, "test")
    graph = model.to_onnx(cfg.opset)
    session = onnx_session(graph)
    x = model.prep.matrix(test)
    scale = model.prep.target_scale if model.prep.task == "regression" else 1.0
    # a network is held to torch eager as before; other candidates to their own framework's predictions
    native = model.net if isinstance(model, NetworkCandidate) else model.predict_matrix
    max_abs_diff = parity(session, native, x)
    check_parity(max_abs_diff, cfg.parity_tolerance, scale)  # raises before anything is written

    timings = benchmark(session, native, x, cfg.latency_runs, cfg.throughput_batch)
    report = ExportReport(
        parity_max_abs_diff=max_abs_diff,
        parity_tolerance=cfg.parity_tolerance,
        parity_limit=cfg.parity_tolerance * scale,
        parity_rows=len(x),
        opset=cfg.opset,
        **timings,
    )
    card = ModelCard(
        task=model.prep.task,
        target=model.prep.target,
        onnx_sha256=hashlib.sha256(graph).hexdigest(),
        params=model.params,
        data=read_data_hashes(ws.dvc_lock),
        metrics=EvalReport.read_if_exists(ws.eval_metrics),
        train_metrics=json.loads(ws.train_metrics.read_text()) if ws.train_metrics.exists() else None,
        code=code_version(ws.root),
    )
    ws.models_dir.mkdir(parents=True, exist_ok=True)
    ws.onnx_model.write_bytes(graph)
    io.write_json(signature(model), ws.signature)
    card.write(ws.model_card)
    report.write(ws.export_metrics)
    ort_ms, torch_ms = report.onnxruntime.latency_p50_ms, report.torch.latency_p50_ms
    framework = "torch" if isinstance(model, NetworkCandidate) else model.family
    print(
        f"export: {model.family}, parity max |diff| {max_abs_diff:.3g} (limit {report.parity_limit:.3g}); "
        f"batch-1 p50 onnxruntime {ort_ms:.3f} ms, {framework} {torch_ms:.3f} ms"
    )
