"""Per-partition work on Dask (dask.distributed): local processes by default, or an existing cluster.

dask.distributed rather than Prefect's Dask task runner: `dvc repro` runs the data stages as plain commands,
outside any Prefect flow, so the engine has to be callable from a stage; a Prefect flow that runs the stages
gets the same behaviour through them.

Where the work runs:
- `synchronous`: every partition in this process, one after the other (debugging, tests, tiny data);
- `EVERGREEN_DASK_SCHEDULER` (an address such as `tcp://10.0.0.5:8786`), else `data.scheduler` in params:
  the partitions go to that cluster's workers, which must import this same `evergreen` and see the project's
  files at the same path (a shared file system). One small partition (input under the caller's `cluster_from`
  bytes) stays in this process, unless the caller needs warm workers (`needs_warm_workers`): one task gains
  nothing from a cluster's parallelism, and sending it costs this process Dask's client (about 0.4 s to
  import), more than an arrival's ingest or clean takes. Validation needs warm workers: a standing cluster's
  workers have imported Great Expectations for earlier partitions, where this process would import it (3-4 s);
- neither, and little work (one partition, or inputs smaller than `cluster_from` bytes): in this process,
  because starting a local cluster costs seconds (measured in bench/bench_data_pipeline.py: 10-20 s per stage on
  a 2-core machine, workers importing polars and Great Expectations) that small work never wins back;
- neither, and more: a `LocalCluster` of worker processes on this machine, closed when the work is done.
Nothing starts when there is nothing to do, so a no-op run pays nothing for the engine.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

SCHEDULER_ENV = "EVERGREEN_DASK_SCHEDULER"
SYNCHRONOUS = "synchronous"
MAX_LOCAL_WORKERS = 8

T = TypeVar("T")


@dataclass(frozen=True)
class Ran:
    """Where a batch of partition work ran, for the stage's one-line report."""

    where: str  # "this process", "local cluster" or the scheduler's address
    workers: dict[str, int]  # worker address (or "local") -> tasks it ran

    def describe(self) -> str:
        per_worker = ", ".join(f"{n} on {w}" for w, n in sorted(self.workers.items()))
        return f"{self.where} ({per_worker})" if per_worker else self.where


def scheduler_address(configured: str | None) -> str | None:
    """The scheduler to use: the environment variable wins over `data.scheduler`."""
    return os.environ.get(SCHEDULER_ENV) or configured or None


def runs_here(
    items: int,
    scheduler: str | None,
    sizes: Sequence[int] = (),
    cluster_from: int = 0,
    needs_warm_workers: bool = False,
) -> bool:
    """True when `run_partitions` would run this work in this process (see the module's docstring)."""
    address = scheduler_address(scheduler)
    small = bool(sizes) and sum(sizes) < cluster_from
    if address == SYNCHRONOUS:
        return True
    if address is None:
        return items <= 1 or small
    # one small task gains nothing from a named cluster, unless its workers hold what it would import here
    return items <= 1 and small and not needs_warm_workers


def _where_am_i() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):  # not on a Dask worker
        return "local"


def _traced(fn: Callable[[Any], T], item: Any) -> tuple[T, str]:
    return fn(item), _where_am_i()


def run_partitions(
    fn: Callable[[Any], T],
    items: Sequence[Any],
    *,
    scheduler: str | None = None,
    label: str = "partition",
    sizes: Sequence[int] = (),
    cluster_from: int = 0,
    needs_warm_workers: bool = False,
) -> tuple[list[T], Ran]:
    """`fn(item)` for each item, results in the order of `items`, and where they ran.

    `sizes` (bytes of each item's input) below `cluster_from` in all keep the work in this process when no
    scheduler is named, and one such item when one is. `needs_warm_workers`: `fn` imports a library that takes
    seconds to import, so even one small item goes to a named cluster.

    `fn` must be a module-level function (workers import it by name). An exception raised by `fn` is raised
    here; functions that want every failure reported return their errors instead of raising them.
    """
    if not items:
        return [], Ran("nothing to do", {})
    address = scheduler_address(scheduler)
    if runs_here(len(items), scheduler, sizes, cluster_from, needs_warm_workers):
        return [fn(item) for item in items], Ran("this process", {"local": len(items)})

    from distributed import Client, LocalCluster  # imported only when there is work for it

    if address is not None:
        with Client(address, timeout="30s") as client:
            return _map(client, fn, items, label, address)
    workers = max(1, min(len(items), os.cpu_count() or 1, MAX_LOCAL_WORKERS))
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,  # polars threads inside each task; one task per process
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        return _map(client, fn, items, label, f"a local cluster of {workers} processes")


def _map(client: Any, fn: Callable[[Any], T], items: Sequence[Any], label: str, where: str) -> tuple[list[T], Ran]:
    run_id = uuid.uuid4().hex[:8]
    keys = [f"evergreen-{label}-{run_id}-{i}" for i in range(len(items))]
    futures = client.map(_traced, [fn] * len(items), items, key=keys, pure=False)
    traced = client.gather(futures)
    counts: dict[str, int] = {}
    for _, worker in traced:
        counts[worker] = counts.get(worker, 0) + 1
    return [result for result, _ in traced], Ran(where, counts)
