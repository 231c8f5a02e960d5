"""Stage `ingest`: source files plus the landing folder, as text, into the partitioned `data/raw/`.

Each file is a partition (see `data.ingest_partitions`); only new or changed ones are read. Key conflicts
above `ingest.max_key_conflicts` fail the stage and remove what this run made, so the raw data stays as it
was. A file that cannot be read fails the stage by name, after every other arrival has been kept.
"""

from __future__ import annotations

from pathlib import Path

from evergreen.data import ingest_partitions as ingest
from evergreen.data import io
from evergreen.errors import DataError
from evergreen.workspace import Workspace


def _layout(ws: Workspace) -> ingest.Layout:
    return ingest.Layout(str(ws.raw), str(ws.raw_conflicts), str(ws.raw_keys), str(ws.raw_manifest))


def _as_listed(ws: Workspace, file: str) -> str:
    # relative to the project wherever it is: lineage, and so the raw bytes, are the same in every clone
    return file if "://" in file else ws.show(Path(file).absolute())


def run(ws: Workspace) -> None:
    data = ws.params.data
    files = [_as_listed(ws, f) for f in io.resolve_source(ws.source) + io.list_landing(ws.incoming)]
    layout = _layout(ws)
    outcome = ingest.ingest(files, data, layout, root=ws.root, scheduler=data.scheduler)
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
