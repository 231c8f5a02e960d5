"""DVC stage `validate_raw`: run the raw suite on the ingested data; stop on a critical failure."""

from __future__ import annotations

from evergreen.config import Params
from evergreen.data import paths
from evergreen.validation.stage import run_validation


def run(params: Params) -> None:
    """Validate `data/raw/raw.parquet` against `{suites_dir}/raw.json`."""
    run_validation(params, "raw", paths.RAW)
