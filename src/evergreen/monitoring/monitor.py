"""One monitoring run: the champion's reference against a window of the prediction log, then a decision.

Compute (Evidently, behind its adapter), parse (a `MonitorSummary`), persist (HTML and JSON reports, a snapshot
in the Evidently workspace, one line in the decisions log), decide (the pure policy). Used by
`evergreen monitor`, the Prefect `monitor` flow and `evergreen simulate`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from evergreen.config import Params
from evergreen.errors import EvergreenError
from evergreen.monitoring.evidently_adapter import add_to_workspace, compute_report, save_report
from evergreen.monitoring.policy import Decision, append_entry, decide, read_history
from evergreen.monitoring.window import select_window
from evergreen.registry.store import Registry
from evergreen.serving.log import read_log


def monitor_once(params: Params, root: Path, now: dt.datetime | None = None, save_reports: bool = True) -> Decision:
    """Monitor the latest window and record the policy's decision; `now` defaults to the current UTC time.

    `save_reports=False` skips the HTML/JSON reports and the workspace snapshot (the backtest's many windows).
    """
    cfg = params.monitor
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    registry = Registry(root / params.promote.registry_dir)
    champion = registry.champion()
    if champion is None:
        raise EvergreenError(f"nothing to monitor: {registry.root} has no champion yet (run `dvc repro` first)")
    folder = registry.path(champion)
    reference_path = folder / "reference.parquet"
    if not reference_path.exists():
        raise EvergreenError(f"{reference_path}: missing; the champion has no reference sample to compare with")
    reference = pl.read_parquet(reference_path)
    reference_metrics = registry.card(champion).get("metrics", {}).get("model", {})

    # let SQLite narrow the log to the window first; select_window then applies the exact bounds
    since = now - dt.timedelta(hours=cfg.window.last_hours) if cfg.window.last_hours else None
    log = read_log(root / params.serve.log_path, last_rows=cfg.window.last_rows, since=since, data=params.data)
    current = select_window(log, cfg.window, now)
    summary, snapshot = compute_report(reference, current, params.data, cfg, champion, reference_metrics)

    stamp = now.strftime("%Y%m%dT%H%M%S")
    reports = root / cfg.reports_dir
    if save_reports and snapshot is not None:  # an empty window has nothing to report
        save_report(snapshot, reports / f"{stamp}.html", reports / f"{stamp}.json")
        add_to_workspace(snapshot, root / cfg.workspace, cfg.project)

    decisions = root / cfg.decisions
    decision = decide(summary, read_history(decisions), cfg.policy, now=now.isoformat())
    report = str(Path(cfg.reports_dir) / f"{stamp}.html") if save_reports and snapshot is not None else None
    append_entry(decisions, {**decision.to_dict(), "report": report})
    return decision
