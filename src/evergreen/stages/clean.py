"""Stage `clean`: typed, repaired rows to `data/clean/`, the rest to `data/quarantine/` with a reason.

Partition by partition (see `data.clean_partitions`): a raw part is cleaned once while it and the cleaning
rules are unchanged. A partition of which a column parsed in no row fails the stage by file name: a format
problem, not dirt (its rows are in the quarantine); one whose rows were all quarantined otherwise is warned of.
"""

from __future__ import annotations

from typing import Any

from evergreen.data import clean_partitions as cleaning
from evergreen.data import io
from evergreen.data.partitions import read_manifest
from evergreen.errors import DataError
from evergreen.workspace import Workspace


def _refuse_unreadable_partitions(ws: Workspace, entries: list[dict[str, Any]]) -> None:
    """Fail naming the files of which a column parsed in no row: that is a format problem (a date written
    another way, a shifted column), not dirt, and its rows would never reach training. A partition whose rows
    were all quarantined for other reasons (values outside the declared ranges, say) gets a loud warning."""
    unreadable = []
    for e in entries:
        counts = e["summary"]
        if not counts["rows_in"] or counts["rows_out"]:
            continue
        reasons = counts["quarantined_by_reason"]
        every_row = [r for r, n in reasons.items() if r.startswith("unparseable:") and n == counts["rows_in"]]
        if every_row:
            unreadable.append(f"{e['file']} ({counts['rows_in']} rows, every one {every_row[0]!r})")
            continue
        top = max(reasons.items(), key=lambda kv: kv[1], default=("none", 0))
        print(
            f"clean: WARNING: every one of the {counts['rows_in']} rows of {e['file']} was quarantined (most "
            f"often {top[0]!r}, {top[1]} rows); see {ws.show(ws.quarantine)}"
        )
    if unreadable:
        raise DataError(
            f"clean: a column parsed in no row of {'; '.join(unreadable)}: a format problem, not dirt. Fix or"
            f" remove the file and run again (its rows are in {ws.show(ws.quarantine)})"
        )


def run(ws: Workspace) -> None:
    raw_entries = read_manifest(ws.raw_manifest)["partitions"]
    if not raw_entries:
        raise DataError(f"{ws.show(ws.raw_manifest)}: no raw partitions (run `dvc repro ingest` first)")
    layout = cleaning.Layout(str(ws.raw), str(ws.clean), str(ws.quarantine), str(ws.clean_manifest))
    params = ws.params
    entries, made, where = cleaning.clean_dataset(
        raw_entries, params.data, params.clean, layout, scheduler=params.data.scheduler
    )
    # the quarantine and the manifest are written first so that a user can inspect them when the stage fails
    cleaning.commit(layout, entries)
    summary = cleaning.summarize(entries)
    io.write_json(summary, ws.data_metrics)
    _refuse_unreadable_partitions(ws, entries)
    if summary["rows_out"] == 0:
        top = sorted(summary["quarantined_by_reason"].items(), key=lambda kv: -kv[1])[:3]
        reasons = ", ".join(f"{reason!r} ({n} rows)" for reason, n in top)
        raise DataError(
            f"clean: all {summary['rows_in']} rows were quarantined to {ws.show(ws.quarantine)}; "
            f"most common reasons: {reasons or 'none'}"
        )
    print(
        f"clean: {summary['rows_in']} rows in, {summary['rows_out']} out, {summary['rows_quarantined']} quarantined"
        f" {summary['quarantined_by_reason']}; imputed {summary['imputed']}; clipped {summary['clipped']}"
        f" ({len(entries)} partition(s), {made} cleaned now: {where})"
    )
