"""Stage `split`: `data/clean/` into `data/split/{train,valid,test}.parquet`, checked for leakage."""

from __future__ import annotations

from evergreen.data import io
from evergreen.data.partitions import scan_dataset
from evergreen.data.split import split, summarize
from evergreen.workspace import Workspace


def run(ws: Workspace) -> None:
    # the clean dataset is a folder of parts in arrival order; scanned lazily, read once here
    clean = scan_dataset(ws.clean, ws.show(ws.clean)).collect()
    parts = split(clean, ws.params.data, ws.params.split)
    for name, part in parts.items():
        io.write_parquet(part, ws.split(name))
    summary = summarize(parts, ws.params.data)
    io.write_json(summary, ws.split_metrics)
    print("split: " + ", ".join(f"{name} {parts[name].height} rows" for name in parts))
    for warning in summary.get("warnings", []):  # type: ignore[union-attr]
        print(f"split: warning: {warning}")
