"""Split clean data into train, valid and test: by time (cut dates or fractions) or at random.

A split must not leak: with a time split every valid row is later than every train row and every test row
later than every valid row; in any split no id appears in two parts. `check_leakage` enforces both.
The method defaults to time when the data declares a timestamp, else random (`SplitConfig.method_for`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import polars as pl

from evergreen.config import DataConfig, SplitConfig
from evergreen.data.partitions import part_path, read_manifest
from evergreen.data.schema import EVENT_TIME
from evergreen.errors import DataError
from evergreen.workspace import Workspace

Splits = dict[str, pl.DataFrame]


def split(frame: pl.DataFrame, data: DataConfig, config: SplitConfig) -> Splits:
    """Split a clean frame; raises `DataError` when a part would be empty."""
    if config.method_for(data) == "time":
        if EVENT_TIME not in frame.columns:
            raise DataError("split.method is 'time' but data.timestamp is not declared (use method: random)")
        if missing := frame[EVENT_TIME].null_count():
            raise DataError(f"split: {missing} of the {frame.height} rows have no event time; a time split "
                            "places rows by their time (declare the timestamp's missing: quarantine)")  # fmt: skip
        parts = _split_by_time(frame, config)
    else:
        parts = _split_at_random(frame, data, config)
    for name, part in parts.items():
        if part.height == 0:
            raise DataError(f"split: the {name!r} part is empty ({_describe(frame, config)})")
    check_leakage(parts, data, config)
    return parts


def _describe(frame: pl.DataFrame, config: SplitConfig) -> str:
    if config.valid_from is not None and EVENT_TIME in frame.columns:
        first, last = frame[EVENT_TIME].min(), frame[EVENT_TIME].max()
        return (
            f"data runs from {first} to {last}; split.valid_from is {config.valid_from.date()} and "
            f"split.test_from is {config.test_from.date() if config.test_from else None}"
        )
    fractions = f"valid_fraction {config.valid_fraction}, test_fraction {config.test_fraction}"
    return f"{frame.height} rows with {fractions}"


def time_cuts(frame: pl.DataFrame, config: SplitConfig) -> tuple[dt.datetime, dt.datetime]:
    """The declared cuts, else the moments that leave the fractions of `frame`'s times after them."""
    if config.valid_from is not None and config.test_from is not None:
        return config.valid_from, config.test_from
    times = frame[EVENT_TIME].sort()
    # cut at a moment, not a row count, so rows sharing a timestamp stay together
    valid_rank, test_rank = cut_ranks(len(times), config)
    return times[valid_rank], times[test_rank]


def cut_ranks(rows: int, config: SplitConfig) -> tuple[int, int]:
    """The positions, in the sorted times of `rows` rows, of the moments that cut valid and test off."""
    return int(rows * (1 - config.valid_fraction - config.test_fraction)), int(rows * (1 - config.test_fraction))


def _split_by_time(frame: pl.DataFrame, config: SplitConfig) -> Splits:
    return at_cuts(frame, *time_cuts(frame, config))


def at_cuts(frame: pl.DataFrame, valid_from: dt.datetime, test_from: dt.datetime) -> Splits:
    """Rows before `valid_from` to train, from `test_from` on to test, the rest to valid; sorted by time."""
    ordered = frame.sort(EVENT_TIME)
    when = pl.col(EVENT_TIME)
    return {
        "train": ordered.filter(when < valid_from),
        "valid": ordered.filter((when >= valid_from) & (when < test_from)),
        "test": ordered.filter(when >= test_from),
    }


def by_unit(frame: pl.DataFrame, unit: pl.Expr | pl.Series, config: SplitConfig) -> Splits:
    """Each row by its place in [0, 1): the last `test_fraction` to test, the `valid_fraction` before it to
    valid, the rest to train."""
    test_cut = 1 - config.test_fraction
    valid_cut = test_cut - config.valid_fraction
    return {
        "train": frame.filter(unit < valid_cut),
        "valid": frame.filter((unit >= valid_cut) & (unit < test_cut)),
        "test": frame.filter(unit >= test_cut),
    }


def _split_at_random(frame: pl.DataFrame, data: DataConfig, config: SplitConfig) -> Splits:
    stratify = config.stratify and data.task == "classification"
    groups = [data.target.name] if stratify else []
    # a seeded random rank within each stratum, then fixed fractions of each stratum
    ranked = frame.with_columns(
        _u=pl.int_range(pl.len()).shuffle(seed=config.seed).over(groups or pl.lit(0)),
        _n=pl.len().over(groups or pl.lit(0)),
    ).with_columns(_q=(pl.col("_u") + 0.5) / pl.col("_n"))
    parts = by_unit(ranked, pl.col("_q"), config)
    return {name: part.drop("_u", "_n", "_q") for name, part in parts.items()}


