"""One monitoring run: the champion's reference against a window of the prediction log, then a decision.

A shadow challenger is judged first (`evergreen.registry.shadow`), so a window is judged against the champion
the shadow gate leaves serving.

Compute (Evidently, behind its adapter), parse (a `MonitorSummary`), persist (HTML and JSON reports, a snapshot
in the Evidently workspace, one line in the decisions log), decide (the pure policy). Used by
`evergreen monitor`, the Prefect `monitor` flow and `evergreen simulate`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import filelock
import polars as pl

from evergreen.artifacts.card import ModelCard
from evergreen.artifacts.decisions import RetrainDecision, append_entry, read_history
from evergreen.config import Params
from evergreen.errors import EvergreenError
from evergreen.inference import load_version, predict
from evergreen.monitoring.policy import decide
from evergreen.monitoring.window import select_window
from evergreen.prediction_log.base import LogColumns, probabilities_column
from evergreen.prediction_log.read import read_log
from evergreen.privacy import personal_columns, without_personal
from evergreen.registry.shadow import check_shadow, version_classes
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace

logger = logging.getLogger("evergreen.monitor")


def monitor_once(ws: Workspace, now: dt.datetime | None = None, save_reports: bool = True) -> RetrainDecision:
    """Monitor the latest window and record the policy's decision; `now` defaults to the current UTC time.

    `save_reports=False` skips the HTML/JSON reports and the workspace snapshot (the backtest's many windows).
    One run at a time per decisions log: the whole read, compute, persist and decide holds a file lock beside
    the log, so two runs at once neither trip over the Evidently workspace nor decide from the same history.
    """
    lock = monitor_lock(ws.decisions)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(lock)):
        return _monitor_once(ws, now, save_reports)


def monitor_lock(decisions: Path) -> Path:
    """The file lock one monitoring run holds: beside the decisions log it appends to."""
    return decisions.with_name(decisions.name + ".lock")


def _monitor_once(ws: Workspace, now: dt.datetime | None, save_reports: bool) -> RetrainDecision:
    # Evidently takes about 5 s to import: a run that computes a report pays for it, not every command, flow
    # or test collection that imports this module
    from evergreen.monitoring.evidently_adapter import compute_report
    from evergreen.monitoring.report_files import add_to_workspace, save_report

    params, cfg = ws.params, ws.params.monitor
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    verdict = check_shadow(ws, now=now)
    if verdict is not None:  # a promotion or a discard is worth a line in the run's output; a wait is not
        level = logging.INFO if verdict.outcome == "waiting" else logging.WARNING
        logger.log(level, "shadow %s: %s (%s)", verdict.version, verdict.outcome, "; ".join(verdict.reasons))
    registry = Registry(ws.registry)
    champion = registry.champion()
    if champion is None:
        raise EvergreenError(f"nothing to monitor: {registry.root} has no champion yet (run `dvc repro` first)")
    folder = registry.path(champion)
    reference_path = folder / "reference.parquet"
    if not reference_path.exists():
        raise EvergreenError(f"{reference_path}: missing; the champion has no reference sample to compare with")
    reference = pl.read_parquet(reference_path)
    card = ModelCard.from_dict(registry.card(champion), source=folder / "model_card.json")
    reference_metrics = card.test_metrics

    # let the log's database (SQLite or PostgreSQL) narrow it to the window first; select_window then applies the
    # exact bounds
    since = now - dt.timedelta(hours=cfg.window.last_hours) if cfg.window.last_hours else None
    log = read_log(ws.prediction_log_location, last_rows=cfg.window.last_rows, since=since, data=params.data)
    current = select_window(log, cfg.window, now)
    classes: dict[str, list[Any]] = {}
    if params.data.task == "classification":
        versions = current[LogColumns.MODEL_VERSION].unique().to_list() if current.height else []
        known = set(registry.versions())
        classes = {v: version_classes(registry, v) for v in {champion, *versions} if v in known}
        reference = _with_probabilities(reference, registry, champion)
    # personal columns are neither judged nor shown: reports keep no clear value, and a hash compares with nothing
    personal = list(personal_columns(params.data))
    summary, snapshot = compute_report(
        reference.drop(personal, strict=False),
        current.drop(personal, strict=False),
        without_personal(params.data),
        cfg,
        champion,
        reference_metrics,
        metric=judged_metric(params),
        classes=classes,
    )

    stamp = now.strftime("%Y%m%dT%H%M%S")
    reports = ws.monitor_reports
    if save_reports and snapshot is not None:  # an empty window has nothing to report
        save_report(snapshot, reports / f"{stamp}.html", reports / f"{stamp}.json")
        add_to_workspace(snapshot, ws.evidently_workspace, cfg.project)

    decisions = ws.decisions
    shadow = registry.shadow()  # still there after the check: its verdict is pending
    decision = decide(summary, read_history(decisions), cfg.policy, now=now.isoformat(), shadow=shadow)
    report = ws.show(reports / f"{stamp}.html") if save_reports and snapshot is not None else None
    decision = decision.model_copy(update={"report": report})
    append_entry(decisions, decision)
    return decision


def judged_metric(params: Params) -> str:
    """The metric monitoring (and the backtest) judges performance by: the gate's, `promote.metric` (or the
    task's default when it is not declared)."""
    return params.promote.metric_for(params.data.task)


def _with_probabilities(reference: pl.DataFrame, registry: Registry, champion: str) -> pl.DataFrame:
    """The reference sample with the champion's class probabilities, in the prediction log's form.

    Evidently's log loss and ROC AUC need the probabilities of both the reference and the window. `promote`
    keeps them in the version's reference sample, scored once; a version promoted before it did has its
    reference rows scored again here, on every run.
    """
    if LogColumns.PROBABILITIES in reference.columns or reference.height == 0:
        return reference
    model = load_version(registry.path(champion), champion)
    return reference.with_columns(probabilities_column(predict(model, reference).tolist()))
