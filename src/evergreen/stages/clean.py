"""Stage `clean`: typed, repaired rows to `data/clean/`, the rest to `data/quarantine/` with a reason.

Partition by partition (see `data.clean_partitions`): a raw part is cleaned once while it and the cleaning
rules are unchanged.
"""

from __future__ import annotations

from evergreen.data import clean_partitions as cleaning
from evergreen.data import io
from evergreen.data.partitions import read_manifest
from evergreen.errors import DataError
from evergreen.workspace import Workspace


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
    for e in entries:
        if e["summary"]["rows_in"] and not e["summary"]["rows_out"]:
            print(f"clean: warning: every row of partition {e['partition']} ({e['file']}) was quarantined")
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