def check_leakage(parts: Splits, data: DataConfig, config: SplitConfig) -> None:
    """Raise `DataError` when the parts overlap in time (time split) or share an id."""
    if config.method_for(data) == "time":
        for earlier, later in (("train", "valid"), ("valid", "test")):
            last, first = parts[earlier][EVENT_TIME].max(), parts[later][EVENT_TIME].min()
            if last is not None and first is not None and last >= first:
                raise DataError(f"split leaks: {earlier} ends at {last}, after {later} starts at {first}")
    if data.id_column is not None:
        name = data.id_column.name
        for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
            shared = parts[a].join(parts[b], on=name, how="semi")[name]
            if shared.len():
                examples = ", ".join(map(str, shared.head(5).to_list()))
                raise DataError(f"split leaks: {shared.len()} {name} value(s) are in both {a} and {b}: {examples}")


_RARE = 5  # fewer rows of a class than this in valid or test: its metrics there are mostly noise


def summarize(parts: Splits, data: DataConfig | None = None) -> dict[str, object]:
    """Rows and time range per part, for `metrics/split.json`; with a classification `data`, rows per class
    and a `warnings` list naming each class that is missing from (or rare in) the valid or test part."""
    out: dict[str, object] = {}
    for name, part in parts.items():
        entry: dict[str, object] = {"rows": part.height}
        if EVENT_TIME in part.columns:
            entry["from"] = str(part[EVENT_TIME].min())
            entry["to"] = str(part[EVENT_TIME].max())
        out[name] = entry
    if data is not None and data.task == "classification":
        out["warnings"] = class_warnings(parts, data)
    return out


def class_warnings(parts: Splits, data: DataConfig) -> list[str]:
    """A line for each class (declared, or seen in any part) missing from or rare in the valid or test part."""
    target = data.target.name
    return class_warnings_from_counts(
        {name: dict(part[target].value_counts().iter_rows()) for name, part in parts.items()}, data
    )


def class_warnings_from_counts(counts: dict[str, dict[object, int]], data: DataConfig) -> list[str]:
    """`class_warnings` from rows per class of each part (what a partitioned split keeps in its manifest)."""
    target = data.target.name
    classes = data.target.allowed or sorted({c for part in counts.values() for c in part if c is not None}, key=str)
    warnings = []
    for name in ("valid", "test"):
        missing = [c for c in classes if not counts.get(name, {}).get(c)]
        rare = [f"{c} ({counts[name][c]})" for c in classes if 0 < counts.get(name, {}).get(c, 0) < _RARE]
        if missing:
            warnings.append(f"class(es) {', '.join(map(str, missing))} of {target!r} missing from the {name} part")
        if rare:
            warnings.append(f"class(es) {', '.join(rare)} of {target!r} have fewer than {_RARE} rows in {name}")
    return warnings


def row_keys(frame: pl.DataFrame, data: DataConfig) -> pl.Series:
    """What identifies each row across runs: its id as text, else a digest of its declared columns' values."""
    if data.id_column is not None:
        return frame[data.id_column.name].cast(pl.String).alias("key")
    columns = [c for c in data.names if c in frame.columns]
    text = frame.select(
        pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in columns], separator="\x1f")
    ).to_series()
    return pl.Series("key", [hashlib.sha1(t.encode()).hexdigest()[:20] for t in text.to_list()], dtype=pl.String)


def key_kind(data: DataConfig) -> str:
    """How `row_keys` identifies a row, recorded with a model so two models' keys are only compared like for like."""
    return f"id:{data.id_column.name}" if data.id_column is not None else "row content"


def split_pieces(workspace: Workspace, name: str) -> list[Path]:
    """The Parquet files that hold one part written by the `split` stage: one file, or a partitioned split's
    pieces that its manifest names (never a piece a failed or killed run left beside them)."""
    path = workspace.split(name)
    if not path.exists():
        raise DataError(f"{workspace.show(path)}: no such split (run `dvc repro split` first)")
    if path.is_file():
        return [path]
    entries = read_manifest(workspace.split_manifest)["partitions"]
    pieces = [part_path(path, e["name"]) for e in entries if e["stats"][name]["rows"]]
    if not pieces:
        raise DataError(f"{workspace.show(workspace.split_manifest)}: no {name} rows (run `dvc repro split`)")
    return pieces


def read_split(workspace: Workspace, name: str) -> pl.DataFrame:
    """One part written by the `split` stage, whole in memory; a missing file names the stage that makes it."""
    return pl.read_parquet(split_pieces(workspace, name))
