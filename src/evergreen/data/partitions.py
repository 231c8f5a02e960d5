"""Partitioned datasets: one Parquet part per arrival, reused while its inputs are unchanged.

Each arrival (a source file, a landing file) is a partition. A data stage writes one part per partition into
a folder (the dataset) and records each part in a small manifest. A part's name carries its position, the
arrival it came from and its *fingerprint*: a hash of everything the part depends on (the arrival's content,
the params and code of the stage, and for `ingest` every earlier arrival). A later run reuses a part whose
fingerprint it would compute again and computes only the others, so an arrival costs what the arrival costs.

The protocol that keeps a killed run harmless: a part is written under a temporary name *outside* the
dataset folder and renamed into it (readers never see half a file), and the manifest is written last, also
atomically. A part not in the manifest is never taken for done: the next successful run computes its
partition again and removes the stray file (`collect_garbage`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import fsspec
import polars as pl

from evergreen.data.io import read_json, write_json
from evergreen.errors import DataError

MANIFEST_VERSION = 1
PARTITION = "_partition"  # the partition a quarantined row or a key conflict came from


def content_hash(path: str) -> str:
    """SHA-256 of a file's bytes (any fsspec URL), read in chunks so a large file is never held whole."""
    digest = hashlib.sha256()
    with fsspec.open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


_SHA256 = re.compile(r"[0-9a-f]{64}")
# a file changed within this long of being stamped may change again within its clock's tick and keep the
# stamp ("racily clean", as git calls it): its hash is not kept, so the next run hashes it again
RACY_NS = 2 * 10**9


def file_stamp(path: str) -> list[int] | None:
    """A local file's size, modification and change times (ns), inode and device: while all are unchanged, so
    are its bytes (DVC's own cache of hashes trusts size, mtime and inode; the change time, which `touch -r`
    cannot set back, catches a rewrite whose mtime was restored). None for a URL or a missing file."""
    if "://" in path:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _kept_digest(entry: Any, stamp: list[int]) -> str | None:
    """The digest `entry` ([*stamp, digest]) holds for a file with `stamp`; None for any other entry."""
    if isinstance(entry, list) and len(entry) == len(stamp) + 1 and entry[:-1] == stamp:
        digest = entry[-1]
        return digest if isinstance(digest, str) and _SHA256.fullmatch(digest) else None
    return None


def content_hashes(
    paths: Sequence[str], known: dict[str, Any], now_ns: int | None = None
) -> tuple[dict[str, str], dict[str, list[Any]]]:
    """Each file's SHA-256 (`content_hash`), taken from `known` ({path: [*stamp, digest]}) where the file's
    stamp is unchanged; also the entries to keep for the next call. An arrival into a history then reads its
    own bytes, not the history's: 700 MB of CSV took 0.55 s to hash on every run at 10M rows."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    digests, keep = {}, {}
    for path in paths:
        stamp = file_stamp(path)
        kept = _kept_digest(known.get(path), stamp) if stamp is not None else None
        digests[path] = kept or content_hash(path)
        if stamp is not None and now_ns - stamp[2] > RACY_NS:
            keep[path] = [*stamp, digests[path]]
    return digests, keep


def cached_content_hashes(paths: Sequence[str], cache: Path | None) -> dict[str, str]:
    """`content_hashes`, with the stamps kept in the JSON file `cache` (None: no cache, every file hashed).
    The cache only saves time: a missing, damaged or unwritable one leaves every file hashed."""
    known: Any = {}
    if cache is not None:
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(cache.read_bytes())
    known = known if isinstance(known, dict) else {}
    digests, keep = content_hashes(paths, known)
    if cache is not None and keep != known:
        with contextlib.suppress(OSError):  # a read-only .dvc, a full disk: the next run hashes again
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(keep, cache)
    return digests


# Inputs (bytes) below which a stage keeps its partitions in its own process rather than start a local Dask
# cluster for itself (see `evergreen.parallel`). Measured on 2 shared cores (BENCHMARKS.md): at 1M rows a
# cluster per stage made validation slower (workers importing Great Expectations), so only work well above
# that size starts one; a cluster named by the user is always used.
CLUSTER_FROM_CSV = 512 * 2**20  # ingest reads text at about 25 MB/s per core
CLUSTER_FROM_PARQUET = 64 * 2**20  # clean and validation read Parquet, 5-10x denser than CSV


def size_of(path: str) -> int:
    """A file's size in bytes (any fsspec URL)."""
    fs, _, (resolved, *_) = fsspec.get_fs_token_paths(path)
    return int(fs.size(resolved) or 0)


def code_version(*modules: ModuleType | Path) -> str:
    """A hash of the source of `modules` (or source files) and the polars version: a part made by other code
    is made again."""
    digest = hashlib.sha256(pl.__version__.encode())
    for module in modules:
        digest.update((module if isinstance(module, Path) else Path(module.__file__ or "")).read_bytes())
    return digest.hexdigest()


