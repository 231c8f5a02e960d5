"""`evergreen tune` as one call: the workers, then what the study found, written to `tune/` and summarised."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evergreen.tuning.report import summary_lines, write_report
from evergreen.tuning.study import StudySummary, open_study, run_workers, storage_url, summarise, workspace_with


@dataclass
class TuneOutcome:
    summary: StudySummary
    written: dict[str, Path]
    lines: list[str]


def finish(root: str, overrides: dict[str, Any] | None = None) -> TuneOutcome:
    """Summarise the study as it stands and write its report files (also after workers elsewhere ran it)."""
    ws = workspace_with(root, overrides)
    study = open_study(ws, create=False)
    summary = summarise(study, ws.params, storage_url(ws))
    written = write_report(study, summary, ws.at(ws.params.tune.output_dir))
    return TuneOutcome(summary, written, summary_lines(summary, written, ws.show))


def tune(root: str, overrides: dict[str, Any] | None = None) -> TuneOutcome:
    """Run `tune.workers` local workers on the study until it holds `tune.n_trials` trials, then `finish`."""
    ws = workspace_with(root, overrides)
    run_workers(str(ws.root), ws.params.tune.workers, overrides)
    return finish(str(ws.root), overrides)
