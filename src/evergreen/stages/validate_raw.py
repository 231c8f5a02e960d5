"""Stage `validate_raw`: run the raw suite on the ingested data; stop on a critical failure."""

from __future__ import annotations

from evergreen.validation.stage import run_validation
from evergreen.workspace import Workspace


def run(ws: Workspace) -> None:
    """Validate `data/raw/raw.parquet` against `{suites_dir}/raw.json`."""
    run_validation(ws, "raw", ws.raw)
