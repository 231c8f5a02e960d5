"""The shared body of the `validate_raw` and `validate_clean` stages: read, validate, report, decide."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from evergreen.data.io import write_json
from evergreen.errors import DataError, ValidationFailed
from evergreen.validation.suites import Stage, load_suite
from evergreen.validation.summary import (
    critical_failures,
    failure_message,
    report_dict,
    summary_line,
    warning_lines,
)
from evergreen.workspace import Workspace


def run_validation(ws: Workspace, stage: Stage, data_path: Path) -> None:
    """Validate `data_path` with the `stage` suite; write the JSON report and Data Docs, then raise
    `ValidationFailed` if a critical expectation failed (the report is written either way)."""
    # imported here so `evergreen --help` and the other stages do not pay GX's import time
    from evergreen.validation.gx_adapter import validate_frame

    stage_name = f"validate_{stage}"
    cfg = ws.params.validation
    suite = load_suite(ws.suite(stage))
    if not data_path.exists():
        raise DataError(f"{ws.show(data_path)}: no such file (run the stage that writes it first)")
    frame = pl.read_parquet(data_path)
    docs_dir = ws.data_docs(stage)
    # a fresh folder each run, so the docs show this validation and not the pile of earlier ones
    shutil.rmtree(docs_dir, ignore_errors=True)
    summary = validate_frame(frame, suite, example_values=cfg.example_values, docs_dir=docs_dir)
    report = report_dict(summary)
    if summary.docs_index:  # recorded relative to the project, so a fresh clone writes the same report
        report["docs"] = ws.show(Path(summary.docs_index))
    write_json(report, ws.validation_report(stage))
    print(summary_line(summary, stage_name))
    for line in warning_lines(summary, stage_name):
        print(line)
    if critical_failures(summary):
        raise ValidationFailed(failure_message(summary, stage_name))
