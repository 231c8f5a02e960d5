"""`ingest` partition by partition: each arrival read once, deduplicated against a key index of earlier ones.

Two passes over the arrivals that are new (or whose inputs changed), each a batch of independent Dask tasks:
1. *stage*: read the file as text, deduplicate it within itself (`combine`), and write its keys with a hash of
   each row's values (`data/raw/keys/<part>.parquet`, the key index) beside the staged rows;
2. *dedup*: drop the rows whose key arrived in an earlier partition, reading only those keys from the index
   (a row with another hash is a conflict, set aside; the same hash is a re-delivery); write the raw part and
   its conflicts.
A part's fingerprint includes the content of every earlier arrival, because which of its rows are new
depends on them: an arrival appended at the end costs only itself; an edited old one rebuilds what follows.
An arrival with the same bytes as an earlier one (the same batch landed twice under two names) is not added
again, and the stage says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from evergreen.config import DataConfig
from evergreen.data import ingest as ingest_module
from evergreen.data import io
from evergreen.data import partitions as parts
from evergreen.data.ingest import (
    KEYS_FILE,
    ROW_HASH,
    combine,
    compared_columns,
    dedup_against,
    has_key,
    key_hash,
    key_int,
    row_hash,
)
from evergreen.data.schema import LINEAGE, SOURCE_FILE, SOURCE_ROW
from evergreen.errors import DataError
from evergreen.parallel import runs_here


@dataclass(frozen=True)
class Layout:
    """Where `ingest` keeps its parts (absolute paths as text, so a remote worker gets plain values)."""

    raw: str
    conflicts: str
    keys: str
    manifest: str

    @property
    def staging(self) -> Path:
        return parts.staging_dir(Path(self.raw)) / "staged"


@dataclass(frozen=True)
class Arrival:
    seq: int
    path: str
    digest: str
    pid: str = ""
    fingerprint: str = ""
    name: str = ""
    duplicate_of: str | None = None


@dataclass(frozen=True)
class Task:
    arrival: Arrival
    data: DataConfig
    layout: Layout
    earlier_keys: list[str] = field(default_factory=list)
    root: str = "."  # the project's root, against which relative arrival paths are read


def located(path: str, root: str | Path) -> str:
    """Where to read an arrival listed as `path` (relative paths are taken from the project's `root`)."""
    return path if "://" in path else str(Path(root, path))


def plan(files: list[str], data: DataConfig, root: str | Path, digest_cache: Path | None = None) -> list[Arrival]:
    """Each file's partition: its id, fingerprint and part name, or the earlier file it repeats byte for byte.

    A file's content hash is kept in `digest_cache` with its stamp (`partitions.cached_content_hashes`)."""
    inputs = parts.fingerprint(
        data.names, data.types, data.key, parts.code_version(ingest_module, io, parts, Path(__file__))
    )
    digests = parts.cached_content_hashes([located(path, root) for path in files], digest_cache)
    seen: dict[str, str] = {}
    chain = inputs
    out = []
    for path in files:
        digest = digests[located(path, root)]
        if digest in seen:
            out.append(Arrival(-1, path, digest, duplicate_of=seen[digest]))
            continue
        seen[digest] = path
        chain = parts.fingerprint(chain, digest)
        seq = len(seen) - 1
        pid = parts.partition_id(path, digest)
        out.append(Arrival(seq, path, digest, pid, chain, parts.part_name(seq, pid, chain)))
    return out


@dataclass(frozen=True)
class Staged:
    rows: pl.DataFrame  # deduplicated within the arrival, with `ROW_HASH`
    conflicts: pl.DataFrame  # key conflicts within the arrival
    rows_read: int
    repeated_rows: int


def _stage(task: Task) -> Staged | str:
    """Read an arrival and deduplicate it within itself; a bad file is returned as its error message."""
    data, arrival = task.data, task.arrival
    # a worker may run elsewhere than the stage: it reads by absolute path, lineage keeps the path as listed
    where = located(arrival.path, task.root)
    try:
        frame = io.read_text_table(where, data).with_columns(pl.lit(arrival.path).alias(SOURCE_FILE))
    except DataError as exc:
        return str(exc).replace(where, arrival.path)
    within = combine([frame], data.key, types=data.types)
    rows = within.raw.with_columns(row_hash(compared_columns(data.names, data.key) or data.names))
    as_int = key_int(data.key, data.types)
    index = [*data.key, ROW_HASH, key_hash(data.key), *([as_int] if as_int is not None else [])]
    keys = rows.filter(has_key(data.names, data.key)).select(index)
    parts.write_part(keys, Path(task.layout.keys), arrival.name)
    return Staged(rows, within.conflicts, frame.height, within.repeated_rows)


def stage_arrival(task: Task) -> dict[str, Any]:
    """Pass 1 for one arrival (a Dask task): its keys into the index, its rows to the staging folder."""
    staged = _stage(task)
    if isinstance(staged, str):
        return {"error": staged}
    name = task.arrival.name
    io.write_parquet(staged.rows, task.layout.staging / f"{name}.rows.parquet")
    io.write_parquet(staged.conflicts, task.layout.staging / f"{name}.conflicts.parquet")
    return {"error": None, "rows_read": staged.rows_read, "repeated_rows_dropped": staged.repeated_rows}


def _first_rows_in(layout: Layout, key: list[str]) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Fetch the first arrival of some keys from the partitions that hold them (beside each key index part).

    In the two-pass mode an earlier partition's raw part may still be in the making on another worker, so its
    staged rows (written in pass 1, the same first arrivals) are read when they are there.
    """

    def source(keys_file: str) -> Path:
        name = Path(keys_file).name.removesuffix(".parquet")
        staged = layout.staging / f"{name}.rows.parquet"
        return staged if staged.is_file() else parts.part_path(Path(layout.raw), name)

    def fetch(wanted: pl.DataFrame) -> pl.DataFrame:
        frames = [
            pl.scan_parquet(source(keys_file))
            .join(group.lazy().select(key), on=key, how="semi")
            .drop(ROW_HASH, strict=False)
            for (keys_file,), group in wanted.group_by(KEYS_FILE, maintain_order=True)
        ]
        return pl.concat(frames).collect()

    return fetch


def _dedup(task: Task, staged: Staged) -> dict[str, Any]:
    data, arrival, layout = task.data, task.arrival, task.layout
    earlier = pl.scan_parquet(task.earlier_keys, include_file_paths=KEYS_FILE) if task.earlier_keys else None
    result = dedup_against(staged.rows, earlier, data.key, _first_rows_in(layout, data.key), data.types)
    conflicts = (
        pl.concat([staged.conflicts, result.conflicts])
        .sort(SOURCE_ROW, maintain_order=True)
        .with_columns(pl.lit(arrival.pid).alias(parts.PARTITION))
    )
    parts.write_part(result.raw, Path(layout.raw), arrival.name)
    parts.write_part(conflicts, Path(layout.conflicts), arrival.name)
    return {
        "error": None,
        "rows_read": staged.rows_read,
        "rows_out": result.raw.height,
        "repeated_rows_dropped": staged.repeated_rows + result.repeated_rows,
        "key_conflicts": conflicts.height,
    }


def dedup_arrival(task: Task, first_pass: dict[str, Any]) -> dict[str, Any]:
    """Pass 2 for one arrival (a Dask task): the raw part and its key conflicts, against the key index."""
    staging = task.layout.staging / task.arrival.name
    rows = pl.read_parquet(f"{staging}.rows.parquet")
    conflicts = pl.read_parquet(f"{staging}.conflicts.parquet")
    return _dedup(task, Staged(rows, conflicts, first_pass["rows_read"], first_pass["repeated_rows_dropped"]))


def _ingest_here(tasks: list[Task], earlier: list[str]) -> list[dict[str, Any]]:
    """Both passes, arrival after arrival, in this process: staged rows stay in memory, never on disk.

    `earlier` lists the key index parts before the first task's arrival; each arrival that is read adds its own.
    """
    results = []
    for task in tasks:
        staged = _stage(replace(task, earlier_keys=list(earlier)))
        if isinstance(staged, str):
            results.append({"error": staged})
            continue
        results.append(_dedup(replace(task, earlier_keys=list(earlier)), staged))
        earlier.append(str(parts.part_path(Path(task.layout.keys), task.arrival.name)))
    return results


@dataclass
class Outcome:
    """What a run of `ingest` did: the manifest's entries, the refused files, and what was computed."""

    entries: list[dict[str, Any]]
    duplicates: list[Arrival]
    refused: dict[str, str]  # file -> why
    computed: list[str]  # part names made in this run
    where: str = ""

    @property
    def conflicts(self) -> int:
        return sum(e["key_conflicts"] for e in self.entries)

    @property
    def rows_read(self) -> int:
        return sum(e["rows_read"] for e in self.entries)

    def summary(self) -> dict[str, object]:
        """`metrics/ingest.json`: the totals as before partitions, plus each partition's own counts."""
        return {
            "files": len(self.entries) + len(self.duplicates),
            "rows_read": self.rows_read,
            "rows_per_file": {e["file"]: e["rows_read"] for e in self.entries},
            "rows_out": sum(e["rows_out"] for e in self.entries),
            "repeated_rows_dropped": sum(e["repeated_rows_dropped"] for e in self.entries),
            "key_conflicts": self.conflicts,
            "duplicate_files": {d.path: d.duplicate_of for d in self.duplicates},
            "partitions": {
                e["partition"]: {
                    k: e[k] for k in ("file", "rows_read", "rows_out", "repeated_rows_dropped", "key_conflicts")
                }
                for e in self.entries
            },
        }


def ingest(
    files: list[str],
    data: DataConfig,
    layout: Layout,
    *,
    root: Path,
    scheduler: str | None = None,
    digest_cache: Path | None = None,
) -> Outcome:
    """Bring the raw dataset up to date with `files` (in arrival order); parts still valid are reused.

    Relative paths in `files` are taken from `root`; `digest_cache` keeps their content hashes (`plan`). A
    file that cannot be read is left out (its error is in `Outcome.refused`) and every other arrival is
    processed and kept: the caller fails the stage naming the refused files.
    """
    for dataset in (layout.raw, layout.conflicts, layout.keys):
        parts.prepare_dataset(Path(dataset))
    arrivals = plan(files, data, root, digest_cache)
    done = parts.reusable(
        parts.read_manifest(Path(layout.manifest)), *map(Path, (layout.raw, layout.conflicts, layout.keys))
    )
    todo = [a for a in arrivals if a.duplicate_of is None and a.fingerprint not in done]
    sizes = [parts.size_of(located(a.path, root)) for a in todo]
    cluster = {"scheduler": scheduler, "sizes": sizes, "cluster_from": parts.CLUSTER_FROM_CSV}
    if runs_here(len(todo), **cluster):
        made, where = _ingest_in_order(arrivals, todo, data, layout, root)
    else:
        made, where = _ingest_in_two_passes(arrivals, todo, data, layout, root, cluster)
    refused = {a.path: r["error"] for a, r in zip(todo, made, strict=True) if r["error"]}
    made_by_name = {a.name: r for a, r in zip(todo, made, strict=True) if not r["error"]}
    good = [a for a in arrivals if a.duplicate_of is None and a.path not in refused]
    entries = []
    for a in good:
        if a.name not in made_by_name:
            entries.append({**done[a.fingerprint], "file": a.path})
            continue
        counts = {k: v for k, v in made_by_name[a.name].items() if k != "error"}
        identity = {"name": a.name, "partition": a.pid, "file": a.path, "content_hash": a.digest}
        entries.append({**identity, "fingerprint": a.fingerprint, **counts})
    duplicates = [a for a in arrivals if a.duplicate_of is not None]
    return Outcome(entries, duplicates, refused, list(made_by_name), where)


def _key_part(layout: Layout, arrival: Arrival) -> str:
    return str(parts.part_path(Path(layout.keys), arrival.name))


def _ingest_in_order(
    arrivals: list[Arrival], todo: list[Arrival], data: DataConfig, layout: Layout, root: Path
) -> tuple[list[dict[str, Any]], str]:
    """Small work, in this process: each new arrival after the ones before it, staged in memory."""
    index = {a.name: i for i, a in enumerate(arrivals)}
    first = index[todo[0].name] if todo else 0
    earlier = [_key_part(layout, a) for a in arrivals[:first] if a.duplicate_of is None]
    pending = {a.name for a in todo}
    results: list[dict[str, Any]] = []
    for a in arrivals[first:]:
        if a.duplicate_of is not None:
            continue
        if a.name not in pending:  # reused between two new ones: its keys count for the later ones
            earlier.append(_key_part(layout, a))
            continue
        results += _ingest_here([Task(a, data, layout, root=str(root))], earlier)
    return results, f"this process ({len(todo)} on local)" if todo else "nothing to do"


def _ingest_in_two_passes(
    arrivals: list[Arrival],
    todo: list[Arrival],
    data: DataConfig,
    layout: Layout,
    root: Path,
    cluster: dict[str, Any],
) -> tuple[list[dict[str, Any]], str]:
    """More work, on Dask: every new arrival staged in parallel, then every one deduplicated in parallel."""
    from evergreen.parallel import run_partitions  # Dask is imported only when there is work

    staged, _ = run_partitions(
        stage_arrival, [Task(a, data, layout, root=str(root)) for a in todo], label="ingest-stage", **cluster
    )
    refused = {a.name for a, s in zip(todo, staged, strict=True) if s["error"]}
    good = [a for a in arrivals if a.duplicate_of is None and a.name not in refused]
    position = {a.name: i for i, a in enumerate(good)}
    key_parts = [_key_part(layout, a) for a in good]
    new = [(a, s) for a, s in zip(todo, staged, strict=True) if not s["error"]]
    tasks = [(Task(a, data, layout, key_parts[: position[a.name]]), s) for a, s in new]
    cluster = {
        **cluster,
        "sizes": [size for a, size in zip(todo, cluster["sizes"], strict=True) if a.name not in refused],
    }
    deduped, ran = run_partitions(_dedup_pair, tasks, label="ingest-dedup", **cluster)
    by_name = {a.name: d for (a, _), d in zip(new, deduped, strict=True)}
    return [by_name.get(a.name, s) for a, s in zip(todo, staged, strict=True)], ran.describe()


def _dedup_pair(pair: tuple[Task, dict[str, Any]]) -> dict[str, Any]:
    return dedup_arrival(*pair)


def conflict_examples(
    layout: Layout, entries: list[dict[str, Any]], key: list[str], n: int = 5
) -> list[dict[str, Any]]:
    """The first `n` key conflicts over all partitions (key and lineage), for the error message."""
    files = [str(parts.part_path(Path(layout.conflicts), e["name"])) for e in entries if e["key_conflicts"]]
    if not files:
        return []
    return pl.scan_parquet(files).select(*key, *LINEAGE).head(n).collect().to_dicts()


def abandon(layout: Layout, names: list[str]) -> None:
    """Remove the parts made by a run that failed, so the raw data stays exactly as it was."""
    for dataset in map(Path, (layout.raw, layout.conflicts, layout.keys)):
        for name in names:
            parts.part_path(dataset, name).unlink(missing_ok=True)
        parts.remove_if_empty(dataset)


def commit(layout: Layout, outcome: Outcome) -> None:
    """Write the manifest (last), then remove parts no longer in it and the staging files."""
    parts.write_manifest(outcome.entries, Path(layout.manifest))
    keep = [e["name"] for e in outcome.entries]
    for dataset in (layout.raw, layout.conflicts, layout.keys):
        parts.collect_garbage(Path(dataset), keep)