def fingerprint(*inputs: Any) -> str:
    """A stable hash of JSON-able inputs (params sections as dicts, hashes, names)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def partition_id(path: str, digest: str) -> str:
    """The partition's id: its file name (made safe for a file name) and the start of its content hash."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", path.rstrip("/").rsplit("/", 1)[-1]) or "part"
    return f"{base}-{digest[:12]}"


def part_name(seq: int, pid: str, print_: str) -> str:
    """`<position>-<partition id>-<fingerprint>`: sorted by name, the parts are in arrival order."""
    return f"{seq:06d}-{pid}-{print_[:10]}"


def part_path(dataset: Path, name: str) -> Path:
    return dataset / f"{name}.parquet"


def staging_dir(dataset: Path) -> Path:
    """Where half-written parts of `dataset` live: beside the folder, never inside it."""
    return dataset.parent / f".{dataset.name}.staging"


def write_part(frame: pl.DataFrame | pl.LazyFrame, dataset: Path, name: str) -> Path:
    """Write one part atomically (see the module's docstring); return its path."""
    from evergreen.data.io import write_parquet  # one writer for every Parquet file

    path = part_path(dataset, name)
    write_parquet(frame, path, tmp_dir=staging_dir(dataset))
    return path


def prepare_dataset(dataset: Path) -> None:
    """Make `dataset` a folder: a single file left there by an earlier version of Evergreen is replaced."""
    if dataset.is_file():
        dataset.unlink()
    dataset.mkdir(parents=True, exist_ok=True)


def collect_garbage(dataset: Path, keep: Iterable[str]) -> list[str]:
    """Remove parts not named in `keep` (stale or unfinished) and the staging folder; return what went."""
    wanted = {f"{name}.parquet" for name in keep}
    removed = []
    if dataset.is_dir():
        for path in sorted(dataset.iterdir()):
            if path.name not in wanted:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path.name)
    shutil.rmtree(staging_dir(dataset), ignore_errors=True)
    return removed


def remove_if_empty(dataset: Path) -> None:
    """Remove the staging folder, and the dataset's folder when no part is left in it."""
    shutil.rmtree(staging_dir(dataset), ignore_errors=True)
    if dataset.is_dir() and not any(dataset.iterdir()):
        dataset.rmdir()


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at `path`, or an empty one when there is none (or it was written by other code)."""
    if not path.exists():
        return {"version": MANIFEST_VERSION, "partitions": []}
    manifest = read_json(path, DataError, subject="the partition manifest is ")
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        return {"version": MANIFEST_VERSION, "partitions": []}
    return manifest


def write_manifest(partitions: list[dict[str, Any]], path: Path, **header: Any) -> None:
    """Record the finished parts (and a stage's own `header` fields); written last (and atomically), after
    every part it names is in place."""
    write_json({"version": MANIFEST_VERSION, **header, "partitions": partitions}, path)


def reusable(manifest: dict[str, Any], *datasets: Path) -> dict[str, dict[str, Any]]:
    """Manifest entries by fingerprint whose parts exist in every one of `datasets`."""
    return {
        entry["fingerprint"]: entry
        for entry in manifest.get("partitions", [])
        if all(part_path(d, entry["name"]).is_file() for d in datasets)
    }


def run_planned(
    fn: Callable[[Any], dict[str, Any]],
    todo: Sequence[Any],
    planned: Sequence[tuple[dict[str, Any], str, str]],
    done: dict[str, dict[str, Any]],
    *,
    key: str,
    label: str,
    scheduler: str | None,
) -> tuple[list[dict[str, Any]], int, str]:
    """Run `fn` on each task still to do (where: by the size of its input part, `task.source`), then the
    manifest's entries in the `planned` order of (source entry, fingerprint, part name): each one's `key` is
    this run's result, or the one kept in `done` for its fingerprint. Returns them, how many ran, and where."""
    from evergreen.parallel import run_partitions  # Dask is imported only when there is work

    sizes = [Path(task.source).stat().st_size for task in todo]
    results, ran = run_partitions(
        fn, todo, scheduler=scheduler, label=label, sizes=sizes, cluster_from=CLUSTER_FROM_PARQUET
    )
    made = {task.name: result for task, result in zip(todo, results, strict=True)}
    entries = [
        {
            "name": name,
            "partition": source["partition"],
            "file": source["file"],
            "fingerprint": print_,
            key: made[name] if name in made else done[print_][key],
        }
        for source, print_, name in planned
    ]
    return entries, len(todo), ran.describe()


def parts(dataset: Path) -> list[Path]:
    """A dataset's parts in order; a plain Parquet file is a dataset of one part."""
    if dataset.is_file():
        return [dataset]
    return sorted(dataset.glob("*.parquet")) if dataset.is_dir() else []


def scan_dataset(dataset: Path, show: str | None = None) -> pl.LazyFrame:
    """The whole dataset as one lazy frame, parts in order; a missing dataset is a `DataError` naming it."""
    found = parts(dataset)
    if not found:
        where = show or str(dataset)
        raise DataError(f"{where}: no such dataset, or it has no parts (run the stage that writes it first)")
    return pl.scan_parquet(found)
