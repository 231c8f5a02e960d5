"""One split part's Parquet files read in bounded memory: their rows counted from the footers, one record
batch at a time, or a seeded sample read one file at a time (`evergreen.model.stream` trains on them)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

READ_ROWS = 65_536  # rows per Parquet record batch: a few MB of any table


@dataclass(frozen=True)
class ParquetRows:
    """The Parquet files of one split part, with the rows in each (read from their footers, not their data)."""

    pieces: tuple[Path, ...]
    rows: tuple[int, ...]

    @classmethod
    def of(cls, pieces: Sequence[Path]) -> ParquetRows:
        return cls(tuple(pieces), tuple(pq.ParquetFile(p).metadata.num_rows for p in pieces))

    @property
    def total(self) -> int:
        return sum(self.rows)

    def lazy(self) -> pl.LazyFrame:
        """All rows as one lazy query: what polars' streaming engine passes over in bounded memory."""
        return pl.scan_parquet(list(self.pieces))

    def content_key(self) -> str:
        """A hash of the files' bytes: a checkpoint resumes only on the data it was written for."""
        digest = hashlib.sha256()
        for piece in self.pieces:
            with piece.open("rb") as file:
                while block := file.read(1 << 20):
                    digest.update(block)
        return digest.hexdigest()

    def read(self, order: Sequence[int] | None = None, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The rows of the pieces at `order` (all, as listed, by default), in that order, one record batch at a
        time; every column unless `columns` names some."""
        order = range(len(self.pieces)) if order is None else order
        for index in order:
            for batch in pq.ParquetFile(self.pieces[index]).iter_batches(batch_size=READ_ROWS, columns=columns):
                yield pl.from_arrow(batch)  # type: ignore[misc]  # a record batch is always a frame


def sample_rows(source: ParquetRows, n: int, seed: int) -> pl.DataFrame:
    """`n` rows drawn without replacement (every row when there are fewer), in file order, reading one piece
    at a time: memory is the sample and one piece, whatever the split's length. How many rows each piece gives
    is drawn first (a multivariate hypergeometric draw), then which, so no index over all rows is ever held."""
    if source.total <= n:
        return pl.read_parquet(list(source.pieces))
    rng = np.random.default_rng(seed)
    taken = rng.multivariate_hypergeometric(np.array(source.rows), n)
    parts = []
    for piece, rows, k in zip(source.pieces, source.rows, taken, strict=True):
        if k:
            parts.append(pl.read_parquet(piece)[np.sort(rng.choice(rows, size=k, replace=False))])
    return pl.concat(parts)
