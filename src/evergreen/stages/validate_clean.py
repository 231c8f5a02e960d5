"""Stage `validate_clean`: run the clean suite on the cleaned data; stop on a critical failure."""

from __future__ import annotations

from evergreen.validation.stage import run_validation
from evergreen.workspace import Workspace


def run(ws: Workspace) -> None:
    """Validate `data/clean/clean.parquet` against `{suites_dir}/clean.json`."""
    run_validation(ws, "clean", ws.clean)
