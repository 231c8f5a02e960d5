"""Benchmark the `split` stage at scale (issue 22): the whole-history split against the partitioned one.

    python bench/bench_split.py --rows 10000000 --parts 100 --arrival 100000
    python bench/bench_split.py --rows 30000000 --parts 300 --skip-whole    # the whole split needs ~12 GB here
    python bench/bench_split.py --rows 10000000 --skip-whole --before /tmp/before/src   # an earlier code too

What it does, in one run:
1. Writes a clean history as the `clean` stage leaves it: `--parts` Parquet parts in time order (one row a
   minute), and their manifest. Columns: an integer id, the event time, five floats, a 12-level string
   category and a float target. The split stage reads nothing else, so the data stages are left out.
2. Runs `evergreen.stages.split.run` (what `dvc repro split` runs), each time in a fresh Python process, so its
   peak RSS (VmHWM) is its own: interpreter, imports, and the work. The time split uses the default fractions
   (80/10/10), the case where the cuts move as rows arrive. Partitions run in that process
   (`EVERGREEN_DASK_SCHEDULER=synchronous`).
   - today's whole-history split of the full history (`split.partitioned_from_rows` above the rows);
   - the partitioned split of the same history from nothing, then again with nothing changed;
   - an arrival of `--arrival` rows (one more part, later in time): partitioned, then whole (what an arrival
     costs today);
   - with `--random`, the partitioned random split (a hash of each id) from nothing.
3. Checks that the whole and the partitioned split put the same ids in each part, after the arrival.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
START = dt.datetime(1990, 1, 1)
FEATURES = [f"x{i}" for i in range(1, 6)]

_CHILD = """
import json, resource, sys, time
started = time.perf_counter()
from evergreen.stages import split
from evergreen.workspace import Workspace
ws = Workspace.open(sys.argv[1])
begin = time.perf_counter()
split.run(ws)
done = time.perf_counter()
print(json.dumps({"run_s": done - begin, "process_s": done - started,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def params_for(method: str, partitioned_from_rows: int) -> dict[str, Any]:
    columns = [
        {"name": "id", "type": "int", "role": "id"},
        {"name": "ts", "type": "datetime", "role": "timestamp"},
        *({"name": f, "type": "float", "role": "feature"} for f in FEATURES),
        {"name": "cat", "type": "str", "role": "feature", "kind": "categorical"},
        {"name": "y", "type": "float", "role": "target"},
    ]
    return {
        "data": {"source": "in/*.csv", "task": "regression", "timestamp": {"column": "ts"}, "columns": columns},
        "split": {"method": method, "partitioned_from_rows": partitioned_from_rows},
    }


def _part(first: int, n: int, seed: int) -> pl.DataFrame:
    """Rows from `first` on, one a minute; the target depends on the features (with an interaction, and a
    category's effect), so that a model trained on them has something to learn."""
    rng = np.random.default_rng(seed)
    ids = np.arange(first, first + n)
    x = {f: rng.normal(size=n) for f in FEATURES}
    level = rng.integers(0, 12, n)
    y = x["x1"] + 0.5 * x["x2"] - x["x3"] * x["x4"] + 0.3 * np.sin(3 * x["x5"]) + 0.2 * level + rng.normal(0, 0.5, n)
    frame = pl.DataFrame(x)
    times = pl.datetime_range(
        START + dt.timedelta(minutes=int(first)), START + dt.timedelta(minutes=int(first + n - 1)), "1m", eager=True
    )
    return frame.with_columns(
        id=pl.Series(ids),
        _event_time=times,
        ts=times,
        cat=pl.Series(np.array([f"c{i}" for i in range(12)])[level]),
        y=pl.Series(y),
    )


def write_history(project: Path, rows: int, parts: int, arrival: int) -> list[dict[str, Any]]:
    """The clean parts (and one more for the arrival, kept aside); returns the manifest entries."""
    from evergreen.data import partitions

    clean = project / "data/clean/clean.parquet"
    entries = []
    size = rows // parts
    for seq in range(parts + 1):
        n = arrival if seq == parts else size
        pid = f"arrival{seq:04d}"
        name = partitions.part_name(seq, pid, partitions.fingerprint(pid))
        partitions.write_part(_part(1 + seq * size, n, seed=seq), clean, name)
        entries.append(
            {
                "name": name,
                "partition": pid,
                "file": f"{pid}.csv",
                "fingerprint": partitions.fingerprint(pid),
                "summary": {"rows_out": n},
            }  # fmt: skip
        )
    return entries


def land(project: Path, entries: list[dict[str, Any]]) -> None:
    from evergreen.data import partitions

    names = {e["name"] for e in entries}
    aside = project / "aside"
    aside.mkdir(exist_ok=True)
    for path in partitions.parts(project / "data/clean/clean.parquet"):  # the arrival's part waits outside
        if path.stem not in names:
            path.rename(aside / path.name)
    for path in aside.glob("*.parquet"):
        if path.stem in names:
            path.rename(project / "data/clean/clean.parquet" / path.name)
    partitions.write_manifest(entries, project / "data/clean/manifest.json")


def run_split(project: Path, method: str, partitioned_from_rows: int, src: Path = ROOT / "src") -> dict[str, Any]:
    (project / "params.yaml").write_text(yaml.safe_dump(params_for(method, partitioned_from_rows)))
    env = {**os.environ, "EVERGREEN_DASK_SCHEDULER": "synchronous", "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(project)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"split failed:\n{done.stdout}\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    out["said"] = [line for line in lines[:-1] if line.startswith("split:")]
    print(f"  {out['run_s']:.2f} s, peak {out['peak_rss_mib']:.0f} MiB: {out['said'][0] if out['said'] else ''}")
    return out


def _ids(project: Path) -> dict[str, int]:
    """A checksum of each part's ids (their count and sum)."""
    out = {}
    for name in ("train", "valid", "test"):
        ids = pl.scan_parquet(project / f"data/split/{name}.parquet").select("id").collect(engine="streaming")["id"]
        out[name] = [ids.len(), int(ids.sum())]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--parts", type=int, default=100)
    parser.add_argument("--arrival", type=int, default=100_000)
    parser.add_argument("--skip-whole", action="store_true", help="skip today's whole-history split")
    parser.add_argument("--random", action="store_true", help="also the partitioned random split")
    parser.add_argument("--before", type=Path, help="an earlier code's src folder: its full build, side by side")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/split.json")
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))

    with tempfile.TemporaryDirectory(prefix="evergreen-split-") as tmp:
        project = Path(tmp)
        began = time.perf_counter()
        entries = write_history(project, opts.rows, opts.parts, opts.arrival)
        print(f"history: {opts.rows} rows in {opts.parts} parts, written in {time.perf_counter() - began:.0f} s")
        history, with_arrival = entries[:-1], entries
        huge = 10**12
        results: dict[str, Any] = {}

        def step(label: str, method: str, threshold: int, fresh: bool = False, src: Path = ROOT / "src") -> None:
            if fresh:
                shutil.rmtree(project / "data/split", ignore_errors=True)
            print(label)
            results[label] = run_split(project, method, threshold, src)

        land(project, history)
        if not opts.skip_whole:
            step("whole: full build", "time", huge, fresh=True)
        if opts.before:  # the codes take turns around the full build, so that a noisy machine hurts both
            step("partitioned: full build, before", "time", 1, fresh=True, src=opts.before)
        step("partitioned: full build", "time", 1, fresh=True)
        step("partitioned: nothing changed", "time", 1)
        land(project, with_arrival)
        step("partitioned: arrival", "time", 1)
        partitioned_ids = _ids(project)
        if not opts.skip_whole:
            step("whole: after the arrival", "time", huge)
            results["same ids in each part"] = _ids(project) == partitioned_ids
        if opts.random:
            step("partitioned random: full build", "random", 1, fresh=True)

    summary = {
        "rows": opts.rows,
        "parts": opts.parts,
        "arrival_rows": opts.arrival,
        "results": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "polars": pl.__version__,
    }
    arrival = results["partitioned: arrival"]["run_s"]
    full = results["partitioned: full build"]["run_s"]
    summary["arrival_over_partitioned_full"] = round(arrival / full, 3)
    if not opts.skip_whole:
        summary["arrival_over_whole_arrival"] = round(arrival / results["whole: after the arrival"]["run_s"], 3)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"arrival: {arrival:.2f} s = {summary['arrival_over_partitioned_full']:.1%} of the partitioned full build")
    print(f"results: {opts.out}")


if __name__ == "__main__":
    main()
