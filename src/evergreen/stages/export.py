"""Stage `export`: `models/model.pt` into `models/model.onnx`, gated on parity over the test split with the model's
own framework (torch eager for a network, LightGBM's predict for trees, both for their ensemble).

Also writes the input signature, a model card (params, data hashes, metrics, code version) and
`metrics/export.json` (parity and onnxruntime vs torch latency, measured in the same run).

With `model.type: auto`, the candidates the train stage did not choose are exported too, into
`models/exported/<family>/` (`model.onnx`, `signature.json`), their parity in `models/exported/index.json`:
when the chosen one fails the promotion gate, the promote stage judges the next candidate on valid, and it must be
a graph that already passed parity. A candidate whose graph fails parity is listed with its difference, never
promoted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from evergreen.artifacts.card import ModelCard
from evergreen.artifacts.reports import EvalReport, ExportReport
from evergreen.data import io
from evergreen.data.parquet_rows import ParquetRows
from evergreen.data.split import split_pieces
from evergreen.errors import ModelError, ParityFailed
from evergreen.model.candidates import Candidate, NetworkCandidate, load_candidate
from evergreen.model.export import benchmark, check_parity, onnx_session, parity, signature
from evergreen.model.preprocess import check_frame
from evergreen.provenance import code_version, read_data_hashes
from evergreen.workspace import Workspace

Matrices = Callable[[], Iterator[np.ndarray]]  # the test split's input matrix, one record batch at a time


def _native(model: Candidate) -> Any:
    """What the graph is held to: torch eager for a network, other candidates' own framework's predictions."""
    return model.net if isinstance(model, NetworkCandidate) else model.predict_matrix


def checked_graph(model: Candidate, matrices: Matrices, tolerance: float, opset: int) -> tuple[bytes, float, float]:
    """The candidate's ONNX graph, its max |difference| from the model's own framework over the test split's
    input `matrices` (one record batch at a time), and the limit it was held to; raises `ParityFailed` past it."""
    graph = model.to_onnx(opset)
    scale = model.prep.target_scale if model.prep.task == "regression" else 1.0
    session, native = onnx_session(graph), _native(model)
    max_abs_diff = max((parity(session, native, x) for x in matrices()), default=0.0)
    check_parity(max_abs_diff, tolerance, scale)
    return graph, max_abs_diff, tolerance * scale


def export_others(ws: Workspace, matrices: Matrices) -> None:
    """`models/exported/`: every candidate the train stage listed but did not choose, as a graph that passed
    parity and its signature; `index.json` lists them in the train stage's order (best on valid first)."""
    cfg = ws.params.export
    shutil.rmtree(ws.exported, ignore_errors=True)
    ws.exported.mkdir(parents=True)
    index = ws.candidates / "index.json"
    listed = io.read_json(index, ModelError, subject="the list of candidates is ") if index.exists() else {}
    rows = []
    for entry in (e for e in listed.get("candidates", []) if not e["chosen"]):
        candidate = load_candidate(ws.models_dir / entry["file"])
        try:
            graph, diff, limit = checked_graph(candidate, matrices, cfg.parity_tolerance, cfg.opset)
        except ParityFailed as exc:
            rows.append({"family": entry["family"], "valid": entry["valid"], "parity": str(exc)})
            continue
        folder = ws.exported / entry["family"]
        folder.mkdir()
        (folder / ws.onnx_model.name).write_bytes(graph)
        io.write_json(signature(candidate), folder / ws.signature.name)
        rows.append({"family": entry["family"], "valid": entry["valid"], "file": entry["file"],
                     "folder": entry["family"], "parity_max_abs_diff": diff, "parity_limit": limit})  # fmt: skip
    io.write_json({"metric": ws.params.promote.metric_for(ws.params.data.task), "candidates": rows},
                  ws.exported / "index.json")  # fmt: skip


def run(ws: Workspace) -> None:
    cfg = ws.params.export
    model = load_candidate(ws.model)
    test = ParquetRows.of(split_pieces(ws, "test"))
    check_frame(test.lazy(), model.prep.input_columns, "test")

    def matrices() -> Iterator[np.ndarray]:  # the test split is never read whole
        return (model.prep.matrix(rows) for rows in test.read())

    graph, max_abs_diff, limit = checked_graph(model, matrices, cfg.parity_tolerance, cfg.opset)  # raises first
    first = next(matrices())  # the benchmark repeats the first rows up to its batch size
    timings = benchmark(onnx_session(graph), _native(model), first, cfg.latency_runs, cfg.throughput_batch)
    report = ExportReport(
        parity_max_abs_diff=max_abs_diff,
        parity_tolerance=cfg.parity_tolerance,
        parity_limit=limit,
        parity_rows=test.total,
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
    export_others(ws, matrices)
    ort_ms, torch_ms = report.onnxruntime.latency_p50_ms, report.torch.latency_p50_ms
    framework = "torch" if isinstance(model, NetworkCandidate) else model.family
    print(
        f"export: {model.family}, parity max |diff| {max_abs_diff:.3g} (limit {report.parity_limit:.3g}); "
        f"batch-1 p50 onnxruntime {ort_ms:.3f} ms, {framework} {torch_ms:.3f} ms"
    )
