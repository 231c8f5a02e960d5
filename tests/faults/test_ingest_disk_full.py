"""A disk that fills up while `ingest` writes (issue 19, part 5): one line, no leftovers, a clean recovery.

The raw data lives on a tmpfs of 192 KiB mounted for the test (the tests run as root in CI and here). Where
mounting is refused, polars' Parquet writer is made to fail as a full disk makes it fail (a `ComputeError`
ending in "(os error 28)"): the stage's handling is the same, only the free space it reports is real.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from evergreen.config import Params
from evergreen.errors import EvergreenError
from evergreen.stages import ingest as ingest_stage
from evergreen.workspace import Workspace

HEADER = "id,day,hr,weather,temp,hum,y\n"
SOURCE = HEADER + "1,2011-01-01,0,1,0.2,0.5,10\n2,2011-01-01,1,2,0.3,0.6,12\n"


def _mount(folder: Path, size: str, *options: str) -> bool:
    command = ["mount", "-t", "tmpfs", "-o", ",".join([*options, f"size={size}"]), "tmpfs", str(folder)]
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """`data/raw` on a 192 KiB file system; the fixture's value makes it 8 MiB (the operator freed space)."""
    folder = tmp_path / "data" / "raw"
    folder.mkdir(parents=True)
    if _mount(folder, "192k"):
        try:
            yield lambda: None if _mount(folder, "8m", "remount") else pytest.fail("remount refused")
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return
    # the last resort: no mount allowed here
    write = pl.DataFrame.write_parquet
    full = {"on": True}

    def failing(self: pl.DataFrame, file: str, *args: object, **kwargs: object) -> None:
        if full["on"] and self.height > 1000:
            raise pl.exceptions.ComputeError("parquet: underlying IO error: No space left on device (os error 28)")
        write(self, file, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing)
    yield lambda: full.update(on=False)


def _big_batch(path: Path, n: int = 20_000) -> None:
    rng = np.random.default_rng(0)
    pl.DataFrame(
        {
            "id": np.arange(100, 100 + n).astype(str),
            "day": ["2011-01-02"] * n,
            "hr": rng.integers(0, 24, n).astype(str),
            "weather": rng.integers(1, 4, n).astype(str),
            "temp": rng.uniform(0, 1, n).astype(str),  # random digits: the Parquet part cannot be small
            "hum": rng.uniform(0, 1, n).astype(str),
            "y": rng.integers(0, 100, n).astype(str),
        }
    ).write_csv(path)


def _leftovers(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.rglob("*") if ".staging" in str(p.relative_to(raw)) or p.suffix == ".tmp")


def test_a_full_disk_fails_ingest_in_one_line_and_leaves_nothing_behind(tmp_path, tiny: Params, small_disk):
    """Promise: when the disk fills up while `ingest` writes, the stage fails with one line naming the file it
    was writing and the space free, removes this run's unfinished parts and staging files (the raw data is as
    the last good run left it), and once space is freed the next run ingests every arrival once. Attack: a
    20,000-row batch landed onto a 192 KiB file system. Before: a polars ComputeError traceback, and the
    staging folder and this run's parts stayed behind until the next run."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "source.csv").write_text(SOURCE)
    ws = Workspace(tmp_path, tiny)
    raw_folder = ws.raw.parent
    ingest_stage.run(ws)  # a small first arrival fits
    before = {p.relative_to(raw_folder) for p in raw_folder.rglob("*")}
    manifest = ws.raw_manifest.read_text()

    ws.incoming.mkdir(parents=True)
    _big_batch(ws.incoming / "2011-01-02.csv")
    with pytest.raises(EvergreenError) as err:
        ingest_stage.run(ws)
    message = str(err.value)
    assert "\n" not in message and "no space left on device while writing data/raw/" in message, message
    assert ".parquet: " in message and " free there" in message, message
    assert _leftovers(raw_folder) == []
    assert {p.relative_to(raw_folder) for p in raw_folder.rglob("*")} == before  # as the last good run left it
    assert ws.raw_manifest.read_text() == manifest

    small_disk()  # space is freed
    ingest_stage.run(ws)
    raw = pl.read_parquet(ws.raw)
    assert raw.height == 20_002 and raw["id"].n_unique() == 20_002  # every arrival once, no duplicate
    assert json.loads(ws.ingest_metrics.read_text())["rows_out"] == 20_002
    assert _leftovers(raw_folder) == []
