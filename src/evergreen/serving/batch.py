"""`evergreen predict`: score a CSV or Parquet file with the champion, as the service would.

A file to score is raw data, like an ingest input: every cell is read as text and typed by the cleaning code
(`data.clean.clean`), under the service's rules (`serving.schema.serving_data`): the feature columns are
required, the id and timestamp columns optional, other declared columns (the target, ignored columns) are
allowed and left out, undeclared columns are an error. Evergreen's own columns (names starting with `_`, such
as the `_event_time` of `data/split/test.parquet`) are ignored, so the project's split files score as they
are. Ranges and allowed sets are not enforced (the graph scores an unseen category or an out-of-range value,
as the service does), missing values are scored where the service accepts them, and a row that cannot be
scored (an unparseable cell, a refused missing value) goes to a quarantine file next to the output, with its
reason and its row in the input. Nothing is dropped
silently: scored rows plus quarantined rows are the rows of the input.

The output holds `_source_row` (1-based row in the input), the request columns as typed, `prediction` (and a
`p_<class>` column per class for classification) and `model_version`. Batch scores are not written to the
prediction log: that log is what the service saw.

The output (and the quarantine file) is written to a temporary file and moved into place, so a reader sees the
old file or the new one. An output that is the input file (or its quarantine file is) is refused before
anything is read: scoring a file in place would destroy the rows it scores.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from evergreen.config import Column
from evergreen.data.clean import clean
from evergreen.data.io import publish, read_text_table, write_parquet
from evergreen.data.schema import EVENT_TIME, LINEAGE, SOURCE_FILE, SOURCE_ROW, request_columns
from evergreen.errors import DataError
from evergreen.inference import check_compatible, load_champion, predict, predicted_labels
from evergreen.registry.store import Registry
from evergreen.serving.schema import serving_data
from evergreen.workspace import Workspace

__all__ = ["BatchResult", "quarantine_path", "score_file", "score_frame"]

_PARQUET = (".parquet", ".pq")


@dataclass(frozen=True)
class BatchResult:
    """What `score_file` did, for the command to report."""

    model_version: str
    rows_in: int
    rows_scored: int
    rows_quarantined: int
    output: Path
    quarantine: Path | None
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else float("inf")


def quarantine_path(output: Path) -> Path:
    """Where the rows that could not be scored go: `scored.csv` -> `scored.quarantine.csv`."""
    return output.with_name(f"{output.stem}.quarantine{output.suffix}")


def is_internal(name: str) -> bool:
    """A column Evergreen adds (`_event_time`, `_source_file`, `_source_row`, `_reason`): never a data column."""
    return name.startswith("_")


def _header(path: str) -> list[str]:
    try:
        if path.lower().endswith(".csv"):
            return pl.read_csv(path, n_rows=0, infer_schema=False).columns
        return list(pl.read_parquet_schema(path))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from None


def _write(frame: pl.DataFrame, path: Path) -> None:
    if path.suffix.lower() in _PARQUET:
        write_parquet(frame, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.write_csv(tmp)
        publish(tmp, path)  # readers see the old file or the new one, never half of one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # also a hard link, or a path through a symlinked folder
    return a.resolve() == b.resolve()


def _check_paths(source: Path, output: Path) -> None:
    """`DataError` when writing the output or its quarantine file would overwrite the input."""
    for written, what in ((output, "the output"), (quarantine_path(output), "the quarantine file of the output")):
        if _same_file(source, written):
            raise DataError(
                f"{what} {written} is the input file {source}: scoring it would overwrite the rows it scores; "
                "write the predictions to another file"
            )


def score_frame(
    workspace: Workspace, raw: pl.DataFrame, model_version: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """Score a raw text frame (from `read_text_table`): (scored rows, quarantined rows, model version)."""
    params = workspace.params
    model = load_champion(Registry(workspace.registry), version=model_version)
    check_compatible(model, params.data)
    view, policy = serving_data(params.data, params.clean)
    present = [c for c in view.columns if c.name in raw.columns]
    timestamp = view.timestamp
    if timestamp is not None and not all(n in raw.columns for n in (timestamp.column, timestamp.hour_column) if n):
        timestamp = None  # the event time is only derived when the file carries the timestamp columns
    view = view.model_copy(update={"columns": present, "timestamp": timestamp})

    result = clean(raw.select(*view.names, *LINEAGE), view, policy)
    scored_rows = raw.filter(~pl.col(SOURCE_ROW).is_in(result.quarantine[SOURCE_ROW].implode()))[SOURCE_ROW]
    output = predict(model, result.clean)
    scored = result.clean.drop(EVENT_TIME, strict=False).with_columns(scored_rows.alias(SOURCE_ROW))
    scored = scored.select(SOURCE_ROW, *view.names)
    if model.task == "regression":
        scored = scored.with_columns(prediction=pl.Series(output, dtype=pl.Float64))
    else:
        scored = scored.with_columns(
            pl.Series("prediction", predicted_labels(model, output)),
            *(pl.Series(f"p_{c}", output[:, i], dtype=pl.Float64) for i, c in enumerate(model.classes)),
        )
    return scored.with_columns(model_version=pl.lit(model.version)), result.quarantine, model.version


def score_file(
    workspace: Workspace,
    input_path: Path | str,
    output_path: Path | str,
    model_version: str | None = None,
) -> BatchResult:
    """Score a CSV or Parquet file with the workspace's champion (or `model_version`); write the predictions
    and the quarantine file. Relative paths are taken from the current directory, as a command's arguments."""
    start = time.perf_counter()
    params = workspace.params
    output = Path(output_path)
    if output.suffix.lower() not in (".csv", *_PARQUET):
        raise DataError(f"{output}: the output must be a .csv or .parquet file")
    _check_paths(Path(input_path), output)
    source = str(input_path)
    features, annotations = request_columns(params.data)
    header = _header(source)
    required = {c.name for c in features}
    wanted = required | {c.name for c in annotations if c.name in header}
    # read every declared column the file has (and fail, naming them, on missing features or undeclared ones);
    # Evergreen's own columns (`_event_time`, lineage, `_reason`: a split or quarantine file) are read and dropped
    readable = [c for c in params.data.columns if c.name in header or c.name in required]
    declared = set(params.data.names)
    internal = [Column(name=n, type="str", role="ignore") for n in header if is_internal(n) and n not in declared]
    raw = read_text_table(source, params.data.model_copy(update={"columns": readable + internal}))
    raw = raw.drop(c.name for c in internal if c.name not in (SOURCE_FILE, SOURCE_ROW))  # ours replace the file's
    left_out = [c.name for c in readable if c.name not in wanted]  # the target, ignored columns
    scored, quarantined, version = score_frame(workspace, raw.drop(left_out), model_version)

    side = quarantine_path(output)
    _write(scored, output)
    if quarantined.height:
        _write(quarantined, side)
    elif side.exists():
        side.unlink()  # a quarantine file from an earlier run would describe other rows
    return BatchResult(
        model_version=version,
        rows_in=raw.height,
        rows_scored=scored.height,
        rows_quarantined=quarantined.height,
        output=output,
        quarantine=side if quarantined.height else None,
        seconds=time.perf_counter() - start,
    )
