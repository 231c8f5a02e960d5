"""`split` partition by partition, for a history too large to split at once.

Below `split.partitioned_from_rows` clean rows the whole history is split in one frame (`data.split.split`):
stratified, exact fractions, time cuts at a moment of the sorted times. From that size on, each clean part is
split alone, by each row's own time or key, so that memory holds one part at a time and an arrival costs its
own rows (plus the parts that moving cuts pass through):

- time split: the row's time against two cuts, which a whole split of the same history would also use: the
  declared `valid_from` and `test_from`, else the moments that leave the fractions after them, computed from
  the history's times alone. Cuts from fractions roll forward as rows arrive, as in a whole split, so that a
  retrain learns from recent rows; a clean part is split again only when a cut passes through its time span
  (`region`), so an arrival in time order splits itself and the one or two parts at the cuts. Declare the
  cut dates to keep every row in its part for good.
- random split: a stable hash, salted with `split.seed`, of the row's key (an integer id through SplitMix64,
  any other id, or without one a SHA-1 digest of the declared values, through BLAKE2b): the same row lands in
  the same part on every run and machine, and no row ever changes part. (A polars upgrade splits every part
  again, as it rebuilds every stage's parts: the code's version is in each fingerprint.)

Each part is written into a dataset folder per split (`data/split/train.parquet/` and so on), named after its
clean part, and the manifest (`data/split/manifest.json`) records each part's rows, time range and classes:
split.json, the cuts and the time-leakage check come from it without reading those rows again. The protocol is `clean`'s
(`data.partitions`): parts are reused by fingerprint, written atomically, the manifest last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from evergreen.config import DataConfig, SplitConfig
from evergreen.data import partitions as parts
from evergreen.data import split as whole
from evergreen.data.schema import EVENT_TIME
from evergreen.errors import DataError

PARTS = ("train", "valid", "test")
IDS_PER_JOIN = 1_000_000  # ids in the leakage check's hash table at once (`shared_ids`)


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
    clean: str  # its fingerprint
    span: list[Any] | None  # its first and last time and rows (time split), read once by `plan`
    data: DataConfig
    config: SplitConfig
    cuts: tuple[dt.datetime, dt.datetime] | None
    layout: Layout


def stable_unit(keys: pl.Series, seed: int) -> pl.Series:
    """Each key's place in [0, 1), the same on every machine and library version: integer keys through
    SplitMix64's finaliser (vectorised), any other key through a salted BLAKE2b of its text (a loop in Python,
    about 2.5 us a row)."""
    if keys.dtype.is_integer():
        with np.errstate(over="ignore"):  # the mixing multiplies modulo 2**64 on purpose
            x = keys.cast(pl.Int64).fill_null(-1).to_numpy().astype(np.uint64) + np.uint64(
                (0x9E3779B97F4A7C15 * (seed + 1)) % 2**64
            )
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x ^= x >> np.uint64(31)
        return pl.Series("unit", (x >> np.uint64(11)).astype(np.float64) * 2.0**-53)
    salt = seed.to_bytes(8, "little", signed=True)
    return pl.Series(
        "unit",
        [
            int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8, salt=salt).digest(), "little") * 2.0**-64
            for k in keys.cast(pl.String).fill_null("\x00").to_list()
        ],
        dtype=pl.Float64,
    )


def _keys(frame: pl.DataFrame, data: DataConfig) -> pl.Series:
    """An integer id as it is (hashed vectorised), else the row's key as text (`whole.row_keys`)."""
    if data.id_column is not None and frame[data.id_column.name].dtype.is_integer():
        return frame[data.id_column.name]
    return whole.row_keys(frame, data)


def assign(frame: pl.DataFrame, task: Task) -> dict[str, pl.DataFrame]:
    """One clean part's rows into train, valid and test, by each row's own time or key."""
    if task.cuts is not None:
        return whole.at_cuts(frame, *task.cuts)
    return whole.by_unit(frame, stable_unit(_keys(frame, task.data), task.config.seed), task.config)


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
    """Split one clean part and write its non-empty pieces (a Dask task); returns each piece's stats, the
    clean part's fingerprint and the time span it covers, for the manifest."""
    pieces = assign(pl.read_parquet(task.source), task)
    for name, piece in pieces.items():
        if piece.height:
            parts.write_part(piece, task.layout.dataset(name), task.name)
    return {"clean": task.clean, "span": task.span, **{n: part_stats(p, task.data) for n, p in pieces.items()}}


@dataclass(frozen=True)
class Span:
    """A clean part's first and last time and its rows."""

    path: Path
    first: dt.datetime
    last: dt.datetime
    rows: int


def time_cuts(config: SplitConfig, spans: list[Span]) -> tuple[dt.datetime, dt.datetime]:
    """The declared cuts, else exactly those a whole split of the history would compute (`whole.time_cuts`)."""
    if config.valid_from is not None and config.test_from is not None:
        return config.valid_from, config.test_from
    valid_rank, test_rank = whole.cut_ranks(sum(s.rows for s in spans), config)
    return kth_time(spans, valid_rank), kth_time(spans, test_rank)


