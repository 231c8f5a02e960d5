"""Stage `split`: `data/clean/` into `data/split/{train,valid,test}.parquet`, checked for leakage."""

from __future__ import annotations

import polars as pl

from evergreen.config import Params
from evergreen.data import io, paths
from evergreen.data.split import split, summarize


def run(params: Params) -> None:
    parts = split(pl.read_parquet(paths.CLEAN), params.data, params.split)
    for name, part in parts.items():
        io.write_parquet(part, paths.split_path(name))
    summary = summarize(parts)
    io.write_json(summary, paths.SPLIT_METRICS)
    print("split: " + ", ".join(f"{name} {entry['rows']} rows" for name, entry in summary.items()))
