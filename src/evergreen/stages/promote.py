"""Stage `promote`: gate the freshly exported model (challenger) against the champion, and promote it.

Both models score the same test rows, less those the champion trained on (its version's
`training_keys.parquet`: ids, or digests of whole rows when the data has no id), so neither is judged on rows
it has seen. A promoted challenger becomes a new registry version (ONNX graph, signature, card with its
training rows, the keys of those rows, and a reference sample of its training data for monitoring) and then
the champion, atomically; or, with `promote.shadow` and a champion to compare with, the shadow: scored beside
the champion on live traffic until the shadow gate (`evergreen.registry.shadow`) promotes or discards it. The
decision and its reasons go to `metrics/promotion.json` either way.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from evergreen.artifacts.card import ModelCard, TrainingRows
from evergreen.artifacts.reports import Comparison, EvalReport, ExportReport, GateDecision, PassedOver, PromotionReport
from evergreen.config import Params
from evergreen.data import io
from evergreen.data.schema import EVENT_TIME
from evergreen.data.split import key_kind, read_split, row_keys
from evergreen.errors import ModelError
from evergreen.inference import ServingModel, load_version, predict, predicted_labels, servable
from evergreen.model.metrics import score
from evergreen.orchestration.summary import closing_summary
from evergreen.prediction_log.base import LogColumns, probabilities_column
from evergreen.provenance import code_version
from evergreen.registry.gate import align_classes, align_weights, compare, decide
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace

TRAINING_KEYS = "training_keys.parquet"  # in each version: the keys of the rows it trained on (train and valid)


def _suite_passed(path: Path) -> bool:
    return json.loads(path.read_text())["critical_success"]  # a validation report (`validation.summary`)


def reference_sample(train: pl.DataFrame, model: ServingModel, rows: int, seed: int) -> pl.DataFrame:
    """A sample of the training rows with the model's predictions: monitoring's reference window, kept with the
    version. Its scores are computed once, here: monitoring reuses them on every run while this is the champion."""
    sample = train.sample(n=min(rows, train.height), seed=seed, shuffle=True)
    if EVENT_TIME in sample.columns:
        sample = sample.sort(EVENT_TIME)
    output = predict(model, sample)
    # the same form the prediction log keeps: values (regression) or class labels and their probabilities
    sample = sample.with_columns(pl.Series(LogColumns.PREDICTION, predicted_labels(model, output)))
    if model.task == "classification":
        sample = sample.with_columns(probabilities_column(output.tolist()))
    return sample


def _same_graph(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def training_rows(train: pl.DataFrame, valid: pl.DataFrame, params: Params) -> tuple[TrainingRows, pl.DataFrame]:
    """What the challenger learned from, for its card, and the keys of those rows, for later gates."""
    both = pl.concat([train.select(valid.columns), valid], how="vertical")
    keys = row_keys(both, params.data).unique().sort()
    digest = hashlib.sha256("\n".join(keys.to_list()).encode()).hexdigest()
    times = both[EVENT_TIME] if EVENT_TIME in both.columns else None
    record = TrainingRows(
        rows=train.height,
        valid_rows=valid.height,
        key=key_kind(params.data),
        keys_sha256=digest,
        time_from=str(times.min()) if times is not None else None,
        time_to=str(times.max()) if times is not None else None,
    )
    return record, keys.to_frame()


def champion_comparison(
    test: pl.DataFrame, params: Params, challenger: ServingModel, champion: str, registry: Registry
) -> Comparison | str:
    """The challenger against `champion` on the test rows the champion did not train on, or why that
    comparison cannot be made fairly (too few such rows, or keys of another kind)."""
    cfg, folder = params.promote, registry.path(champion)
    card = ModelCard.from_dict(registry.card(champion), source=folder / "model_card.json")
    excluded = 0
    if card.training is not None and (folder / TRAINING_KEYS).exists():
        if card.training.key != key_kind(params.data):
            return (
                f"champion {champion}'s training rows are identified by {card.training.key}, the data now by "
                f"{key_kind(params.data)}: cannot tell which test rows it trained on"
            )
        seen = row_keys(test, params.data).is_in(pl.read_parquet(folder / TRAINING_KEYS)["key"].implode())
        excluded = int(seen.sum())
        test = test.filter(~seen)
        if test.height < cfg.min_compare_rows:
            return (
                f"champion {champion} trained on {excluded} of the {test.height + excluded} test rows; the "
                f"{test.height} left are fewer than promote.min_compare_rows ({cfg.min_compare_rows}), so the two "
                "cannot be compared fairly (after a change of split, promote by hand: `evergreen models promote`)"
            )
    # a champion registered before training rows were recorded is compared on every test row
    incumbent = load_version(folder, champion)
    target = test[params.data.target.name]
    metric = cfg.metric_for(challenger.task)
    ours, theirs = predict(challenger, test), predict(incumbent, test)
    weights: tuple[list[float], list[float]] = ([], [])
    if challenger.task == "regression":
        actual = target.cast(pl.Float64).to_numpy()
    else:
        every = list(dict.fromkeys([*challenger.classes, *incumbent.classes, *target.unique().sort().to_list()]))
        actual = np.array([every.index(v) for v in target.to_list()])
        ours, theirs = align_classes(ours, challenger.classes, every), align_classes(theirs, incumbent.classes, every)
        weights = (align_weights(challenger.decision_weights, challenger.classes, every),
                   align_weights(incumbent.decision_weights, incumbent.classes, every))  # fmt: skip
    return compare(metric, actual, ours, theirs, cfg.bootstrap_samples, cfg.confidence, cfg.seed, excluded, weights)


def run(ws: Workspace) -> None:
    _gate_and_promote(ws)
    # the run's closing lines: the leaderboard, the verdict (or why not and what next), the next command
    print("\n" + closing_summary(ws))


@dataclass(frozen=True)
class Challenger:
    """A graph the gate judges: the chosen candidate (the export stage's outputs), or after it, the next
    candidates on valid (`models/exported/`)."""

    family: str
    files: dict[str, Path]  # model.onnx, signature.json, model.pt: what a registry version keeps
    model: ServingModel
    scores: dict[str, Any]  # every test metric
    parity_diff: float
    parity_limit: float
    card: ModelCard


def _chosen(ws: Workspace, evaluation: EvalReport) -> Challenger:
    export = ExportReport.read(ws.export_metrics)
    card = ModelCard.read(ws.model_card)
    family = (card.train_metrics or {}).get("model_type", ws.params.model.type)
    files = {"model.onnx": ws.onnx_model, "signature.json": ws.signature, "model.pt": ws.model}
    return Challenger(family, files, load_version(ws.models_dir, "challenger"), evaluation.model,
                      export.parity_max_abs_diff, export.parity_limit, card)  # fmt: skip


def _test_scores(model: ServingModel, test: pl.DataFrame) -> dict[str, Any]:
    """Every test metric of a graph, from onnxruntime's outputs (what it would serve)."""
    target, output = test[model.signature["target"]], predict(model, test)
    if model.task == "regression":
        return score(model.task, target.cast(pl.Float64).to_numpy(), output)
    index = {label: i for i, label in enumerate(model.classes)}
    return score(model.task, np.array([index[v] for v in target.to_list()]), output, model.classes)


def _others(ws: Workspace, test: pl.DataFrame, chosen: Challenger, evaluation: EvalReport) -> Iterator[Challenger]:
    """The candidates after the chosen one, best on valid first, each loaded only when the gate asks for it;
    those whose graph failed parity in the export stage are never offered."""
    index = ws.exported / "index.json"
    exported = io.read_json(index, ModelError, subject="the exported candidates are ") if index.exists() else {}
    metric = ws.params.promote.metric_for(chosen.model.task)
    # each candidate's test metrics as `evaluate` scored them, with its own framework, as it scored the baselines
    board = io.read_json(ws.leaderboard, ModelError, subject="the leaderboard is ") if ws.leaderboard.exists() else {}
    boards = {row["family"]: row for row in board.get("candidates", [])}
    for entry in (e for e in exported.get("candidates", []) if "folder" in e):
        folder = ws.exported / entry["folder"]
        model = load_version(folder, entry["family"])
        scores = boards.get(entry["family"], {}).get("test_scores") or _test_scores(model, test)
        graph = (folder / "model.onnx").read_bytes()
        card = chosen.card.model_copy(update={
            "onnx_sha256": hashlib.sha256(graph).hexdigest(),
            "metrics": EvalReport(model=scores, baselines=evaluation.baselines),
            "train_metrics": {"model_type": entry["family"], "valid": {metric: entry["valid"]},
                              "chosen": f"by the gate: the next candidate on valid after {chosen.family}"},
        })  # fmt: skip
        files = {"model.onnx": folder / "model.onnx", "signature.json": folder / "signature.json",
                 "model.pt": ws.models_dir / entry["file"]}  # fmt: skip
        yield Challenger(entry["family"], files, model, scores, entry["parity_max_abs_diff"], entry["parity_limit"],
                         card)  # fmt: skip


# checks another candidate may pass where the chosen one failed; a failed data suite or too few training rows
# fail every candidate alike
_PER_MODEL = {"onnx_parity", "baseline", "champion"}


def _gate_and_promote(ws: Workspace) -> None:
    params = ws.params
    cfg = params.promote
    registry = Registry(ws.registry, keep_versions=cfg.keep_versions)  # retention after a promotion
    test, train, valid = read_split(ws, "test"), read_split(ws, "train"), read_split(ws, "valid")
    evaluation = EvalReport.read(ws.eval_metrics)
    champion = registry.champion()
    chosen = _chosen(ws, evaluation)

    def judge(challenger: Challenger) -> GateDecision:
        metric = cfg.metric_for(challenger.model.task)
        comparison = None if champion is None else champion_comparison(test, params, challenger.model, champion,
                                                                         registry)  # fmt: skip
        return decide(
            data_suites_passed={s: _suite_passed(ws.validation_report(s)) for s in ("raw", "clean")},
            parity_diff=challenger.parity_diff,
            parity_limit=challenger.parity_limit,
            metric=metric,
            model_value=challenger.scores.get(metric),
            baselines=evaluation.baseline_values(metric, cfg.baseline),
            baseline_margin=cfg.baseline_margin,
            train_rows=train.height,
            min_train_rows=cfg.min_train_rows,
            champion=comparison,
            champion_margin=cfg.champion_margin,
        )

    # the best candidate on valid that passes the gate: the chosen one, or when it fails on its own merits (its
    # test metric, its parity), the next ones in their valid order; the test split judges each, it ranks none
    passed_over: list[PassedOver] = []
    first: tuple[Challenger, GateDecision] | None = None
    for challenger in itertools.chain([chosen], _others(ws, test, chosen, evaluation)):
        if champion is not None and _same_graph(challenger.files["model.onnx"], registry.path(champion) / "model.onnx"):
            # rerunning the stage on an unchanged model must not mint a new version of the same graph
            print(f"promote: {challenger.family} is byte-identical to champion {champion}; nothing to do")
            PromotionReport(promoted=False, version=None, champion_before=champion, champion_after=champion,
                            reasons=[f"identical to champion {champion}"]).write(ws.promotion_metrics)  # fmt: skip
            return
        decision = judge(challenger)
        first = first or (challenger, decision)
        failed = {c.name for c in decision.checks if not c.passed}
        if decision.promote or not failed <= _PER_MODEL:
            break
        passed_over.append(PassedOver(family=challenger.family, reasons=decision.reasons))
    if not decision.promote and first is not None:  # nothing passed: the chosen one's report, and the others'
        (challenger, decision), passed_over = first, passed_over[1:]
    _record(ws, registry, challenger, decision, champion, passed_over, train, valid)


def _record(
    ws: Workspace, registry: Registry, challenger: Challenger, decision: GateDecision, champion: str | None,
    passed_over: list[PassedOver], train: pl.DataFrame, valid: pl.DataFrame,
) -> None:  # fmt: skip
    """Register and promote (or shadow) a challenger that passed; write the decision either way."""
    params, cfg = ws.params, ws.params.promote
    version = None
    # with promote.shadow, a challenger that passes serves in the shadow first; the first model has no champion
    # to be compared with on live traffic, so it is promoted at once
    shadow = decision.promote and cfg.shadow is not None and champion is not None
    if decision.promote:
        training, keys = training_rows(train, valid, params)
        card = challenger.card.model_copy(
            update={"gate": decision, "training": training, "code": code_version(ws.root)}
        )
        with tempfile.TemporaryDirectory() as tmp:
            reference, key_file = Path(tmp) / "reference.parquet", Path(tmp) / TRAINING_KEYS
            reference_sample(train, challenger.model, cfg.reference_rows, cfg.seed).write_parquet(reference)
            keys.write_parquet(key_file)
            # model.pt: the torch model, where `train.init: champion` warm-starts from
            files = {**challenger.files, "reference.parquet": reference, TRAINING_KEYS: key_file}
            version = registry.add(files, card.to_dict())
        if shadow:
            if registry.shadow() != version:  # a rerun keeps the shadow's clock (and labels) running
                reason = "passed the offline gate; judged on live traffic next (promote.shadow)"
                registry.set_shadow(version, reason=reason, verify=servable(params.data))
        else:
            registry.promote(version, reason="; ".join(decision.reasons), verify=servable(params.data))

    report = PromotionReport.from_gate(decision, version, champion, registry.champion(), shadow=shadow,
                                       family=challenger.family, passed_over=passed_over)  # fmt: skip
    report.write(ws.promotion_metrics)
    verdict = f"promoted as {version}" if decision.promote else "not promoted"
    if shadow:
        verdict = (
            f"passed, registered as {version} and put in the shadow of the champion: it is promoted once "
            f"{cfg.shadow.min_labels} labelled records show it no worse (`evergreen shadow`)"
        )
    print(f"promote: challenger {challenger.family} {verdict}; champion is {registry.champion()}")
    for skipped in passed_over:
        print(f"  {skipped.family} (better on valid) failed the gate: {'; '.join(skipped.reasons)}")
    for reason in decision.reasons:
        print(f"  {reason}")
