"""Stage `split`: `data/clean/` into `data/split/{train,valid,test}.parquet`, checked for leakage.

A history below `split.partitioned_from_rows` clean rows is split whole, in one frame (`data.split`); a larger
one partition by partition, each row's part fixed by its own time or key (`data.split_partitions`), so that an
arrival splits only its own rows and memory holds one partition at a time.
"""

from __future__ import annotations

import shutil
from typing import Any

from evergreen.data import io
from evergreen.data import split_partitions as partitioned
from evergreen.data.partitions import read_manifest, scan_dataset
from evergreen.data.split import split, summarize
from evergreen.workspace import Workspace


def _split_whole(ws: Workspace) -> dict[str, Any]:
    for name in partitioned.PARTS:  # a partitioned split's folders, from when the history was larger
        if ws.split(name).is_dir():
            shutil.rmtree(ws.split(name))
    ws.split_manifest.unlink(missing_ok=True)
    # the clean dataset is a folder of parts in arrival order; scanned lazily, read once here
    clean = scan_dataset(ws.clean, ws.show(ws.clean)).collect()
    parts = split(clean, ws.params.data, ws.params.split)
    for name, part in parts.items():
        io.write_parquet(part, ws.split(name))
    print("split: " + ", ".join(f"{name} {parts[name].height} rows" for name in parts))
    return summarize(parts, ws.params.data)


def _split_partitioned(ws: Workspace, clean_entries: list[dict[str, Any]]) -> dict[str, Any]:
    params = ws.params
    layout = partitioned.Layout(str(ws.clean), str(ws.split_dir), str(ws.split_manifest))
    for name in partitioned.PARTS:  # a whole split's single files, from when the history was smaller
        if ws.split(name).is_file():
            ws.split(name).unlink()
    manifest, new, where = partitioned.split_dataset(
        clean_entries, params.data, params.split, layout, scheduler=params.data.scheduler
    )
    # checked before the manifest names the new pieces: a failing split is split again on the next run
    partitioned.check_leakage(manifest, params.data, layout, new)
    partitioned.commit(layout, manifest)
    summary = partitioned.summarize(manifest, params.data)
    rows = ", ".join(f"{name} {summary[name]['rows']} rows" for name in partitioned.PARTS)
    print(f"split: {rows} ({len(clean_entries)} partition(s), {len(new)} split now: {where})")
    return summary


def run(ws: Workspace) -> None:
    clean_entries = read_manifest(ws.clean_manifest)["partitions"]
    rows = sum(e["summary"]["rows_out"] for e in clean_entries)
    if clean_entries and rows >= ws.params.split.partitioned_from_rows:
        summary = _split_partitioned(ws, clean_entries)
    else:
        summary = _split_whole(ws)
    io.write_json(summary, ws.split_metrics)
    for warning in summary.get("warnings", []):
        print(f"split: warning: {warning}")
