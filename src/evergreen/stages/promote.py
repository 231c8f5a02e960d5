"""Stage `promote`: gate the freshly exported model (challenger) against the champion, and promote it.

Both models score the same frozen evaluation rows (the test split). A promoted challenger becomes a new registry
version (ONNX graph, signature, card and a reference sample of its training data for monitoring) and then the
champion, atomically. The decision and its reasons go to `metrics/promotion.json` either way.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import polars as pl

from evergreen.artifacts.card import ModelCard
from evergreen.artifacts.reports import EvalReport, ExportReport, PromotionReport
from evergreen.data.schema import EVENT_TIME
from evergreen.data.split import read_split
from evergreen.inference import ServingModel, load_version, predict, predicted_labels, servable
from evergreen.model.metrics import GATED
from evergreen.provenance import code_version
from evergreen.registry.gate import compare, decide, per_row_loss
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace


def _suite_passed(path: Path) -> bool:
    return json.loads(path.read_text())["critical_success"]  # a validation report (`validation.summary`)


def reference_sample(train: pl.DataFrame, model: ServingModel, rows: int, seed: int) -> pl.DataFrame:
    """A sample of the training rows with the model's predictions: monitoring's reference window."""
    sample = train.sample(n=min(rows, train.height), seed=seed, shuffle=True)
    if EVENT_TIME in sample.columns:
        sample = sample.sort(EVENT_TIME)
    # the same form the prediction log keeps: values (regression) or class labels (classification)
    return sample.with_columns(pl.Series("prediction", predicted_labels(model, predict(model, sample))))


def _same_graph(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def run(ws: Workspace) -> None:
    params = ws.params
    cfg = params.promote
    target = params.data.target.name
    registry = Registry(ws.registry)
    test = read_split(ws, "test")
    challenger = load_version(ws.models_dir, "challenger")
    metric = GATED[challenger.task]
    actual = test[target].to_numpy()
    challenger_loss = per_row_loss(challenger.task, actual, predict(challenger, test), challenger.classes)

    champion = registry.champion()
    if champion is not None and _same_graph(ws.onnx_model, registry.path(champion) / "model.onnx"):
        # rerunning the stage on an unchanged model must not mint a new version of the same graph
        print(f"promote: the challenger is byte-identical to champion {champion}; nothing to do")
        PromotionReport(
            promoted=False,
            version=None,
            champion_before=champion,
            champion_after=champion,
            reasons=[f"identical to champion {champion}"],
        ).write(ws.promotion_metrics)
        return
    comparison = None
    if champion is not None:
        incumbent = load_version(registry.path(champion), champion)
        champion_loss = per_row_loss(incumbent.task, actual, predict(incumbent, test), incumbent.classes)
        comparison = compare(
            challenger.task, challenger_loss, champion_loss, cfg.bootstrap_samples, cfg.confidence, cfg.seed
        )

    evaluation, export = EvalReport.read(ws.eval_metrics), ExportReport.read(ws.export_metrics)
    decision = decide(
        data_suites_passed={s: _suite_passed(ws.validation_report(s)) for s in ("raw", "clean")},
        parity_diff=export.parity_max_abs_diff,
        parity_limit=export.parity_limit,
        metric=metric,
        model_value=evaluation.model[metric],
        baseline_name=cfg.baseline,
        baseline_value=evaluation.baselines[cfg.baseline][metric],
        baseline_margin=cfg.baseline_margin,
        comparison=comparison,
        champion_margin=cfg.champion_margin,
    )

    version = None
    if decision.promote:
        train = read_split(ws, "train")
        card = ModelCard.read(ws.model_card).model_copy(update={"gate": decision, "code": code_version(ws.root)})
        with tempfile.TemporaryDirectory() as tmp:
            reference = Path(tmp) / "reference.parquet"
            reference_sample(train, challenger, cfg.reference_rows, cfg.seed).write_parquet(reference)
            files = {"model.onnx": ws.onnx_model, "signature.json": ws.signature, "reference.parquet": reference}
            version = registry.add(files, card.to_dict())
        registry.promote(version, reason="; ".join(decision.reasons), verify=servable(params.data))

    PromotionReport.from_gate(decision, version, champion, registry.champion()).write(ws.promotion_metrics)
    verdict = f"promoted as {version}" if decision.promote else "not promoted"
    print(f"promote: challenger {verdict}; champion is {registry.champion()}")
    for reason in decision.reasons:
        print(f"  {reason}")
