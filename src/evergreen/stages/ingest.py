"""Stage `ingest`: source files plus the landing folder, as text, into `data/raw/`.

Key conflicts above `ingest.max_key_conflicts` fail the stage before anything is written, so the raw data stays
as it was.
"""

from __future__ import annotations

from tqdm import tqdm

from evergreen.data import io
from evergreen.data.ingest import combine
from evergreen.workspace import Workspace


def run(ws: Workspace) -> None:
    data = ws.params.data
    files = io.resolve_source(ws.source) + io.list_landing(ws.incoming)
    frames = [io.read_text_table(f, data) for f in tqdm(files, desc="ingest", unit="file", leave=False)]
    result = combine(frames, data.key, types=data.types)
    result.check_conflicts(data.key, ws.params.ingest.max_key_conflicts)
    io.write_parquet(result.raw, ws.raw)
    io.write_parquet(result.conflicts, ws.raw_conflicts)
    io.write_json(result.summary(), ws.ingest_metrics)
    print(
        f"ingest: {len(files)} file(s), {result.raw.height} rows to {ws.show(ws.raw)}"
        f" ({result.repeated_rows} repeated, {result.conflicts.height} key conflicts set aside)"
    )
