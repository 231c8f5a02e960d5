"""File I/O for data: finding source files, reading them as text, writing Parquet and JSON atomically.

Reading keeps every cell as the text it arrived as (a strict typed reader rejects real dirt such as `"0 "`);
`clean` does the typing. Every problem with a file is a `DataError` that names the file.

Readable files are CSV (plain, gzip `.csv.gz` or zstd `.csv.zst`) and Parquet (`.parquet`, `.pq`). A data
file is never skipped in silence: in a source folder or the landing folder, any other file is a `DataError`
naming it and the accepted suffixes. Only DVC pointer files (`*.dvc`), `.gitignore` and other hidden
dotfiles (DVC and git put them next to the data), and a `README.md` describing the folder, are ignored there.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
import polars as pl

from evergreen.config import DataConfig
from evergreen.data.schema import SOURCE_FILE, SOURCE_ROW
from evergreen.errors import DataError, EvergreenError

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zst")  # polars reads zstd itself; gzip is opened here
PARQUET_SUFFIXES = (".parquet", ".pq")
READABLE_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES


def is_ignored(name: str) -> bool:
    """True for the files kept next to data that are not data: DVC pointers, `.gitignore`, hidden dotfiles,
    and the folder's `README.md`."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return base.startswith(".") or base.endswith(".dvc") or base == "README.md"


def is_readable(name: str) -> bool:
    """True when the name ends in a suffix `read_text_table` reads (case-insensitive)."""
    return name.lower().endswith(READABLE_SUFFIXES)


def _refuse_unreadable(names: list[str], where: str) -> None:
    unreadable = [n for n in names if not is_readable(n)]
    if unreadable:
        raise DataError(
            f"{where}: cannot read {', '.join(unreadable)}: a data file must end in {', '.join(READABLE_SUFFIXES)}"
            " (rename or compress it so, or move it out; only *.dvc, README.md and hidden files are ignored)"
        )


def resolve_source(source: str) -> list[str]:
    """Expand a path, glob or fsspec URL into a sorted list of files; an empty match is an error.

    A folder is read whole: any file in it that is not readable (and not ignored, see `is_ignored`) is a
    `DataError`, and so is a glob match that is not readable.
    """
    fs, _, paths = fsspec.get_fs_token_paths(source)
    files = sorted(p for p in paths if fs.isfile(p) and not is_ignored(p))
    if not files and fs.isdir(source):
        files = sorted(p for p in fs.find(source) if not is_ignored(p))
    if not files:
        raise DataError(f"data.source: no file matches {source!r}")
    _refuse_unreadable(files, f"data.source {source!r}")
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    if protocol != "file":
        return [f"{protocol}://{p}" for p in files]
    # relative paths keep lineage (and so the raw data's hash) the same in every clone of the project
    return [os.path.relpath(p) if Path(p).is_relative_to(Path.cwd()) else p for p in files]


def list_landing(folder: Path) -> list[str]:
    """Files waiting in the landing folder, in name order (name files by arrival time to keep order).

    DVC pointers (`*.dvc`), `.gitignore`, hidden dotfiles and `README.md` are ignored. Anything else that is
    not a readable file (another suffix, a sub-folder) is a `DataError` naming it: no arrival is skipped.
    """
    if not folder.exists():
        return []
    entries = sorted(p for p in folder.iterdir() if not is_ignored(p.name))
    folders = [p.name for p in entries if not p.is_file()]
    if folders:
        raise DataError(f"{folder}: sub-folder(s) {', '.join(folders)} in the landing folder: land files directly")
    _refuse_unreadable([p.name for p in entries], str(folder))
    return [str(p) for p in entries]


def _first_bad_utf8_line(payload: bytes) -> int | None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return payload.count(b"\n", 0, exc.start) + 1
    return None


def _gunzip(path: str, payload: bytes) -> bytes:
    try:
        return gzip.decompress(payload)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be decompressed as gzip ({exc})") from None


def _datetime_text(column: pl.Expr, dtype: pl.Datetime, declared: str | None) -> pl.Expr:
    """A Datetime cell as a CSV export would write it, in ISO-8601: for a `date` column, the ISO date where the
    value is a midnight (in its own time zone: pandas has no date type, and stores a date as a midnight);
    otherwise date and time, in UTC for a value with a time zone (cleaned date-times carry none)."""
    if declared == "date":
        wall = column.dt.replace_time_zone(None) if dtype.time_zone is not None else column
        whole = wall.dt.strftime("%Y-%m-%dT%H:%M:%S%.f")  # a time of day in a date column: clean refuses it
        return pl.when(wall.dt.truncate("1d") == wall).then(wall.dt.strftime("%Y-%m-%d")).otherwise(whole)
    utc = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone is not None else column
    return utc.dt.cast_time_unit("us").dt.strftime("%Y-%m-%dT%H:%M:%S%.f")


def _parquet_as_text(frame: pl.DataFrame, data: DataConfig) -> pl.DataFrame:
    """Every cell of a Parquet table as the text the same table exported to CSV would hold, so that `clean`
    reads both alike: a Date as `2024-01-31`, a Datetime as `2024-01-31T08:00:00` (see `_datetime_text`).
    A plain cast would write `2024-01-31 00:00:00.000000`, which is no date: every row would be quarantined."""
    declared = {c.name: c.type for c in data.columns}
    columns = []
    for name, dtype in frame.schema.items():
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            column = _datetime_text(column, dtype, declared.get(name))
        elif isinstance(dtype, pl.Date):
            column = column.dt.strftime("%Y-%m-%d")
        columns.append(column.cast(pl.String).alias(name))
    return frame.select(columns)


