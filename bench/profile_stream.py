"""Profile a streamed train split's data path (issue 22): memory after each step, and an epoch's data alone.

    python bench/profile_stream.py memory PROJECT   # PROJECT: a split project, e.g. one bench_train_stream.py built
    python bench/profile_stream.py epoch            # 1M generated rows: a streamed epoch's batches vs in memory

`memory` runs what the train stage runs before and during an epoch (the train pieces, the 1M-row sample, the
streaming fit of preprocessing, the valid sample, the checkpoint's hash of the pieces, one epoch of batches)
and prints RSS and peak RSS after each step. `epoch` times one epoch's batches, no training, read and shuffled
from 10 Parquet pieces against the in-memory path's random gather over the same rows.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import polars as pl  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from bench_split import _part, params_for  # noqa: E402

from evergreen.config import parse_params  # noqa: E402
from evergreen.data.parquet_rows import ParquetRows, sample_rows  # noqa: E402
from evergreen.model.distributed import Group  # noqa: E402
from evergreen.model.preprocess import encode_target, fit_preprocessing  # noqa: E402
from evergreen.model.stream import StreamedRows  # noqa: E402
from evergreen.model.train import InMemoryRows  # noqa: E402

PARAMS = parse_params({**params_for("time", 1), "model": {"target_transform": "none"}})
BEGAN = time.perf_counter()


def _say(label: str) -> None:
    rss = psutil.Process().memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{label}: rss {rss:.0f} MiB, peak {peak:.0f} MiB, {time.perf_counter() - BEGAN:.1f} s", flush=True)


def _stream(source: ParquetRows, prep: object) -> StreamedRows:
    encode = lambda f: (prep.matrix(f), encode_target(f, prep))  # type: ignore[attr-defined]  # noqa: E731
    return StreamedRows(source, [*prep.input_columns, "y"], encode, 262_144)  # type: ignore[attr-defined]


def memory(project: Path) -> None:
    _say("imports")
    split = project / "data/split"
    train = ParquetRows.of(sorted((split / "train.parquet").glob("*.parquet")))
    sample = sample_rows(train, 1_000_000, 42)
    _say(f"train sample of 1M rows from {train.total} in {len(train.pieces)} pieces")
    prep = fit_preprocessing(train, PARAMS.data, PARAMS.model, sample)
    _say("preprocessing fitted in bounded passes")
    sample_rows(ParquetRows.of(sorted((split / "valid.parquet").glob("*.parquet"))), 1_000_000, 42)
    _say("valid sample")
    train.content_key()
    _say("the pieces' hash")
    for _ in _stream(train, prep).batches(torch.Generator().manual_seed(0), 4096, Group()):
        pass
    _say("one epoch of batches")


def epoch() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(10):
            paths.append(Path(tmp) / f"{i}.parquet")
            _part(1 + i * 100_000, 100_000, i).drop("_event_time").write_parquet(paths[-1])
        source, whole = ParquetRows.of(paths), pl.read_parquet(paths)
        prep = fit_preprocessing(whole, PARAMS.data, PARAMS.model)
        generator = torch.Generator().manual_seed(0)
        began = time.perf_counter()
        steps = sum(1 for _ in _stream(source, prep).batches(generator, 4096, Group()))
        print(f"streamed epoch, batches only: {time.perf_counter() - began:.2f} s ({steps} steps)")
        rows = InMemoryRows(torch.from_numpy(prep.matrix(whole)), torch.from_numpy(encode_target(whole, prep)))
        began = time.perf_counter()
        steps = sum(1 for _ in rows.batches(generator, 4096, Group()))
        print(f"in-memory epoch, batches only: {time.perf_counter() - began:.2f} s ({steps} steps)")


if __name__ == "__main__":
    memory(Path(sys.argv[2])) if sys.argv[1] == "memory" else epoch()
