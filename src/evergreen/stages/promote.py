"""Stage `promote`: gate the freshly exported model (challenger) against the champion, and promote it.

Both models score the same frozen evaluation rows (the test split). A promoted challenger becomes a new registry
version (ONNX graph, signature, card and a reference sample of its training data for monitoring) and then the
champion, atomically. The decision and its reasons go to `metrics/promotion.json` either way.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from evergreen.config import Params
from evergreen.data import io, paths
from evergreen.data.schema import EVENT_TIME
from evergreen.registry.gate import PRIMARY, compare, decide, per_row_loss
from evergreen.registry.store import Registry
from evergreen.serving.model import ServingModel, load_version, predict, predicted_labels
from evergreen.stages.export import code_version


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def reference_sample(train: pl.DataFrame, model: ServingModel, rows: int, seed: int) -> pl.DataFrame:
    """A sample of the training rows with the model's predictions: monitoring's reference window."""
    sample = train.sample(n=min(rows, train.height), seed=seed, shuffle=True)
    if EVENT_TIME in sample.columns:
        sample = sample.sort(EVENT_TIME)
    # the same form the prediction log keeps: values (regression) or class labels (classification)
    return sample.with_columns(pl.Series("prediction", predicted_labels(model, predict(model, sample))))


def _same_graph(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def run(params: Params) -> None:
    cfg = params.promote
    target = params.data.target.name
    registry = Registry(cfg.registry_dir)
    test = pl.read_parquet(paths.split_path("test"))
    challenger = load_version(paths.MODEL_DIR, "challenger")
    metric, _ = PRIMARY[challenger.task]
    actual = test[target].to_numpy()
    challenger_loss = per_row_loss(challenger.task, actual, predict(challenger, test), challenger.classes)

    champion = registry.champion()
    if champion is not None and _same_graph(paths.ONNX_MODEL, registry.path(champion) / "model.onnx"):
        # rerunning the stage on an unchanged model must not mint a new version of the same graph
        print(f"promote: the challenger is byte-identical to champion {champion}; nothing to do")
        io.write_json(
            {
                "promoted": False,
                "version": None,
                "champion_before": champion,
                "champion_after": champion,
                "reasons": [f"identical to champion {champion}"],
            },
            paths.PROMOTION_METRICS,
        )
        return
    comparison = None
    if champion is not None:
        incumbent = load_version(registry.path(champion), champion)
        champion_loss = per_row_loss(incumbent.task, actual, predict(incumbent, test), incumbent.classes)
        comparison = compare(
            challenger.task, challenger_loss, champion_loss, cfg.bootstrap_samples, cfg.confidence, cfg.seed
        )

    evaluation, export = _read(paths.EVAL_METRICS), _read(paths.EXPORT_METRICS)
    reports = Path(params.validation.reports_dir)
    decision = decide(
        data_suites_passed={s: _read(reports / f"{s}.json")["critical_success"] for s in ("raw", "clean")},
        parity_diff=export["parity_max_abs_diff"],
        parity_limit=export["parity_limit"],
        metric=metric,
        model_value=evaluation["model"][metric],
        baseline_name=cfg.baseline,
        baseline_value=evaluation["baselines"][cfg.baseline][metric],
        baseline_margin=cfg.baseline_margin,
        comparison=comparison,
        champion_margin=cfg.champion_margin,
    )

    version = None
    if decision.promote:
        train = pl.read_parquet(paths.split_path("train"))
        card = {**_read(paths.MODEL_CARD), "gate": decision.to_dict(), "code": code_version()}
        with tempfile.TemporaryDirectory() as tmp:
            reference = Path(tmp) / "reference.parquet"
            reference_sample(train, challenger, cfg.reference_rows, cfg.seed).write_parquet(reference)
            files = {"model.onnx": paths.ONNX_MODEL, "signature.json": paths.SIGNATURE, "reference.parquet": reference}
            version = registry.add(files, card)
        registry.promote(version, reason="; ".join(decision.reasons))

    io.write_json(
        {
            "promoted": decision.promote,
            "version": version,
            "champion_before": champion,
            "champion_after": registry.champion(),
            **decision.to_dict(),
        },
        paths.PROMOTION_METRICS,
    )
    verdict = f"promoted as {version}" if decision.promote else "not promoted"
    print(f"promote: challenger {verdict}; champion is {registry.champion()}")
    for reason in decision.reasons:
        print(f"  {reason}")