def read_text_table(path: str, data: DataConfig) -> pl.DataFrame:
    """Read one CSV (plain, .gz or .zst) or Parquet file with every declared column as text, plus lineage.

    Raises `DataError` naming the file for: a suffix it does not read, an empty file, a header with no rows,
    bytes that are not UTF-8 (with the line), and columns missing from or not declared in the file.
    """
    if not is_readable(path):
        raise DataError(f"{path}: cannot read this file: a data file must end in {', '.join(READABLE_SUFFIXES)}")
    with fsspec.open(path, "rb") as handle:
        payload = handle.read()
    if path.lower().endswith(".gz"):
        payload = _gunzip(path, payload)
    if not payload.strip():
        raise DataError(f"{path}: the file is empty")
    if path.lower().endswith(CSV_SUFFIXES):
        bad_line = _first_bad_utf8_line(payload) if not path.lower().endswith(".zst") else None
        if bad_line is not None:
            raise DataError(f"{path}: line {bad_line} is not valid UTF-8 text (re-export the file as UTF-8)")
        try:
            frame = pl.read_csv(io.BytesIO(payload), infer_schema=False, truncate_ragged_lines=False)
        except (pl.exceptions.PolarsError, OSError) as exc:  # a damaged zstd stream is an OSError
            raise DataError(f"{path}: cannot be read as CSV: {exc}") from None
    else:
        try:
            frame = pl.read_parquet(io.BytesIO(payload))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"{path}: cannot be read as Parquet: {exc}") from None
        frame = _parquet_as_text(frame, data)
    _check_columns(path, frame.columns, data.names)
    if frame.height == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    return frame.select(data.names).with_columns(
        pl.lit(path).alias(SOURCE_FILE),
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(SOURCE_ROW),
    )


def _check_columns(path: str, found: list[str], declared: list[str]) -> None:
    missing = [c for c in declared if c not in found]
    extra = [c for c in found if c not in declared]
    problems = []
    if missing:
        problems.append(f"missing declared column(s) {', '.join(map(repr, missing))}")
    if extra:
        problems.append(f"unexpected column(s) {', '.join(map(repr, extra))} not declared in params.yaml")
    if problems:
        raise DataError(f"{path}: the columns differ from data.columns: " + "; ".join(problems))


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (another thread may be creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: Path) -> None:
    """Rename a finished temporary file onto `path`, with the mode a plain `open` would have given it.

    `tempfile.mkstemp` creates files 0600 whatever the umask: a service running as another account of the
    same group could then not read the champion pointer, a manifest or a data part."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def _atomic_target(path: Path, tmp_dir: Path | None = None) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    where = tmp_dir or path.parent
    where.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=where, prefix=f".{path.name}.", suffix=".tmp")


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException, path: Path | str) -> OSError | None:
    """A full disk (or quota) as an `OSError` naming `path`, or None when `exc` is something else. polars
    reports one as a `ComputeError` whose text ends in "(os error 28)", which no caller would recognise."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return exc if exc.filename else OSError(exc.errno, os.strerror(exc.errno), str(path))
    for code in DISK_FULL:
        if f"(os error {code})" in str(exc):
            return OSError(code, os.strerror(code), str(path))
    return None


def write_parquet(frame: pl.DataFrame | pl.LazyFrame, path: Path, *, tmp_dir: Path | None = None) -> None:
    """Write a Parquet file so that readers see the old file or the new one, never half of one.

    A lazy frame is streamed to disk (`sink_parquet`), so it is never held whole. `tmp_dir` (on the same file
    system) holds the half-written file instead of the target's folder: a partitioned dataset's folder must hold
    only its parts, or a reader of the folder would trip over the temporary file.
    """
    fd, tmp = _atomic_target(path, tmp_dir)
    os.close(fd)
    try:
        try:
            if isinstance(frame, pl.LazyFrame):
                frame.sink_parquet(tmp)
            else:
                frame.write_parquet(tmp)
        except pl.exceptions.PolarsError as exc:
            full = disk_full(exc, path)
            if full is None:
                raise
            raise full from None
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def parquet_writer(path: Path) -> Iterator[Callable[[pl.DataFrame], None]]:
    """A Parquet file written one frame at a time, never held whole, and published as `write_parquet` does:
    readers see the old file or the new one. Nothing is published when the block raises.

    Every frame takes the first one's schema (a later piece's column of nulls keeps the column's type)."""
    import pyarrow.parquet as pq  # here: the data stages, which import this module, never need it

    fd, tmp = _atomic_target(path)
    os.close(fd)
    writer: Any = None

    def write(frame: pl.DataFrame) -> None:
        nonlocal writer
        table = frame.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
        writer.write_table(table.cast(writer.schema))

    try:
        yield write
        if writer is None:
            raise ValueError(f"no rows were written to {path}")
        writer.close()
        publish(tmp, path)
    except OSError as exc:
        raise disk_full(exc, path) or exc from None
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path, error: type[EvergreenError], *, subject: str = "", missing: str = "missing") -> Any:
    """A parsed JSON file; a missing or unparseable one is `error`, one line naming the file.

    `subject` ("the model card is ") and `missing` word the messages for the caller's kind of file.
    """
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: {subject}not valid JSON ({' '.join(str(exc).split())})") from None


def write_json(payload: dict[str, Any], path: Path) -> None:
    """Write JSON atomically, keys in a stable order so `dvc metrics diff` and git diffs stay readable."""
    fd, tmp = _atomic_target(path)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, default=str)
        handle.write("\n")
    publish(tmp, path)
