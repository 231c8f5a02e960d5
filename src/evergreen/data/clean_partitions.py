"""`clean` partition by partition: each raw part typed and repaired once, while its inputs are unchanged.

A clean part's fingerprint is its raw part's (which names its content and every earlier arrival) plus the
cleaning params and code: changing a rule rebuilds every partition, a new arrival cleans only itself.
`clean` computes no statistic from the data (an `impute_median` or `impute_mode` cell stays null and the model
fills it with the train split's statistic), so a part depends on its own rows only: an old part never changes
when a new one arrives.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from evergreen.config import CleanConfig, DataConfig
from evergreen.data import clean as clean_module
from evergreen.data import partitions as parts
from evergreen.data import schema
from evergreen.data.clean import clean


@dataclass(frozen=True)
class Layout:
    raw: str
    clean: str
    quarantine: str
    manifest: str


@dataclass(frozen=True)
class Task:
    name: str
    pid: str
    source: str  # the raw part
    data: DataConfig
    policy: CleanConfig
    layout: Layout


def clean_partition(task: Task) -> dict[str, Any]:
    """One raw part into its clean part and quarantine part (a Dask task); returns its summary."""
    result = clean(pl.read_parquet(task.source), task.data, task.policy)
    parts.write_part(result.clean, Path(task.layout.clean), task.name)
    quarantine = result.quarantine.with_columns(pl.lit(task.pid).alias(parts.PARTITION))
    parts.write_part(quarantine, Path(task.layout.quarantine), task.name)
    return result.summary()


def _add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    out = dict(total)
    for key, n in more.items():
        out[key] = out.get(key, 0) + n
    return out


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """`metrics/data.json`: the totals as before partitions, plus each partition's own summary."""
    reasons: Counter[str] = Counter()
    imputed: dict[str, int] = {}
    clipped: dict[str, int] = {}
    for e in entries:
        reasons.update(e["summary"]["quarantined_by_reason"])
        imputed = _add(imputed, e["summary"]["imputed"])
        clipped = _add(clipped, e["summary"]["clipped"])
    return {
        "rows_in": sum(e["summary"]["rows_in"] for e in entries),
        "rows_out": sum(e["summary"]["rows_out"] for e in entries),
        "rows_quarantined": sum(e["summary"]["rows_quarantined"] for e in entries),
        "quarantined_by_reason": dict(sorted(reasons.items())),
        "imputed": imputed,
        "clipped": clipped,
        "partitions": {e["partition"]: e["summary"] for e in entries},
    }


def clean_dataset(
    raw_entries: list[dict[str, Any]],
    data: DataConfig,
    policy: CleanConfig,
    layout: Layout,
    *,
    scheduler: str | None = None,
) -> tuple[list[dict[str, Any]], int, str]:
    """Bring the clean dataset and the quarantine up to date with the raw partitions (the raw manifest's
    entries, in order); returns the new manifest's entries, how many parts were made, and where."""
    for dataset in (layout.clean, layout.quarantine):
        parts.prepare_dataset(Path(dataset))
    inputs = (
        data.model_dump(mode="json", include={"columns", "timestamp"}),
        policy.model_dump(mode="json"),
        parts.code_version(clean_module, schema, parts, Path(__file__)),
    )
    done = parts.reusable(parts.read_manifest(Path(layout.manifest)), Path(layout.clean), Path(layout.quarantine))
    planned = []
    for raw in raw_entries:
        print_ = parts.fingerprint(raw["fingerprint"], *inputs)
        seq = int(raw["name"].split("-", 1)[0])
        planned.append((raw, print_, parts.part_name(seq, raw["partition"], print_)))
    todo = [
        Task(name, raw["partition"], str(parts.part_path(Path(layout.raw), raw["name"])), data, policy, layout)
        for raw, print_, name in planned
        if print_ not in done
    ]
    return parts.run_planned(clean_partition, todo, planned, done, key="summary", label="clean", scheduler=scheduler)


def commit(layout: Layout, entries: list[dict[str, Any]]) -> None:
    """Write the manifest (last), then remove parts no longer in it."""
    parts.write_manifest(entries, Path(layout.manifest))
    for dataset in (layout.clean, layout.quarantine):
        parts.collect_garbage(Path(dataset), [e["name"] for e in entries])
