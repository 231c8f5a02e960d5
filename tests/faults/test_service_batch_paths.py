"""`evergreen predict` must never destroy its input (issue 10 d)."""

from __future__ import annotations

import subprocess

import polars as pl
import pytest

from evergreen.errors import DataError
from evergreen.serving.batch import score_file
from tests.service_harness import BIN, COLUMNS, server_env

pytestmark = [pytest.mark.slow]


@pytest.fixture
def batch(make_project, trained):
    ws = make_project()
    source = ws.root / "batch.parquet"
    trained.test.with_columns(pl.col("day").cast(pl.String)).select(*COLUMNS).head(20).write_parquet(source)
    return ws, source


def test_an_output_that_is_the_input_is_refused_and_the_input_is_untouched(batch):
    """Promise: `predict` refuses to write its output (or its quarantine file) over its input, however the path
    is spelt, with a `DataError` naming both paths, before it writes anything. Attack: `-o` the same file, via
    `..`, via a symlink, and an input named like the output's quarantine file. Before: the input was replaced
    by the predictions."""
    ws, source = batch
    before = source.read_bytes()
    (ws.root / "sub").mkdir()
    (ws.root / "link.parquet").symlink_to(source)
    quarantine_named = ws.root / "scored.quarantine.parquet"
    quarantine_named.write_bytes(before)
    cases = [
        (source, source),
        (source, ws.root / "sub" / ".." / "batch.parquet"),
        (ws.root / "link.parquet", source),
        (quarantine_named, ws.root / "scored.parquet"),
    ]
    for input_path, output in cases:
        with pytest.raises(DataError, match="is the input file") as caught:
            score_file(ws, input_path, output)
        assert str(input_path) in str(caught.value)
    assert source.read_bytes() == before and quarantine_named.read_bytes() == before
    assert not (ws.root / "scored.parquet").exists()


def test_the_command_refuses_the_same_path_with_exit_1(batch):
    """The same promise through the command a user types: exit status 1, one line naming the file."""
    ws, source = batch
    before = source.read_bytes()
    done = subprocess.run(
        [str(BIN / "evergreen"), "predict", "-i", "batch.parquet", "-o", "batch.parquet"],
        cwd=ws.root,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "is the input file" in done.stderr and "Traceback" not in done.stderr
    assert source.read_bytes() == before


def test_an_output_is_replaced_whole_and_leaves_no_temporary_file(batch):
    """Promise: the output is written to a temporary file and moved into place: an earlier output is replaced
    by a complete new one, and no temporary file is left beside it."""
    ws, source = batch
    output = ws.root / "out" / "scored.csv"
    output.parent.mkdir()
    output.write_text("an earlier, longer output\n" * 1000)
    result = score_file(ws, source, output)
    assert result.rows_scored == 20 and pl.read_csv(output).height == 20
    assert sorted(p.name for p in output.parent.iterdir()) == ["scored.csv"]
