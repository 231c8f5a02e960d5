"""A train split read from its Parquet files in bounded memory: seeded samples, shards, shuffled batches.

A split at least `train.stream.from_rows` long is never loaded whole. The train stage hands training a
`ParquetRows` (the files and their row counts, from the Parquet footers), and each epoch reads it again, a
record batch at a time:
- the pieces are taken in a fresh seeded order;
- their rows pass through a shuffle buffer of `train.stream.shuffle_rows`: the buffer is filled, permuted
  with the training generator, and emptied in mini-batches. A batch mixes rows from every piece the buffer
  spans, not from the whole split: the price of bounded memory, as in any streaming loader;
- under torchrun each rank reads only its own pieces (`shards`, balanced by rows), and every rank takes the
  same number of steps: one that runs out first pads with a row of weight 0, as `Group.shard` does.

What cannot stream is fitted on a seeded sample (`evergreen.data.parquet_rows.sample_rows`), read one piece at
a time: the medians, tabm's bin edges, and the valid rows that stop training early.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from evergreen.data.parquet_rows import ParquetRows
from evergreen.model.distributed import Group
from evergreen.model.preprocess import counts


def tensor(array: np.ndarray) -> torch.Tensor:
    """`array` as a tensor without a copy, unless it is read-only (polars hands some columns over without a
    copy, read-only), which torch warns is undefined behaviour to wrap: copied only then."""
    return torch.from_numpy(np.require(array, requirements="W"))


def shards(rows: Sequence[int], world: int) -> list[list[int]]:
    """The pieces each rank reads, balanced by rows: largest first, each to the rank with fewest rows so far."""
    owned: list[list[int]] = [[] for _ in range(world)]
    load = [0] * world
    for index in sorted(range(len(rows)), key=lambda i: (-rows[i], i)):
        rank = load.index(min(load))
        owned[rank].append(index)
        load[rank] += rows[index]
    return [sorted(pieces) for pieces in owned]


Batch = tuple[torch.Tensor, torch.Tensor]


def shuffled(chunks: Iterator[Batch], buffer_rows: int, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """Mini-batches of `batch_size` rows (the last one shorter) from `chunks`, shuffled `buffer_rows` at a time."""
    held: list[Batch] = []
    count = 0
    for chunk in chunks:
        held.append(chunk)
        count += len(chunk[0])
        if count < buffer_rows:
            continue
        x, y = _permuted(held, generator)
        full = len(x) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        held, count = [(x[full:], y[full:])], len(x) - full
    if count:
        x, y = _permuted(held, generator)
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]


def _permuted(held: list[Batch], generator: torch.Generator) -> Batch:
    x, y = torch.cat([c[0] for c in held]), torch.cat([c[1] for c in held])
    order = torch.randperm(len(x), generator=generator)
    return x[order], y[order]


@dataclass(frozen=True)
class StreamedRows:
    """The train split as training reads it when streamed: per rank, per epoch, shuffled mini-batches.

    `encode` turns a frame of rows into the model's input matrix and its training target (the same calls the
    in-memory path makes on the whole split)."""

    source: ParquetRows
    columns: list[str]
    encode: Callable[[pl.DataFrame], tuple[np.ndarray, np.ndarray]]
    buffer_rows: int

    @property
    def n(self) -> int:
        return self.source.total

    def steps(self, batch_size: int, world: int) -> int:
        """Steps per epoch: every rank takes as many as the rank with the most rows needs."""
        local = math.ceil(batch_size / world)
        return max(
            math.ceil(sum(self.source.rows[i] for i in mine) / local) for mine in shards(self.source.rows, world)
        )

    def class_counts(self, target: str, classes: list[Any]) -> np.ndarray:
        """Rows per class, in the order of `classes`, in one streaming pass."""
        found = counts(self.source.lazy(), target)
        return np.array([found.get(label, 0) for label in classes], dtype=np.float64)

    def batches(
        self, generator: torch.Generator, batch_size: int, group: Group
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, float]]:
        """This rank's epoch: (x, y, its own rows, its loss's weight) for each step. In several processes the
        global batch is `batch_size`, each rank's share of it a local batch of its own rows."""
        world = group.world
        local = math.ceil(batch_size / world)
        mine = shards(self.source.rows, world)[group.rank]
        order = [mine[i] for i in torch.randperm(len(mine), generator=generator).tolist()]
        chunks = (self._tensors(frame) for frame in self.source.read(order, self.columns))
        stream = shuffled(chunks, self.buffer_rows, local, generator)
        pad: Batch | None = None
        for _ in range(self.steps(batch_size, world)):
            batch = next(stream, None)
            if batch is None:  # this rank's rows are spent: one row at weight 0 keeps DDP's all-reduce in step
                pad = pad or self._tensors(next(self.source.read([0], self.columns)).head(1))
                yield pad[0], pad[1], 0, 0.0
                continue
            x, y = batch
            pad = pad or (x[:1], y[:1])
            yield x, y, len(x), 1.0 if world == 1 else len(x) / local

    def _tensors(self, frame: pl.DataFrame) -> Batch:
        x, y = self.encode(frame)
        return tensor(x), tensor(y)
