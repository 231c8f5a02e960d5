"""How many threads torch may use: the process's CPU allowance, less what other processes keep busy.

torch sizes its pools from the host's core count; inside a container (a CPU quota) or beside other busy
processes that oversubscribes the cores, and its spinning threads then wait on each other: on two shared
cores the default ran 9-11x slower than one thread. The allowance is the smaller of the CPUs this process
may run on (its affinity) and its cgroup quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import statistics
import time
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


def cpu_allowance(affinity: int, quota: int | None, period: int | None) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup quota of `quota`/`period` CPUs (rounded up).

    A missing or unlimited quota (None, or negative as cgroup v1 writes it) leaves the affinity; never below 1.
    """
    cpus = max(1, affinity)
    if quota is not None and period is not None and quota > 0 and period > 0:
        cpus = min(cpus, math.ceil(quota / period))
    return max(1, cpus)


def _read_quota(root: Path = _CGROUP) -> tuple[int | None, int | None]:
    """(quota, period) in microseconds from cgroup v2, else v1; (None, None) when there is no limit."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return (None if quota == "max" else int(quota)), int(period)
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        with contextlib.suppress(OSError, ValueError):
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
            return (quota if quota > 0 else None), period
    return None, None


def available_cpus() -> int:
    """This process's CPU allowance (affinity and cgroup quota), not the host's core count."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: no affinity API, the core count is the best there is
        affinity = os.cpu_count() or 1
    return cpu_allowance(affinity, *_read_quota())


def openmp_threads() -> int:
    """Threads for an OpenMP library told its count in code (LightGBM's `num_threads` overrides the environment):
    the CPU allowance, capped by `OMP_NUM_THREADS` when the user (or a test runner sharing out cores) set it."""
    # OpenMP reads a list ("4,2": nested levels) and takes its first entry for the outer level
    cap = re.fullmatch(r"\s*([0-9]+)\s*(?:,.*)?", os.environ.get("OMP_NUM_THREADS", ""), re.DOTALL)
    return min(available_cpus(), int(cap[1])) if cap and int(cap[1]) > 0 else available_cpus()


def busy_cpus(samples: int = 5, interval_s: float = 0.05) -> float:
    """CPUs other processes keep busy now: the runnable tasks of /proc/loadavg less this reader, median of a few.

    Not the 1-minute load average: it still counts the stage that ran just before, on a machine now quiet.
    """
    counts = []
    for i in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):  # no /proc (not Linux): the load average instead
            return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        counts.append(running - 1)  # the reading process is itself runnable
        if i + 1 < samples:
            time.sleep(interval_s)
    return float(statistics.median(counts))


def choose_threads(allowance: int, busy: float, processes: int = 1) -> int:
    """Threads for one of `processes` training processes: the allowance shared out, less `busy` CPUs.

    `busy` is the CPUs other processes keep busy (`busy_cpus`): threads beyond the free cores only queue
    behind them, and torch's threads spin waiting for each other.
    """
    share = max(1, allowance // max(1, processes))
    free = allowance - max(0.0, busy)
    return max(1, min(share, math.floor(free / max(1, processes) + 0.5)))


def configure_threads(setting: int | str, processes: int = 1) -> int:
    """Set torch's intra- and inter-op threads once, at a stage's entry: `auto` or a number. Returns it."""
    import torch  # here: LightGBM reads `available_cpus` too, in stages that never load torch

    threads = choose_threads(available_cpus(), busy_cpus(), processes) if setting == "auto" else int(setting)
    torch.set_num_threads(threads)
    # inter-op threads can be set only before the first parallel work in the process: a later call raises
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
    return threads