def kth_time(spans: list[Span], k: int) -> dt.datetime:
    """The k-th smallest time (from 0) of all the parts' rows, as sorting them all would give, reading the times
    of only the parts whose spans may hold it: one part, in a history that arrived in time order."""
    by_last, by_first = sorted(spans, key=lambda s: s.last), sorted(spans, key=lambda s: s.first)
    lasts, firsts = [s.last for s in by_last], [s.first for s in by_first]
    rows_by_last = list(accumulate((s.rows for s in by_last), initial=0))
    rows_by_first = list(accumulate((s.rows for s in by_first), initial=0))
    bounds = sorted({t for s in spans for t in (s.first, s.last)})
    # rows certainly before t: those of parts ending before it; possibly before t: of parts starting before it
    low = max((t for t in bounds if rows_by_first[bisect_left(firsts, t)] <= k), default=bounds[0])
    high = min((t for t in bounds if rows_by_last[bisect_left(lasts, t)] > k), default=None)
    inside = [s for s in spans if s.last >= low and (high is None or s.first < high)]
    times = pl.concat([pl.read_parquet(s.path, columns=[EVENT_TIME])[EVENT_TIME] for s in inside])
    before = rows_by_last[bisect_left(lasts, low)] + int((times < low).sum())
    window = times.filter((times >= low) & (times < high) if high is not None else times >= low).sort()
    return window[k - before]


def time_span(part: Path) -> list[Any] | None:
    """The first and last time of a clean part and its rows (its time column only), or None when it has no
    rows. A row without a time cannot be placed by time: it fails the split, naming the part."""
    when = pl.col(EVENT_TIME)
    first, last, rows, missing = (
        pl.scan_parquet(part)
        .select(when.min().alias("first"), when.max().alias("last"), pl.len().alias("n"), when.null_count())
        .collect()
        .row(0)
    )
    if missing:
        raise DataError(f"split: {missing} of the {rows} rows of {part.name} have no event time; a time split "
                        "places rows by their time (declare the timestamp's missing: quarantine)")  # fmt: skip
    return None if first is None else [first.isoformat(), last.isoformat(), rows]


def region(span: list[Any] | None, cuts: tuple[dt.datetime, dt.datetime] | None) -> object:
    """What a clean part's split depends on, given the time span it was last seen to cover: the part it falls in
    whole, else the cuts themselves. So moving cuts split again only the parts they pass through."""
    if cuts is None or span is None:
        return cuts and [c.isoformat() for c in cuts]
    first, last = (dt.datetime.fromisoformat(t) for t in span[:2])
    valid_from, test_from = cuts
    if last < valid_from:
        return "train"
    if first >= test_from:
        return "test"
    if first >= valid_from and last < test_from:
        return "valid"
    return [c.isoformat() for c in cuts]


def plan(
    clean_entries: list[dict[str, Any]], data: DataConfig, config: SplitConfig, layout: Layout
) -> tuple[list[Task], list[tuple[dict[str, Any], str, str]], dict[str, Any]]:
    """What to split now: a task per clean part whose split is not already done, every part's planned name and
    fingerprint, and the manifest's header (method, cuts, params)."""
    manifest = parts.read_manifest(Path(layout.manifest))
    method = config.method_for(data)
    if method == "time" and EVENT_TIME not in pl.read_parquet_schema(parts.parts(Path(layout.clean))[0]):
        raise DataError("split.method is 'time' but data.timestamp is not declared (use method: random)")
    done = parts.reusable(manifest)
    known = {e["stats"]["clean"]: e["stats"]["span"] for e in done.values()}
    sources = [parts.part_path(Path(layout.clean), clean["name"]) for clean in clean_entries]
    spans: list[list[Any] | None] = [None] * len(clean_entries)
    cuts = None
    if method == "time":  # a part's span is read once, when it is first split, then kept in the manifest
        spans = [known.get(c["fingerprint"]) or time_span(p) for c, p in zip(clean_entries, sources, strict=True)]
        cuts = time_cuts(config, _located(sources, spans))
    header = {"method": method, "cuts": [c.isoformat() for c in cuts] if cuts else None}
    inputs = (
        data.model_dump(mode="json", include={"task", "target", "id_column", "columns"}),
        method,
        config.model_dump(mode="json", exclude={"partitioned_from_rows"}),
        parts.code_version(whole, parts, Path(__file__)),
    )
    planned, todo = [], []
    for clean, source, span in zip(clean_entries, sources, spans, strict=True):
        print_ = parts.fingerprint(clean["fingerprint"], *inputs, region(span, cuts))
        name = parts.part_name(int(clean["name"].split("-", 1)[0]), clean["partition"], print_)
        planned.append((clean, print_, name))
        if print_ not in done or done[print_]["name"] != name or not _pieces_exist(layout, done[print_]):
            todo.append(Task(name, str(source), clean["fingerprint"], span, data, config, cuts, layout))
    return todo, planned, {**header, "done": done}


