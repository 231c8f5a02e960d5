"""Stage `ingest`: source files plus the landing folder, as text, into the partitioned `data/raw/`.

Each file is a partition (see `data.ingest_partitions`); only new or changed ones are read. Key conflicts
above `ingest.max_key_conflicts` fail the stage and remove what this run made, so the raw data stays as it
was. A file that cannot be read fails the stage by name, after every other arrival has been kept. A full disk
(or quota) fails it in one line naming the file being written and the space free, after removing this run's
unfinished parts and staging files: the raw data stays as the last successful run left it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from evergreen.data import ingest_partitions as ingest
from evergreen.data import io
from evergreen.data import partitions as parts
from evergreen.errors import DataError, EvergreenError
from evergreen.workspace import Workspace


def _layout(ws: Workspace) -> ingest.Layout:
    return ingest.Layout(str(ws.raw), str(ws.raw_conflicts), str(ws.raw_keys), str(ws.raw_manifest))


def _as_listed(ws: Workspace, file: str) -> str:
    # relative to the project wherever it is: lineage, and so the raw bytes, are the same in every clone
    return file if "://" in file else ws.show(Path(file).absolute())


def _free_space(path: Path) -> str:
    while not path.exists() and path != path.parent:  # the file itself may be gone already
        path = path.parent
    free = shutil.disk_usage(path).free
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    raise AssertionError  # the loop always returns


def _remove_unfinished(layout: ingest.Layout) -> None:
    """Put the raw datasets back as the manifest on disk says (written last, it is the last good state): the
    parts this run made and its staging files go."""
    keep = [e["name"] for e in parts.read_manifest(Path(layout.manifest))["partitions"]]
    for dataset in map(Path, (layout.raw, layout.conflicts, layout.keys)):
        parts.collect_garbage(dataset, keep)
        parts.remove_if_empty(dataset)


def run(ws: Workspace) -> None:
    """Run the stage; a full disk is one line (what was being written, the space free), not a traceback."""
    try:
        _run(ws)
    except Exception as exc:
        full = io.disk_full(exc, ws.raw)
        if full is None:
            raise
        _remove_unfinished(_layout(ws))
        written = Path(full.filename)
        raise EvergreenError(
            f"ingest: {full.strerror.lower()} while writing {ws.show(written.absolute())}: {_free_space(written)}"
            " free there after removing this run's unfinished parts; free some space and run again"
        ) from None


def _run(ws: Workspace) -> None:
    data = ws.params.data
    files = [_as_listed(ws, f) for f in io.resolve_source(ws.source) + io.list_landing(ws.incoming)]
    layout = _layout(ws)
    outcome = ingest.ingest(
        files, data, layout, root=ws.root, scheduler=data.scheduler, digest_cache=ws.digest_cache("ingest")
    )
    share = ws.params.ingest.max_key_conflicts
    if outcome.conflicts and outcome.conflicts > share * outcome.rows_read:
        examples = ingest.conflict_examples(layout, outcome.entries, data.key)
        ingest.abandon(layout, outcome.computed)
        shown = "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in examples)
        key = ", ".join(data.key)
        raise DataError(
            f"ingest: {outcome.conflicts} of {outcome.rows_read} rows ({outcome.conflicts / outcome.rows_read:.1%})"
            f" repeat the key {key} of an earlier row with different values, above ingest.max_key_conflicts"
            f" ({share:.1%}); is {key} really an id? Examples: {shown}"
        )
    ingest.commit(layout, outcome)
    summary = outcome.summary()
    io.write_json(summary, ws.ingest_metrics)
    for duplicate in outcome.duplicates:
        print(f"ingest: {duplicate.path} has the same bytes as {duplicate.duplicate_of}: not added again")
    print(
        f"ingest: {summary['files']} file(s) in {len(outcome.entries)} partition(s), {len(outcome.computed)} new"
        f" or changed ({outcome.where}); {summary['rows_out']} rows in {ws.show(ws.raw)}"
        f" ({summary['repeated_rows_dropped']} repeated, {summary['key_conflicts']} key conflicts set aside)"
    )
    if outcome.refused:
        refused = "\n".join(f"ingest: refused {error}" for error in outcome.refused.values())
        raise DataError(f"{refused}\ningest: the other {len(outcome.entries)} partition(s) were kept")
