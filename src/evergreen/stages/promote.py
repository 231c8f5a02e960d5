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
import json
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from evergreen.artifacts.card import ModelCard, TrainingRows
from evergreen.artifacts.reports import Comparison, EvalReport, ExportReport, PromotionReport
from evergreen.config import Params
from evergreen.data.schema import EVENT_TIME
from evergreen.data.split import key_kind, read_split, row_keys
from evergreen.inference import ServingModel, load_version, predict, predicted_labels, servable
from evergreen.orchestration.summary import closing_summary
from evergreen.provenance import code_version
from evergreen.registry.gate import align_classes, compare, decide
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace

TRAINING_KEYS = "training_keys.parquet"  # in each version: the keys of the rows it trained on (train and valid)


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
    if challenger.task == "regression":
        actual = target.cast(pl.Float64).to_numpy()
    else:
        every = list(dict.fromkeys([*challenger.classes, *incumbent.classes, *target.unique().sort().to_list()]))
        actual = np.array([every.index(v) for v in target.to_list()])
        ours, theirs = align_classes(ours, challenger.classes, every), align_classes(theirs, incumbent.classes, every)
    return compare(metric, actual, ours, theirs, cfg.bootstrap_samples, cfg.confidence, cfg.seed, excluded)


def run(ws: Workspace) -> None:
    _gate_and_promote(ws)
    # the run's closing lines: the leaderboard, the verdict (or why not and what next), the next command
    print("\n" + closing_summary(ws))


def _gate_and_promote(ws: Workspace) -> None:
    params = ws.params
    cfg = params.promote
    registry = Registry(ws.registry, keep_versions=cfg.keep_versions)  # retention after a promotion
    test = read_split(ws, "test")
    challenger = load_version(ws.models_dir, "challenger")
    metric = cfg.metric_for(challenger.task)

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
    comparison = None if champion is None else champion_comparison(test, params, challenger, champion, registry)

    train, valid = read_split(ws, "train"), read_split(ws, "valid")
    evaluation, export = EvalReport.read(ws.eval_metrics), ExportReport.read(ws.export_metrics)
    decision = decide(
        data_suites_passed={s: _suite_passed(ws.validation_report(s)) for s in ("raw", "clean")},
        parity_diff=export.parity_max_abs_diff,
        parity_limit=export.parity_limit,
        metric=metric,
        model_value=evaluation.model.get(metric),
        baselines=evaluation.baseline_values(metric, cfg.baseline),
        baseline_margin=cfg.baseline_margin,
        train_rows=train.height,
        min_train_rows=cfg.min_train_rows,
        champion=comparison,
        champion_margin=cfg.champion_margin,
    )

    version = None
    # with promote.shadow, a challenger that passes serves in the shadow first; the first model has no champion
    # to be compared with on live traffic, so it is promoted at once
    shadow = decision.promote and cfg.shadow is not None and champion is not None
    if decision.promote:
        training, keys = training_rows(train, valid, params)
        card = ModelCard.read(ws.model_card).model_copy(
            update={"gate": decision, "training": training, "code": code_version(ws.root)}
        )
        with tempfile.TemporaryDirectory() as tmp:
            reference, key_file = Path(tmp) / "reference.parquet", Path(tmp) / TRAINING_KEYS
            reference_sample(train, challenger, cfg.reference_rows, cfg.seed).write_parquet(reference)
            keys.write_parquet(key_file)
            files = {
                "model.onnx": ws.onnx_model,
                "signature.json": ws.signature,
                "reference.parquet": reference,
                TRAINING_KEYS: key_file,
                "model.pt": ws.model,  # the torch model, where `train.init: champion` warm-starts from
            }
            version = registry.add(files, card.to_dict())
        if shadow:
            if registry.shadow() != version:  # a rerun keeps the shadow's clock (and labels) running
                reason = "passed the offline gate; judged on live traffic next (promote.shadow)"
                registry.set_shadow(version, reason=reason, verify=servable(params.data))
        else:
            registry.promote(version, reason="; ".join(decision.reasons), verify=servable(params.data))

    PromotionReport.from_gate(decision, version, champion, registry.champion(), shadow=shadow).write(
        ws.promotion_metrics
    )
    verdict = f"promoted as {version}" if decision.promote else "not promoted"
    if shadow:
        verdict = (
            f"passed, registered as {version} and put in the shadow of the champion: it is promoted once "
            f"{cfg.shadow.min_labels} labelled records show it no worse (`evergreen shadow`)"
        )
    print(f"promote: challenger {verdict}; champion is {registry.champion()}")
    for reason in decision.reasons:
        print(f"  {reason}")