def _located(sources: list[Path], spans: list[list[Any] | None]) -> list[Span]:
    return [
        Span(path, dt.datetime.fromisoformat(span[0]), dt.datetime.fromisoformat(span[1]), span[2])
        for path, span in zip(sources, spans, strict=True)
        if span is not None
    ]


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
) -> tuple[dict[str, Any], set[str], str]:
    """Bring the split datasets up to date with the clean partitions (the clean manifest's entries, in order);
    returns the new manifest, the names of the partitions split now, and where they were split."""
    for name in PARTS:
        parts.prepare_dataset(layout.dataset(name))
    todo, planned, header = plan(clean_entries, data, config, layout)
    done = header.pop("done")
    entries, _, where = parts.run_planned(
        split_partition, todo, planned, done, key="stats", label="split", scheduler=scheduler
    )
    return {**header, "partitions": entries}, {task.name for task in todo}, where


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


def check_leakage(manifest: dict[str, Any], data: DataConfig, layout: Layout, new: set[str]) -> None:
    """Raise `DataError` when the parts overlap in time (from the manifest) or share an id. Pieces reused
    from an earlier run were checked against each other then, so only the pieces split now (`new`, by name)
    are joined against the others: the id columns only, in polars' streaming engine."""
    parts_ = totals(manifest)
    for name, entry in parts_.items():
        if entry["rows"] == 0:
            raise DataError(f"split: the {name!r} part is empty ({_describe(manifest, parts_)})")
    if manifest["method"] == "time":
        for earlier, later in (("train", "valid"), ("valid", "test")):
            last, first = parts_[earlier]["to"], parts_[later]["from"]
            if last >= first:
                raise DataError(f"split leaks: {earlier} ends at {last}, after {later} starts at {first}")
    if data.id_column is None or not new:
        return
    key = data.id_column.name

    def ids(name: str, only_new: bool) -> tuple[pl.LazyFrame, int] | None:
        entries = [e for e in manifest["partitions"] if e["stats"][name]["rows"] and (e["name"] in new or not only_new)]
        if not entries:  # no new piece there, nothing to join
            return None
        files = [parts.part_path(layout.dataset(name), e["name"]) for e in entries]
        return pl.scan_parquet(files).select(key), sum(e["stats"][name]["rows"] for e in entries)

    everything_new = all(e["name"] in new for e in manifest["partitions"])
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        # the right side is the join's hash table: the new pieces only, or on a first build the smaller part
        pairs = [(ids(a, False), ids(b, True)), (ids(b, False), ids(a, True))]
        if everything_new:
            larger, smaller = sorted((a, b), key=lambda name: -parts_[name]["rows"])
            pairs = [(ids(larger, False), ids(smaller, False))]
        for left, right in pairs:
            if left is None or right is None:
                continue
            shared = shared_ids(left[0], right[0], key, buckets=-(-right[1] // IDS_PER_JOIN))
            if shared.len():
                examples = ", ".join(map(str, shared.to_list()))
                raise DataError(f"split leaks: {key} value(s) are in both {a} and {b}, for example {examples}")


def shared_ids(left: pl.LazyFrame, right: pl.LazyFrame, key: str, buckets: int = 1) -> pl.Series:
    """Up to five `key` values in both frames. The right side is the join's hash table, the split's largest
    allocation (202 MiB for 10M rows, 308 MiB for 30M, in one join): with `buckets` > 1 the ids are joined one
    bucket of a hash of the id at a time, each reading the id columns again, so that the table stays the same
    size however long the history (`check_leakage` asks for one bucket per `IDS_PER_JOIN` ids)."""
    buckets = max(1, buckets)
    for bucket in range(buckets):
        mine = pl.col(key).hash(seed=0) % buckets == bucket if buckets > 1 else pl.lit(True)
        joined = left.filter(mine).join(right.filter(mine), on=key, how="semi")
        shared = joined.head(5).collect(engine="streaming")[key]
        if shared.len() or bucket == buckets - 1:
            return shared
    raise AssertionError("unreachable: the last bucket returns")


def _describe(manifest: dict[str, Any], parts_: dict[str, dict[str, Any]]) -> str:
    rows = ", ".join(f"{name} {entry['rows']}" for name, entry in parts_.items())
    if manifest["cuts"]:
        return f"rows {rows}; the cuts are {manifest['cuts'][0]} and {manifest['cuts'][1]}"
    return f"rows {rows}"


def summarize(manifest: dict[str, Any], data: DataConfig) -> dict[str, Any]:
    """`metrics/split.json`, as a whole split writes it, plus how it was split."""
    parts_ = totals(manifest)
    out: dict[str, Any] = {name: {k: v for k, v in entry.items() if k != "classes"} for name, entry in parts_.items()}
    out["partitioned"] = {"partitions": len(manifest["partitions"]), "method": manifest["method"]}
    if manifest["cuts"]:
        out["partitioned"]["cuts"] = manifest["cuts"]
    warnings = []
    if data.task == "classification":
        warnings += whole.class_warnings_from_counts({n: e["classes"] for n, e in parts_.items()}, data)
    out["warnings"] = warnings
    return out
