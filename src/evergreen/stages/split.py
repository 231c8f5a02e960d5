"""Stage `split`: `data/clean/` into `data/split/{train,valid,test}.parquet`, checked for leakage."""

from __future__ import annotations

import polars as pl

from evergreen.data import io
from evergreen.data.split import split, summarize
from evergreen.workspace import Workspace


def run(ws: Workspace) -> None:
    parts = split(pl.read_parquet(ws.clean), ws.params.data, ws.params.split)
    for name, part in parts.items():
        io.write_parquet(part, ws.split(name))
    summary = summarize(parts, ws.params.data)
    io.write_json(summary, ws.split_metrics)
    print("split: " + ", ".join(f"{name} {parts[name].height} rows" for name in parts))
    for warning in summary.get("warnings", []):  # type: ignore[union-attr]
        print(f"split: warning: {warning}")
