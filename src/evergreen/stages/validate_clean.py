"""DVC stage `validate_clean`: run the clean suite on the cleaned data; stop on a critical failure."""

from __future__ import annotations

from evergreen.config import Params
from evergreen.data import paths
from evergreen.validation.stage import run_validation


def run(params: Params) -> None:
    """Validate `data/clean/clean.parquet` against `{suites_dir}/clean.json`."""
    run_validation(params, "clean", paths.CLEAN)
