"""One monitoring run: the champion's reference against a window of the prediction log, then a decision.

Compute (Evidently, behind its adapter), parse (a `MonitorSummary`), persist (HTML and JSON reports, a snapshot
in the Evidently workspace, one line in the decisions log), decide (the pure policy). Used by
`evergreen monitor`, the Prefect `monitor` flow and `evergreen simulate`.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from evergreen.artifacts.card import ModelCard
from evergreen.artifacts.decisions import RetrainDecision, append_entry, read_history
from evergreen.errors import EvergreenError
from evergreen.monitoring.evidently_adapter import add_to_workspace, compute_report, save_report
from evergreen.monitoring.policy import decide
from evergreen.monitoring.window import select_window
from evergreen.registry.store import Registry
from evergreen.serving.log import read_log
from evergreen.workspace import Workspace


def monitor_once(ws: Workspace, now: dt.datetime | None = None, save_reports: bool = True) -> RetrainDecision:
    """Monitor the latest window and record the policy's decision; `now` defaults to the current UTC time.

    `save_reports=False` skips the HTML/JSON reports and the workspace snapshot (the backtest's many windows).
    """
    params, cfg = ws.params, ws.params.monitor
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
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

    # let SQLite narrow the log to the window first; select_window then applies the exact bounds
    since = now - dt.timedelta(hours=cfg.window.last_hours) if cfg.window.last_hours else None
    log = read_log(ws.prediction_log, last_rows=cfg.window.last_rows, since=since, data=params.data)
    current = select_window(log, cfg.window, now)
    summary, snapshot = compute_report(reference, current, params.data, cfg, champion, reference_metrics)

    stamp = now.strftime("%Y%m%dT%H%M%S")
    reports = ws.monitor_reports
    if save_reports and snapshot is not None:  # an empty window has nothing to report
        save_report(snapshot, reports / f"{stamp}.html", reports / f"{stamp}.json")
        add_to_workspace(snapshot, ws.evidently_workspace, cfg.project)

    decisions = ws.decisions
    decision = decide(summary, read_history(decisions), cfg.policy, now=now.isoformat())
    report = ws.show(reports / f"{stamp}.html") if save_reports and snapshot is not None else None
    decision = decision.model_copy(update={"report": report})
    append_entry(decisions, decision)
    return decision
