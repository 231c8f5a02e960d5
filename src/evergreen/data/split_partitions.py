"""`split` partition by partition, for a history too large to split at once.

Below `split.partitioned_from_rows` clean rows the whole history is split in one frame (`data.split.split`):
stratified, exact fractions, time cuts at a moment of the sorted times. From that size on, each clean part is
split alone and a row's part is fixed by the row itself, so that an arrival splits only its own rows and no
earlier row ever changes part:

- time split: the row's time against two cuts. Declared cuts (`valid_from`, `test_from`) are used as given.
  Cuts from fractions are computed once, over the history's times only, and kept in the manifest while the
  split params are unchanged: later arrivals are placed against the same cuts, so new rows past the test cut
  go to test (split.json warns when a part outgrows its fraction twice over).
- random split: a stable hash (BLAKE2b, salted with `split.seed`) of the row's key (its id, else a digest of
  its declared values): the same row lands in the same part on every run, machine and library version.

Each part is written into a dataset folder per split (`data/split/train.parquet/` and so on), named after its
clean part, and the manifest (`data/split/manifest.json`) records each part's rows, time range and classes:
split.json and the time-leakage check come from it without reading a row again. The protocol is `clean`'s
(`data.partitions`): parts are reused by fingerprint, written atomically, the manifest last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from evergreen.config import DataConfig, SplitConfig
from evergreen.data import partitions as parts
from evergreen.data import split as whole
from evergreen.data.schema import EVENT_TIME
from evergreen.errors import DataError

PARTS = ("train", "valid", "test")


@dataclass(frozen=True)
class Layout:
    clean: str
    out: str  # the split stage's folder: one dataset per part, and the manifest
    manifest: str

    def dataset(self, name: str) -> Path:
        return Path(self.out) / f"{name}.parquet"


@dataclass(frozen=True)
class Task:
    name: str
    source: str  # the clean part
    data: DataConfig
    config: SplitConfig
    cuts: tuple[dt.datetime, dt.datetime] | None
    layout: Layout


def stable_unit(keys: pl.Series, seed: int) -> pl.Series:
    """Each key's place in [0, 1): a salted BLAKE2b of its text, the same on every machine and version."""
    salt = seed.to_bytes(8, "little", signed=True)
    scale = 2.0**-64
    return pl.Series(
        "unit",
        [
            int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8, salt=salt).digest(), "little") * scale
            for k in keys.to_list()
        ],
        dtype=pl.Float64,
    )


def assign(frame: pl.DataFrame, task: Task) -> dict[str, pl.DataFrame]:
    """One clean part's rows into train, valid and test, by each row's own time or key."""
    if task.cuts is not None:
        return whole.at_cuts(frame, *task.cuts)
    return whole.by_unit(frame, stable_unit(whole.row_keys(frame, task.data), task.config.seed), task.config)


def part_stats(part: pl.DataFrame, data: DataConfig) -> dict[str, Any]:
    """What split.json and the leakage check need of a part: rows, time range, rows per class."""
    stats: dict[str, Any] = {"rows": part.height}
    if EVENT_TIME in part.columns and part.height:
        stats["from"], stats["to"] = str(part[EVENT_TIME].min()), str(part[EVENT_TIME].max())
    if data.task == "classification":
        # pairs, not a dict: JSON keeps an int class an int
        stats["classes"] = [list(row) for row in part[data.target.name].value_counts().iter_rows()]
    return stats


def split_partition(task: Task) -> dict[str, Any]:
    """Split one clean part and write its non-empty pieces (a Dask task); returns each piece's stats."""
    pieces = assign(pl.read_parquet(task.source), task)
    for name, piece in pieces.items():
        if piece.height:
            parts.write_part(piece, task.layout.dataset(name), task.name)
    return {name: part_stats(piece, task.data) for name, piece in pieces.items()}


