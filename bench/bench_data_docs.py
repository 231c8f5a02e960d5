"""Data Docs built once for ten partitions against once per partition, in one warm process (issue 22).

    python bench/bench_data_docs.py      # in the project, after `dvc repro` (reads data/clean/clean.parquet)

Validates ten 1,000-row pieces of the bundled clean rows with the clean suite three ways, twice: without Data
Docs, with a Data Docs build per piece (what each partition's task does), and with one build for all ten (what
"once per stage run" would do). The differences from the first are the Data Docs' cost.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from evergreen.validation import gx_adapter as gx
from evergreen.validation.suites import generate_suite
from evergreen.workspace import Workspace

PIECES, ROWS = 10, 1_000


def _seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    ws = Workspace.open(".")
    suite = generate_suite(ws.params.data, "clean")
    rows = pl.scan_parquet(ws.root / "data/clean/clean.parquet").head(PIECES * ROWS).collect()
    pieces = [rows.slice(i * ROWS, ROWS) for i in range(PIECES)]

    def docs_dir() -> Path:
        return Path(tempfile.mkdtemp())

    gx.validate_batches(pieces[:1], suite, docs_dir=docs_dir())  # warm: GX's imports and templates
    for _ in range(2):
        bare = _seconds(lambda: [gx.validate_batches([p], suite) for p in pieces])
        each = _seconds(lambda: [gx.validate_batches([p], suite, docs_dir=docs_dir()) for p in pieces])
        once = _seconds(lambda: gx.validate_batches(pieces, suite, docs_dir=docs_dir()))
        print(
            f"{PIECES} pieces of {ROWS:,} rows: without docs {bare:.2f} s; a build per piece {each:.2f} s "
            f"(docs {each - bare:+.2f} s); one build for all {once:.2f} s (docs {once - bare:+.2f} s)"
        )


if __name__ == "__main__":
    main()
