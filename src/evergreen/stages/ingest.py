"""Stage `ingest`: source files plus the landing folder, as text, into `data/raw/`."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from evergreen.config import Params
from evergreen.data import io, paths
from evergreen.data.ingest import combine


def run(params: Params) -> None:
    data = params.data
    files = io.resolve_source(data.source) + io.list_landing(Path(data.incoming))
    frames = [io.read_text_table(f, data) for f in tqdm(files, desc="ingest", unit="file", leave=False)]
    result = combine(frames, data.key)
    io.write_parquet(result.raw, paths.RAW)
    io.write_parquet(result.conflicts, paths.RAW_CONFLICTS)
    io.write_json(result.summary(), paths.INGEST_METRICS)
    print(
        f"ingest: {len(files)} file(s), {result.raw.height} rows to {paths.RAW}"
        f" ({result.repeated_rows} repeated, {result.conflicts.height} key conflicts set aside)"
    )
