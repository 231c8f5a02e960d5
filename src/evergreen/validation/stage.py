"""The shared body of the `validate_raw` and `validate_clean` stages: validate each partition once, report all.

A dataset is a folder of parts (one per arrival) or a single Parquet file. Each part is validated on its own,
in batches of at most `validation.batch_rows` rows (so memory is bounded by the batch), in parallel on the Dask
executor, with its own Data Docs in `docs/<stage>/<part>/`; its result is kept in
`docs/<stage>/partitions.json` under a fingerprint of the part's bytes, the suite and the code, so a part is
validated when it arrives and never again while those are unchanged. The report adds the partitions' results
up and names the partition each failure came from. Table-level expectations (the row count, the column set)
hold for each partition.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from evergreen.data import partitions as parts
from evergreen.data.io import write_json
from evergreen.errors import DataError, ValidationFailed
from evergreen.validation import suites as suites_module
from evergreen.validation import summary as summary_module
from evergreen.validation.suites import Stage, load_suite
from evergreen.validation.summary import (
    ExpectationOutcome,
    ValidationSummary,
    critical_failures,
    failure_message,
    merge_partitions,
    report_dict,
    summary_line,
    warning_lines,
)
from evergreen.workspace import Workspace


@dataclass(frozen=True)
class Task:
    name: str
    path: str
    rows: int
    batch_rows: int
    suite: dict[str, Any]
    example_values: int
    docs_dir: str
    personal: tuple[str, ...] = ()  # columns declared pii: their failing values are never shown


def _batches(task: Task) -> Iterator[pl.DataFrame]:
    part = pl.scan_parquet(task.path)
    for start in range(0, max(task.rows, 1), task.batch_rows):
        yield part.slice(start, task.batch_rows).collect()


def validate_partition(task: Task) -> dict[str, Any]:
    """Validate one part, batch by batch, and build its Data Docs (a Dask task); returns the summary as
    JSON-able data."""
    # imported here so `evergreen --help` and the other stages do not pay GX's import time
    from evergreen.validation.gx_adapter import validate_batches

    docs_dir = Path(task.docs_dir)
    shutil.rmtree(docs_dir, ignore_errors=True)  # this part's docs show this validation only
    batches = validate_batches(
        _batches(task), task.suite, example_values=task.example_values, docs_dir=docs_dir, personal=task.personal
    )
    merged = merge_partitions([(task.name, batch) for batch in batches], task.example_values)
    summary = replace(merged, docs_index=batches[0].docs_index)
    # through JSON here, so a result computed now and one read back from the cache are the same values
    return json.loads(json.dumps({**asdict(summary), "result": {}}, default=str))


def _summary(data: dict[str, Any]) -> ValidationSummary:
    outcomes = [ExpectationOutcome(**o) for o in data["outcomes"]]
    return ValidationSummary(**{**data, "outcomes": outcomes})


def _rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def _write_index(docs_root: Path, entries: list[dict[str, Any]], stage: str) -> Path:
    """A small page linking each partition's Data Docs, with its rows and whether its critical checks passed."""
    rows = "\n".join(
        f'<tr><td><a href="{html.escape(e["name"])}/index.html">{html.escape(e["name"])}</a></td>'
        f"<td>{e['rows']}</td><td>{'passed' if e['critical_success'] else 'FAILED'}</td></tr>"
        for e in entries
    )
    index = docs_root / "index.html"
    docs_root.mkdir(parents=True, exist_ok=True)
    index.write_text(
        f"<!doctype html><title>Evergreen: {stage} data, by partition</title><h1>{stage}: {len(entries)} "
        f"partition(s)</h1><table><tr><th>partition</th><th>rows</th><th>critical expectations</th></tr>"
        f"\n{rows}\n</table>\n"
    )
    return index


def run_validation(ws: Workspace, stage: Stage, data_path: Path) -> None:
    """Validate `data_path` with the `stage` suite; write the JSON report and Data Docs, then raise
    `ValidationFailed` if a critical expectation failed (the report is written either way)."""
    from evergreen.parallel import run_partitions  # Dask is imported only when there is work

    stage_name = f"validate_{stage}"
    cfg = ws.params.validation
    suite = load_suite(ws.suite(stage))
    files = parts.parts(data_path)
    if not files:
        raise DataError(f"{ws.show(data_path)}: no such file (run the stage that writes it first)")
    docs_root = ws.data_docs(stage)
    cache_path = ws.validation_parts(stage)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    # the adapter hashed by its path: importing it would cost GX's import time when nothing is to be done
    adapter = Path(summary_module.__file__ or "").with_name("gx_adapter.py")
    code = parts.code_version(suites_module, summary_module, parts, adapter, Path(__file__))
    personal = tuple(sorted(c.name for c in ws.params.data.columns if c.pii is not None))
    # declaring a column personal redoes the reports that may show its values
    inputs = parts.fingerprint(suite, cfg.example_values, cfg.batch_rows, code, *([personal] if personal else []))
    rows = {f.stem: _rows(f) for f in files}
    # an empty part has nothing to check, unless every part is empty: then the row count must fail
    checked = [f for f in files if rows[f.stem]] or files[:1]
    digests = parts.cached_content_hashes([str(f) for f in checked], ws.digest_cache(stage_name))
    prints = {f.stem: parts.fingerprint(inputs, f.stem, digests[str(f)]) for f in checked}
    todo = [
        Task(f.stem, str(f), rows[f.stem], cfg.batch_rows, suite, cfg.example_values, str(docs_root / f.stem), personal)
        for f in checked
        if prints[f.stem] not in cache or not (docs_root / f.stem / "index.html").is_file()
    ]
    results, ran = run_partitions(
        validate_partition,
        todo,
        scheduler=ws.params.data.scheduler,
        label=stage_name,
        sizes=[Path(t.path).stat().st_size for t in todo],
        cluster_from=parts.CLUSTER_FROM_PARQUET,
        needs_warm_workers=True,  # GX: 3-4 s to import here; a standing cluster's workers have it already
    )
    fresh = {t.name: r for t, r in zip(todo, results, strict=True)}
    kept = {prints[f.stem]: fresh.get(f.stem) or cache[prints[f.stem]] for f in checked}
    for stale in docs_root.iterdir() if docs_root.is_dir() else []:
        if stale.is_dir() and stale.name not in prints:
            shutil.rmtree(stale)
    write_json(kept, cache_path)
    named = [(f.stem, _summary(kept[prints[f.stem]])) for f in checked]
    summary = merge_partitions(named, cfg.example_values)
    entries = [{"name": name, "rows": s.row_count, "critical_success": not critical_failures(s)} for name, s in named]
    report = report_dict(summary)
    # recorded relative to the project, so a fresh clone writes the same report
    report["docs"] = ws.show(_write_index(docs_root, entries, stage))
    report["partitions"] = [{**e, "docs": ws.show(docs_root / e["name"] / "index.html")} for e in entries] + [
        {"name": f.stem, "rows": 0, "critical_success": True, "docs": None} for f in files if f not in checked
    ]
    write_json(report, ws.validation_report(stage))
    print(
        summary_line(summary, stage_name)
        + f" in {len(files)} partition(s), {len(todo)} validated now ({ran.describe()})"
    )
    for line in warning_lines(summary, stage_name):
        print(line)
    if critical_failures(summary):
        raise ValidationFailed(failure_message(summary, stage_name))