def time_cuts(layout: Layout, config: SplitConfig, kept: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """The declared cuts; else the ones the manifest keeps for these params; else computed from the history's
    times (one column in memory), as a whole split computes them."""
    if config.valid_from is not None and config.test_from is not None:
        return config.valid_from, config.test_from
    if kept.get("cuts") and kept.get("params") == config.model_dump(mode="json"):
        valid_from, test_from = kept["cuts"]
        return dt.datetime.fromisoformat(valid_from), dt.datetime.fromisoformat(test_from)
    times = parts.scan_dataset(Path(layout.clean)).select(EVENT_TIME).collect()
    return whole.time_cuts(times, config)


def plan(
    clean_entries: list[dict[str, Any]], data: DataConfig, config: SplitConfig, layout: Layout
) -> tuple[list[Task], list[tuple[dict[str, Any], str, str]], dict[str, Any]]:
    """What to split now: a task per clean part whose split is not already done, every part's planned name and
    fingerprint, and the manifest's header (method, cuts, params)."""
    from evergreen.data import split_partitions  # this module's own source is part of the fingerprint

    manifest = parts.read_manifest(Path(layout.manifest))
    method = config.method_for(data)
    if method == "time" and EVENT_TIME not in pl.read_parquet_schema(parts.parts(Path(layout.clean))[0]):
        raise DataError("split.method is 'time' but data.timestamp is not declared (use method: random)")
    cuts = time_cuts(layout, config, manifest) if method == "time" else None
    header = {
        "method": method,
        "cuts": [c.isoformat() for c in cuts] if cuts else None,
        "params": config.model_dump(mode="json"),
    }
    inputs = (
        data.model_dump(mode="json", include={"task", "target", "id_column", "columns"}),
        header,
        parts.code_version(whole, parts, Path(split_partitions.__file__)),
    )
    done = parts.reusable(manifest)
    planned, todo = [], []
    for clean in clean_entries:
        print_ = parts.fingerprint(clean["fingerprint"], *inputs)
        name = parts.part_name(int(clean["name"].split("-", 1)[0]), clean["partition"], print_)
        planned.append((clean, print_, name))
        if print_ not in done or not _pieces_exist(layout, done[print_]):
            todo.append(Task(name, str(parts.part_path(Path(layout.clean), clean["name"])), data, config, cuts, layout))
    return todo, planned, {**header, "done": done}


def _pieces_exist(layout: Layout, entry: dict[str, Any]) -> bool:
    return all(
        parts.part_path(layout.dataset(name), entry["name"]).is_file() for name in PARTS if entry["stats"][name]["rows"]
    )


def split_dataset(
    clean_entries: list[dict[str, Any]],
    data: DataConfig,
    config: SplitConfig,
    layout: Layout,
    *,
    scheduler: str | None = None,
) -> tuple[dict[str, Any], int, str]:
    """Bring the split datasets up to date with the clean partitions (the clean manifest's entries, in order);
    returns the new manifest, how many partitions were split now, and where."""
    for name in PARTS:
        parts.prepare_dataset(layout.dataset(name))
    todo, planned, header = plan(clean_entries, data, config, layout)
    done = header.pop("done")
    entries, made, where = parts.run_planned(
        split_partition, todo, planned, done, key="stats", label="split", scheduler=scheduler
    )
    return {**header, "partitions": entries}, made, where


def commit(layout: Layout, manifest: dict[str, Any]) -> None:
    """Write the manifest (last), then remove pieces no longer in it."""
    header = {k: v for k, v in manifest.items() if k != "partitions"}
    parts.write_manifest(manifest["partitions"], Path(layout.manifest), **header)
    keep = [e["name"] for e in manifest["partitions"]]
    for name in PARTS:
        parts.collect_garbage(layout.dataset(name), keep)
        parts.remove_if_empty(layout.dataset(name))


def totals(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each part's rows, time range and rows per class, over every partition."""
    out: dict[str, dict[str, Any]] = {}
    for name in PARTS:
        pieces = [e["stats"][name] for e in manifest["partitions"] if e["stats"][name]["rows"]]
        entry: dict[str, Any] = {"rows": sum(p["rows"] for p in pieces)}
        if pieces and "from" in pieces[0]:
            entry["from"], entry["to"] = min(p["from"] for p in pieces), max(p["to"] for p in pieces)
        counts: dict[Any, int] = {}
        for piece in pieces:
            for value, n in piece.get("classes", []):
                counts[value] = counts.get(value, 0) + n
        entry["classes"] = counts
        out[name] = entry
    return out


def check_leakage(manifest: dict[str, Any], data: DataConfig, layout: Layout) -> None:
    """Raise `DataError` when the parts overlap in time (from the manifest) or share an id (the id columns
    only, joined by polars' streaming engine)."""
    parts_ = totals(manifest)
    for name, entry in parts_.items():
        if entry["rows"] == 0:
            raise DataError(f"split: the {name!r} part is empty ({_describe(manifest, parts_)})")
    if manifest["method"] == "time":
        for earlier, later in (("train", "valid"), ("valid", "test")):
            last, first = parts_[earlier]["to"], parts_[later]["from"]
            if last >= first:
                raise DataError(f"split leaks: {earlier} ends at {last}, after {later} starts at {first}")
    if data.id_column is None:
        return
    key = data.id_column.name
    ids = {name: pl.scan_parquet(parts.parts(layout.dataset(name))).select(key) for name in PARTS}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        shared = ids[a].join(ids[b], on=key, how="semi").head(5).collect(engine="streaming")[key]
        if shared.len():
            examples = ", ".join(map(str, shared.to_list()))
            raise DataError(f"split leaks: {key} value(s) are in both {a} and {b}, for example {examples}")


def _describe(manifest: dict[str, Any], parts_: dict[str, dict[str, Any]]) -> str:
    rows = ", ".join(f"{name} {entry['rows']}" for name, entry in parts_.items())
    if manifest["cuts"]:
        return f"rows {rows}; the cuts are {manifest['cuts'][0]} and {manifest['cuts'][1]}"
    return f"rows {rows}"


def summarize(manifest: dict[str, Any], data: DataConfig, config: SplitConfig) -> dict[str, Any]:
    """`metrics/split.json`, as a whole split writes it, plus how it was split and a warning for each part
    grown to twice its fraction (new rows go to test while fixed cuts stay)."""
    parts_ = totals(manifest)
    out: dict[str, Any] = {name: {k: v for k, v in entry.items() if k != "classes"} for name, entry in parts_.items()}
    out["partitioned"] = {"partitions": len(manifest["partitions"]), "method": manifest["method"]}
    if manifest["cuts"]:
        out["partitioned"]["cuts"] = manifest["cuts"]
    warnings = []
    if data.task == "classification":
        warnings += whole.class_warnings_from_counts({n: e["classes"] for n, e in parts_.items()}, data)
    total = sum(entry["rows"] for entry in parts_.values()) or 1
    cuts_from_fractions = manifest["method"] == "time" and config.valid_from is None
    for name, share in (("valid", config.valid_fraction), ("test", config.test_fraction)) * cuts_from_fractions:
        if parts_[name]["rows"] / total > 2 * share:
            warnings.append(
                f"the {name} part holds {parts_[name]['rows'] / total:.0%} of the rows against its fraction {share}:"
                " the cuts stay fixed so that no row changes part; move split.valid_from/test_from to train on"
                " newer rows (every partition is split again)"
            )
    out["warnings"] = warnings
    return out
